"""Shape checks for manifests and packet files, with messages that never repeat a value.

The generic machinery (value-free messages) lives in :mod:`exchange.schemas`; this module applies
it to the manifest with the catalogue's compiled schema.

A manifest that does not match ``manifest.v1.json`` is refused before any sharing rule runs:
the rules give meaning to well-formed answers, the schema makes sure they are well formed.
jsonschema's own messages quote the offending value (``'Jane Smith' does not match ...``);
a value in the wrong place may be exactly the personal data the manifest must not hold, and
rejections are recorded, so every message here is built from the schema alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange.policy.catalogue import Catalogue
from exchange.schemas import check_document
from exchange.schemas import validator as project_validator


def validate_manifest_schema(manifest: Mapping[str, Any], catalogue: Catalogue | None = None) -> None:
    """Check ``manifest`` against ``manifest.v1.json``; raise :class:`SchemaViolation` listing every error.

    Uses the catalogue's compiled schema when given, else the project's schema registry
    (``exchange.schemas``), compiled once.
    """
    validator = catalogue.manifest_validator if catalogue is not None else project_validator("manifest.v1")
    check_document(manifest, validator, what="manifest")
