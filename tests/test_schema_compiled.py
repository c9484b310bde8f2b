"""The compiled schema check (jsonschema-rs) gives jsonschema's verdict on every document, valid or not."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from exchange import schemas
from tests.factories import (
    CATALOGUE,
    consultation_manifest,
    imminent_harm_manifest,
    make_manifest,
    make_packet_file,
    response_manifest,
    without_consent_manifest,
)

BASES = [make_manifest, without_consent_manifest, consultation_manifest, imminent_harm_manifest, response_manifest]

#: Values that break schemas in the ways real input does: wrong types, edge strings, times, codes.
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "abc\n",
            "Jane Smith",
            "2026-13-01T00:00:00Z",
            "2026-01-01t00:00:00z",
            "2026-01-01T00:00:00+25:00",
            "2026-02-29",
            "2024-02-29",
            "sha256:" + "0" * 64,
            "sha256:" + "0" * 63,
            "mem_" + "a" * 24,
            "children_social_care",
            "é",
        ]
    ),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["x", "value", "label"]), st.integers(), max_size=2),
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, bases: list[Any]) -> Any:
    """A real document with one to three places replaced, removed or added to."""
    document = copy.deepcopy(draw(st.sampled_from(bases))())
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(ODD)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(["extra", "value", "label"]))] = draw(ODD)
        elif isinstance(parent[path[-1]], list):
            parent[path[-1]].append(draw(ODD))
    return document


def _check(document: Any, validator: Any) -> None:
    """The verdict is the compiled one; it never accepts what jsonschema refuses; a refusal always says why."""
    fast = schemas.compiled(validator).is_valid(document)
    slow = not any(True for _ in validator.iter_errors(document))
    assert slow or not fast, "the compiled check accepted a document jsonschema refuses"
    errors = schemas.schema_errors(document, validator)
    assert (errors == []) == fast
    assert all(e["message"] for e in errors)


@given(mutated(BASES))
def test_the_compiled_manifest_check_is_never_laxer_than_jsonschema(document: Any) -> None:
    """On real and broken manifests alike, the compiled check refuses everything jsonschema refuses."""
    _check(document, CATALOGUE.manifest_validator)


@given(mutated([make_packet_file]))
def test_the_compiled_packet_file_check_is_never_laxer_than_jsonschema(document: Any) -> None:
    """The packet file's schema (a definition inside the manifest's, reached by $ref) likewise."""
    _check(document, CATALOGUE.packet_file_validator)


@given(st.sampled_from(["key.v1", "member.v1", "ledger-filters.v1", "acknowledgement.v1"]), ODD)
def test_the_compiled_check_is_never_laxer_on_other_documents(name: str, value: Any) -> None:
    """Other request schemas, fed odd values where a field or the whole document belongs, likewise."""
    validator = schemas.validator(name)
    for document in (value, {"use": "signing", "public": value}, {"since": value}):
        _check(document, validator)


def test_a_code_with_a_trailing_newline_is_refused() -> None:
    """jsonschema's Python patterns let "$" match before a final newline; the standard's, and now ours, do not."""
    manifest = make_manifest()
    manifest["purpose"] += "\n"
    errors = schemas.schema_errors(manifest, CATALOGUE.manifest_validator)
    assert errors == [{"path": "/purpose", "message": "does not have the expected form"}]
