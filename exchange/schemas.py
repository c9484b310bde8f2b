"""JSON Schemas in ``schemas/`` (versioned file names), loaded once and applied to every input."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from exchange.errors import SchemaViolation

#: The repository's ``schemas/`` folder (the package is installed editable beside it).
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"


@cache
def _registry() -> Registry:
    """Every schema in ``schemas/`` by its ``$id``, so schemas can ``$ref`` each other by file name."""
    resources = []
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "$id" in document:
            resources.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator for ``schemas/<name>.json``; the schema itself is checked first."""
    schema = json.loads((SCHEMAS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(
        schema, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def schema_errors(document: Any, name: str) -> list[dict[str, str]]:
    """Every way ``document`` breaks schema ``name``, as ``{"path", "message"}``, sorted by path."""
    errors = []
    for error in validator(name).iter_errors(document):
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        errors.append({"path": path, "message": _plain(error.message)})
    return sorted(errors, key=lambda e: (e["path"], e["message"]))


def check(document: Any, name: str, *, what: str) -> None:
    """Raise :class:`SchemaViolation` listing every error if ``document`` breaks schema ``name``."""
    errors = schema_errors(document, name)
    if errors:
        first = errors[0]
        raise SchemaViolation(
            f"The {what} does not match schema {name}: {first['message']} at {first['path']}"
            + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""),
            extras={"errors": errors},
        )


def _plain(message: str) -> str:
    # jsonschema quotes whole documents in some messages; keep what a person needs and no values.
    return message if len(message) <= 200 else message[:197] + "..."


def as_object(document: Any, *, what: str) -> Mapping[str, Any]:
    if not isinstance(document, Mapping):
        raise SchemaViolation(f"The {what} must be a JSON object.")
    return document
