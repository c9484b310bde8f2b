"""Every query parameter is checked against ``schemas/openapi.v1.json`` before a handler sees it.

The document is the contract integrators read, so the server accepts exactly what it says: a
parameter it does not list for the route is refused (a misspelt filter must not silently return
everything), one given twice is refused (which one would count?), and each value must match its
documented schema (integers written plainly, ids and codes of their patterns, times RFC 3339).
Control characters are refused everywhere. Refusals are 400 problem documents that name the
parameter and the form it must take, never the value sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from jsonschema.protocols import Validator

from exchange import schemas
from exchange.errors import InvalidQuery
from exchange.web.auth import PUBLIC_PATHS

# A name is repeated in a message only when it looks like one of our own parameter names.
_SAFE_NAME = re.compile(r"[a-z][a-z_]{0,30}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True)
class _Parameter:
    name: str
    integer: bool
    #: A list (``style: form, explode: true``): given once or more, each value possibly comma-separated.
    array: bool
    required: bool
    validator: Validator


def _operations() -> dict[tuple[str, str], dict[str, _Parameter]]:
    """``(method, path template) -> {name: parameter}`` for every documented operation's query parameters."""
    document = json.loads((schemas.SCHEMAS_DIR / "openapi.v1.json").read_text(encoding="utf-8"))
    found: dict[tuple[str, str], dict[str, _Parameter]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, Mapping) or "responses" not in operation:
                continue  # path-level "parameters", "summary", ...
            params = [*item.get("parameters", []), *operation.get("parameters", [])]
            found[(method.upper(), path)] = {
                p["name"]: _Parameter(
                    p["name"],
                    p.get("schema", {}).get("type") == "integer",
                    p.get("schema", {}).get("type") == "array",
                    bool(p.get("required")),
                    schemas.fragment_validator(p.get("schema", {}), where=f"{method.upper()} {path} ?{p['name']}"),
                )
                for p in params
                if p.get("in") == "query"
            }
    return found


@cache
def documented() -> dict[tuple[str, str], dict[str, _Parameter]]:
    """The query parameters the OpenAPI document gives each operation (read once)."""
    return _operations()


def check_query(method: str, path_template: str, query: Sequence[tuple[str, str]]) -> None:
    """Raise :class:`InvalidQuery` unless the query is exactly what the document allows for this operation.

    ``query`` is every ``(name, value)`` pair as sent, repeats included. An operation the document does
    not list takes no parameters (fail closed).
    """
    allowed = documented().get(("GET" if method == "HEAD" else method, path_template), {})
    given: dict[str, list[str]] = {}
    for name, raw in query:
        parameter = allowed.get(name)
        if parameter is None:
            shown = f" {name!r}" if _SAFE_NAME.fullmatch(name) else ""
            takes = ", ".join(sorted(allowed)) or "none"
            raise InvalidQuery(f"This address takes no query parameter{shown} (it takes: {takes}).")
        if name in given and not parameter.array:
            raise _invalid(name, "is given more than once")
        if not raw.isprintable():
            raise _invalid(name, "must not contain control characters")
        given.setdefault(name, []).append(raw)
    for parameter in allowed.values():
        if parameter.name not in given:
            if parameter.required:
                raise _invalid(parameter.name, "is required here")
            continue
        values = given[parameter.name]
        if parameter.array:  # an empty item (member=, or a,,b) is refused too: it names nothing
            _check(parameter, [part for value in values for part in value.split(",")])
        else:
            _check(parameter, values[0])


def _check(parameter: _Parameter, raw: str | list[str]) -> None:
    value: Any = raw
    if parameter.integer:
        assert isinstance(raw, str)
        if not _INTEGER.fullmatch(raw):
            raise _invalid(parameter.name, "must be a whole number written in digits")
        value = int(raw)
    errors = schemas.schema_errors(value, parameter.validator)
    if errors:
        raise _invalid(parameter.name, errors[0]["message"])


def _invalid(name: str, message: str) -> InvalidQuery:
    return InvalidQuery(f"The query parameter {name!r} {message}.", extras={"parameter": name})


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the query against the route's documented parameters (after authentication, before the handler)."""
    resource = request.match_info.route.resource
    # None: no route matched, and the handler answers 404 or 405. /health reads no parameter, and a monitor
    # that adds one (a cache-buster) must still see the service's health rather than a 400.
    if resource is not None and request.path not in PUBLIC_PATHS:
        check_query(request.method, resource.canonical, list(request.query.items()))
    return await handler(request)
