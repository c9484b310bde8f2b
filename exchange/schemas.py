"""JSON Schemas in ``schemas/`` (versioned file names), loaded once and applied to every input.

jsonschema's own messages quote the offending value (``'Jane Smith' does not match ...``); a value
in the wrong place may be exactly the personal data a manifest must not hold, and rejections are
recorded, so every message here is built from the schema alone.

Checking is two-stage, for speed with the same verdicts: a document is first checked by a compiled
validator (``jsonschema-rs``, Rust, about a hundred times faster here: ~10 µs against ~1.1 ms for a
manifest), built once from the very same schema, registry and format rules; only a document it
finds invalid goes through ``jsonschema`` itself, whose errors this module turns into value-free
sentences. The two agree on every document the property tests generate, except where ``jsonschema``
is laxer than the standard (a pattern's ``$`` before a final newline): there the compiled verdict
stands. That the compiled check never accepts what ``jsonschema`` refuses is a property test too.

``format`` is checked, not merely annotated: jsonschema checks a format only when the package that
implements it is installed (``date-time`` needs ``rfc3339-validator``) and silently passes it otherwise.
So every format a schema names must be one this checker can check, or loading the schema fails
(:func:`preload`, run when the server starts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from exchange.errors import SchemaViolation

#: The repository's ``schemas/`` folder (the package is installed editable beside it).
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"

#: The base of every schema's ``$id``: a ``$ref`` such as ``manifest.v1.json#/$defs/member_id`` resolves from it.
BASE_URI = "https://safeguarding-exchange.example/schemas/"

_FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER


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
    """The validator for ``schemas/<name>.json``; the schema itself is checked first, formats included."""
    schema = json.loads((SCHEMAS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return _checked_validator(schema, f"schemas/{name}.json")


def fragment_validator(schema: Mapping[str, Any], *, where: str) -> Draft202012Validator:
    """A validator for a schema that is part of another document (an OpenAPI parameter's).

    Its ``$ref``s resolve beside the files in ``schemas/`` (``manifest.v1.json#/$defs/member_id``).
    """
    return _checked_validator({"$id": BASE_URI + "fragment", "allOf": [dict(schema)]}, where)


def _checked_validator(schema: Mapping[str, Any], where: str) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    unchecked = sorted(set(formats_named(schema)) - set(_FORMAT_CHECKER.checkers))
    if unchecked:
        # Fail closed: an unchecked format would pass anything (a not_after of "garbage" reached the code
        # that parses it, and became a 500). date-time needs the rfc3339-validator package.
        raise RuntimeError(f"{where} names formats this installation cannot check: {', '.join(unchecked)}.")
    return Draft202012Validator(schema, registry=_registry(), format_checker=_FORMAT_CHECKER)


def formats_named(schema: Any) -> Iterator[str]:
    """Every ``format`` a schema (or schema fragment) names, wherever it is nested."""
    if isinstance(schema, Mapping):
        for keyword, value in schema.items():
            if keyword == "format" and isinstance(value, str):
                yield value
            elif keyword in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, Mapping):
                for sub in value.values():  # the keys here are names, not keywords
                    yield from formats_named(sub)
            else:
                yield from formats_named(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from formats_named(item)


def preload() -> None:
    """Build every schema's validator now, so a schema that cannot be enforced stops the server from starting."""
    for path in sorted(SCHEMAS_DIR.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "$schema" in document:  # the catalogue's data files are not schemas
            validator(path.name.removesuffix(".json"))


# A property name is repeated in a message only when it looks like one of our own codes.
_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

_TYPE_WORDS = {
    "object": "a JSON object",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def json_pointer(parts: Any) -> str:
    """RFC 6901 JSON Pointer for a jsonschema path (``/fields/2/label``; ``""`` is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


#: The compiled twin of each validator, by identity (validators are built once and kept for good).
_COMPILED: dict[int, tuple[Validator, Any]] = {}
_COMPILED_LIMIT = 256


def compiled(validator: Validator) -> Any:
    """The ``jsonschema-rs`` validator for the same schema: ``$ref``s resolve through the same registry and
    formats are checked (an unknown one is an error, as :func:`_checked_validator` makes it)."""
    held = _COMPILED.get(id(validator))
    if held is not None and held[0] is validator:
        return held[1]
    registry = getattr(validator, "_registry", None)

    def retrieve(uri: str) -> Any:
        if registry is None:
            raise LookupError(uri)
        return registry.contents(uri)

    twin = jsonschema_rs.validator_for(
        validator.schema,
        retriever=retrieve,
        validate_formats=validator.format_checker is not None,
        ignore_unknown_formats=False,
    )
    if len(_COMPILED) >= _COMPILED_LIMIT:  # a caller building validators afresh must not grow this for ever
        del _COMPILED[next(iter(_COMPILED))]
    _COMPILED[id(validator)] = (validator, twin)
    return twin


def schema_errors(document: Any, validator: Validator) -> list[dict[str, str]]:
    """Every way ``document`` breaks the validator's schema, as ``{"path", "message"}``, in a stable order."""
    fast = compiled(validator)
    if fast.is_valid(document):
        return []
    found = {(json_pointer(error.absolute_path), describe_error(error)) for error in validator.iter_errors(document)}
    if not found:
        # The compiled check applies patterns as ECMA-262 regular expressions, as JSON Schema says: "$"
        # matches only at the very end. Python's "$" also matches before a final newline, so jsonschema
        # let "children_social_care\n" pass a code's pattern. The stricter verdict stands, in words of its own.
        found = {
            (json_pointer(error.instance_path), _COMPILED_WORDS.get(type(error.kind).__name__, _NO_MATCH))
            for error in fast.iter_errors(document)
        }
    return [{"path": path, "message": message} for path, message in sorted(found)]


#: Sentences for the compiled check's own findings (only ever needed where jsonschema saw nothing wrong).
_COMPILED_WORDS = {"Pattern": "does not have the expected form", "Format": "is not in the expected format"}
_NO_MATCH = "does not match the format"


def describe_error(error: ValidationError) -> str:
    """A plain sentence about one schema error, built from the schema, never from the instance."""
    keyword = str(error.validator)
    expected: Any = error.validator_value
    if keyword == "required":
        missing = [name for name in expected if isinstance(error.instance, Mapping) and name not in error.instance]
        return "is missing " + ", ".join(repr(name) for name in missing)
    if keyword in ("additionalProperties", "unevaluatedProperties"):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = set(schema.get("properties", {}))
        extra = (
            sorted(str(k) for k in error.instance if k not in allowed) if isinstance(error.instance, Mapping) else []
        )
        named = [repr(k) for k in extra if _SAFE_NAME.match(k)]
        if named and len(named) == len(extra):
            return "has properties the format does not allow: " + ", ".join(named)
        return "has properties the format does not allow (nothing else may be added to a manifest)"
    if keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(_TYPE_WORDS.get(str(k), str(k)) for k in kinds)
    if keyword == "const":
        return f"must be {expected!r}"
    if keyword == "enum":
        return "must be one of " + ", ".join(repr(item) for item in expected)
    if keyword == "pattern":
        return "does not have the expected form" + _described(error)
    if keyword == "format":
        return f"must be a valid {expected} (YYYY-MM-DD)" if expected == "date" else f"must be a valid {expected}"
    simple = {
        "minItems": f"must list at least {expected} item(s)",
        "maxItems": f"must list at most {expected} items",
        "uniqueItems": "must not list the same item twice",
        "minLength": f"must be at least {expected} character(s) long",
        "maxLength": f"must be at most {expected} characters long",
        "minimum": f"must be at least {expected}",
        "maximum": f"must be at most {expected}",
        "minProperties": f"must have at least {expected} entries",
        "maxProperties": f"must have at most {expected} entries",
        "propertyNames": "has a key that is not a known code (lowercase letters, digits and underscores)",
        "oneOf": "does not match any of the allowed forms",
        "anyOf": "does not match any of the allowed forms",
    }
    return simple.get(keyword, f"does not match the format ({keyword})")


def _described(error: ValidationError) -> str:
    description = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    if isinstance(description, str) and len(description) <= 160:
        return f": {description}"
    hints = {
        "^[a-z][a-z0-9_]{0,63}$": ": a code in lowercase letters, digits and underscores",
        "^sha256:[0-9a-f]{64}$": ": sha256: followed by 64 hex digits",
        "^[0-9a-f]{64}$": ": 64 hex digits",
    }
    return hints.get(str(error.validator_value), "")


def check_document(document: Any, validator: Validator, *, what: str) -> None:
    """Raise :class:`SchemaViolation` listing every error (``extras["errors"]``) if ``document`` is malformed."""
    errors = schema_errors(document, validator)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise SchemaViolation(
            f"The {what} is not in the expected format: {first['path'] or 'the document'} {first['message']}{more}.",
            extras={"errors": errors},
        )


def check(document: Any, name: str, *, what: str) -> None:
    """Raise :class:`SchemaViolation` listing every error if ``document`` breaks schema ``name``."""
    check_document(document, validator(name), what=what)
