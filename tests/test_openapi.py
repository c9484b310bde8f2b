"""The OpenAPI document integrators read matches the routes the server actually has."""

from __future__ import annotations

import json
import re

from aiohttp import web

from exchange.schemas import SCHEMAS_DIR
from exchange.web import approval_handlers, handlers, ledger_handlers

OPENAPI = json.loads((SCHEMAS_DIR / "openapi.v1.json").read_text())


def _served() -> set[tuple[str, str]]:
    routes: list[web.RouteDef] = [*handlers.routes(), *approval_handlers.routes(), *ledger_handlers.routes()]
    # aiohttp writes a path regex as {name:regex}; OpenAPI writes {name}.
    return {(r.method.lower(), re.sub(r"\{(\w+):[^/]*\}", r"{\1}", r.path)) for r in routes}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    """A route added without documentation (or documentation for a removed route) fails here."""
    documented = {(method, path) for path, item in OPENAPI["paths"].items() for method in item}
    assert documented == _served()


def test_request_bodies_point_at_real_schemas() -> None:
    """Each documented request body names a JSON Schema file that exists in schemas/."""
    for item in OPENAPI["paths"].values():
        for operation in item.values():
            body = operation.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                assert (SCHEMAS_DIR / ref).is_file(), ref
