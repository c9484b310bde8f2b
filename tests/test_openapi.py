"""The OpenAPI document integrators read matches the routes the server actually has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from exchange.schemas import SCHEMAS_DIR
from exchange.web.app import build_app
from tests.conftest import make_config

OPENAPI = json.loads((SCHEMAS_DIR / "openapi.v1.json").read_text())


def _served(tmp_path: Path) -> set[tuple[str, str]]:
    """Every route of the application as built (resources are opened only when it starts)."""
    app = build_app(make_config(tmp_path), console=False)
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD beside each GET
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        # aiohttp writes a path regex as {name:regex}; OpenAPI writes {name}.
        served.add((route.method.lower(), re.sub(r"\{(\w+):[^/]*\}", r"{\1}", path)))
    return served


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    """A route added without documentation (or documentation for a removed route) fails here."""
    documented = {(method, path) for path, item in OPENAPI["paths"].items() for method in item}
    assert documented == _served(tmp_path)


def test_request_bodies_point_at_real_schemas() -> None:
    """Each documented request body names a JSON Schema file that exists in schemas/."""
    for item in OPENAPI["paths"].values():
        for operation in item.values():
            body = operation.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                assert (SCHEMAS_DIR / ref).is_file(), ref
