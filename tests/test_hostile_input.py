"""Hostile input gets a 4xx with a sentence, never a 5xx; names cannot disguise people; data files are private.

Findings of issue 8 tried as an attacker would: duplicate JSON names were accepted (last wins),
deeply nested JSON raised RecursionError (500), a lone-surrogate display name was a 500, display
names accepted NUL, bidi overrides and zero-width characters, and the database and record log
were created world-readable.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange import strictjson
from exchange.client import ApiError
from exchange.errors import InvalidRequest
from exchange.keyfile import MemberCredentials
from exchange.service.directory import clean_display_name
from tests.conftest import Deployment, start_deployment


async def _raw_post(deployment: Deployment, label: str, path: str, body: str) -> ApiError:
    """POST ``body`` exactly as written (signed), expecting a problem."""
    async with deployment.client(label) as client:
        with pytest.raises(ApiError) as refused:
            await client.request_raw("POST", path, body.encode())
    return refused.value


def _registration(name_json: str, credentials: MemberCredentials, agency: str) -> str:
    public = credentials.public_document()
    return (
        f'{{"agency": "{agency}", "display_name": {name_json}, "roles": ["practitioner"],'
        f' "signing_key": {json.dumps(public["signing_key"])},'
        f' "encryption_key": {json.dumps(public["encryption_key"])}}}'
    )


async def test_a_json_name_given_twice_is_refused(deployment: Deployment) -> None:
    """Found by an attacker: ``{"display_name": "A", "display_name": "B"}`` was accepted; now 400."""
    admin = deployment.credentials("school-admin")
    body = _registration('"Jo", "display_name": "Someone else"', MemberCredentials.generate(), admin.agency_id or "")
    error = await _raw_post(deployment, "school-admin", "/v1/members", body)
    assert error.http_status == 400 and "twice" in error.problem["detail"]


async def test_deeply_nested_json_is_a_400_not_a_500(deployment: Deployment) -> None:
    """Found by an attacker: 100,000 nested arrays made the server raise RecursionError."""
    error = await _raw_post(deployment, "school-dsl", "/v1/packets", "[" * 100_000 + "]" * 100_000)
    assert error.http_status == 400 and "nested" in error.problem["detail"]


async def test_a_lone_surrogate_display_name_is_a_400(deployment: Deployment) -> None:
    """Found by an attacker: a display name of ``\\ud800`` was a 500."""
    admin = deployment.credentials("school-admin")
    body = _registration('"\\ud800"', MemberCredentials.generate(), admin.agency_id or "")
    error = await _raw_post(deployment, "school-admin", "/v1/members", body)
    assert error.http_status == 400 and "surrogate" in error.problem["detail"]


@pytest.mark.parametrize(
    "name",
    ["Jo\u0000 Morgan", "Jo \u202eMorgan", "Jo\u200bMorgan", "\u2066Jo\u2069", "Jo\u0007"],
    ids=["nul", "bidi-override", "zero-width-space", "bidi-isolate", "bell"],
)
async def test_a_display_name_that_could_disguise_someone_is_refused(deployment: Deployment, name: str) -> None:
    """Found by an attacker: names took NUL, bidi overrides and zero-width characters; now 400 naming them."""
    admin = deployment.credentials("school-admin")
    async with deployment.client("school-admin") as client:
        with pytest.raises(ApiError) as refused:
            await client.register_member(admin.agency_id or "", name, ["practitioner"], MemberCredentials.generate())
    assert refused.value.http_status == 400
    assert "U+" in refused.value.problem["detail"]


async def test_a_display_name_is_stored_in_nfc(deployment: Deployment) -> None:
    """A decomposed é (e + combining accent) is stored composed, so the same name is the same string."""
    admin = deployment.credentials("school-admin")
    async with deployment.client("school-admin") as client:
        registered = await client.register_member(
            admin.agency_id or "", "Rene\u0301e Dupont", ["practitioner"], MemberCredentials.generate()
        )
    assert registered["display_name"] == "Ren\u00e9e Dupont"


def test_the_database_and_the_record_log_are_private(deployment: Deployment) -> None:
    """Found by an attacker: both were created world-readable; now 0600 files in a 0700 folder."""
    data = deployment.config.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in (deployment.config.database_path, deployment.config.record_log_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(documents)
def test_strict_json_reads_every_ordinary_document_as_json_does(value: object) -> None:
    """Strictness refuses only duplicates, depth and surrogates: any other document reads the same."""
    text = json.dumps(value)
    try:
        expected = json.loads(text)
    except ValueError:
        return
    refusal = None
    try:
        assert strictjson.loads(text) == expected
    except InvalidRequest as refused:
        refusal = refused.detail
    assert refusal is None or "surrogate" in refusal or "nested" in refusal


@given(st.text())
def test_a_clean_display_name_has_no_disguising_characters(name: str) -> None:
    """Whatever is typed, a name either comes back in NFC with none of the refused categories, or is refused."""
    import unicodedata

    try:
        cleaned = clean_display_name(name)
    except InvalidRequest:
        return
    assert cleaned == unicodedata.normalize("NFC", cleaned)
    assert all(unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Co", "Cn"} for c in cleaned)



async def test_requests_refused_by_the_rate_limit_write_no_nonce(tmp_path: Path) -> None:
    """Found by an attacker: each rate-limited request still stored (and fsynced) its nonce first."""
    running, close = await start_deployment(tmp_path, rate_limit_per_minute=3)
    try:
        async with running.client("csc-duty") as duty:
            outcomes = await asyncio.gather(*(duty.me() for _ in range(10)), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, ApiError)]
        assert len(refused) == 7 and {e.http_status for e in refused} == {429}
        key_id = running.credentials("csc-duty").signing.key_id
        with sqlite3.connect(running.config.database_path) as db:
            (stored,) = db.execute("SELECT COUNT(*) FROM request_nonces WHERE key_id = ?", (key_id,)).fetchone()
        assert stored == 3
    finally:
        await close()


def _nesting(text: str) -> int:
    """The deepest bracket nesting of a JSON text, counted character by character outside strings."""
    depth = deepest = 0
    inside = escaped = False
    for char in text:
        if inside:
            inside, escaped = (not (char == '"' and not escaped)), (char == "\\" and not escaped)
        elif char == '"':
            inside = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@given(documents, st.integers(min_value=0, max_value=1200), st.booleans())
def test_nesting_is_refused_exactly_past_the_limit(value: object, extra: int, as_object: bool) -> None:
    """The depth bound is judged on the parsed tree (and past the recursion limit by the parser): a
    document is refused as nested exactly when its brackets nest deeper than MAX_DEPTH."""
    text = json.dumps(value)
    for _ in range(extra):
        text = f'{{"k": {text}, "s": "[[{{"}}' if as_object else f'["]]", {text}]'
    refusal = ""
    try:
        strictjson.loads(text)
    except InvalidRequest as refused:
        refusal = refused.detail
    assert ("nested" in refusal) == (_nesting(text) > strictjson.MAX_DEPTH), refusal
