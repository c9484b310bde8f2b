"""JSON Schema ``format`` is enforced, not merely annotated: a not_after that is not a time is a 4xx.

Finding of issue 8: jsonschema checks ``date-time`` only when the ``rfc3339-validator`` package is
installed, and passes it silently otherwise; it was not installed, so a ``not_after`` of "garbage"
reached the code that parses it and became a 500. RFC 3339 also allows a lowercase ``t`` and ``z``,
which the format check accepts and Python's parser did not (another 500, once the check was on).
"""

from __future__ import annotations

import json

import pytest

from exchange import crypto, schemas
from exchange.client import ApiError
from exchange.domain import parse_iso
from exchange.errors import SchemaViolation
from exchange.keyfile import MemberCredentials
from tests.conftest import Deployment


def _new_key() -> str:
    return crypto.b64encode(MemberCredentials.generate().signing.public_bytes)


def _new_encryption_key() -> str:
    """An encryption key: a member adds one with the request's own signature, no further proof."""
    return crypto.b64encode(MemberCredentials.generate().encryption.public_bytes)


@pytest.mark.parametrize("name", sorted(p.stem for p in schemas.SCHEMAS_DIR.glob("*.json")))
def test_every_format_a_schema_names_is_one_that_is_checked(name: str) -> None:
    """Each ``format`` in schemas/ (date-time, date) has a checker installed, so none passes unchecked."""
    document = json.loads((schemas.SCHEMAS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    checker = schemas.validator("key.v1").format_checker
    assert checker is not None
    assert set(schemas.formats_named(document)) <= set(checker.checkers)


@pytest.mark.parametrize("text", ["garbage", "2030-02-30T00:00:00Z", "2030-01-01", "99999-01-01T00:00:00Z"])
def test_a_not_after_that_is_not_a_date_time_breaks_the_key_schema(text: str) -> None:
    """Found by an attacker: ``not_after: "garbage"`` passed the schema; now it is a schema violation."""
    with pytest.raises(SchemaViolation) as refused:
        schemas.check({"use": "signing", "public": _new_key(), "not_after": text}, "key.v1", what="key")
    assert refused.value.extras["errors"] == [{"path": "/not_after", "message": "must be a valid date-time"}]


def test_a_schema_with_a_format_nobody_checks_is_refused_when_loaded() -> None:
    """Fail closed: a schema naming a format no installed checker knows cannot be loaded (it would pass anything)."""
    with pytest.raises(RuntimeError, match="no-such-format"):
        schemas.fragment_validator({"type": "string", "format": "no-such-format"}, where="a test")


def test_the_server_starts_only_when_every_schema_can_be_enforced() -> None:
    """Every schema in schemas/ loads with its formats checked (what the server does when it starts)."""
    schemas.preload()


def test_rfc3339_times_with_a_lowercase_t_and_z_parse() -> None:
    """RFC 3339 section 5.6 allows ``t`` and ``z``; the format check accepts them, so the parser must too."""
    assert parse_iso("2030-01-01t08:00:00z") == parse_iso("2030-01-01T08:00:00Z")


async def test_a_key_whose_not_after_is_not_a_date_time_is_a_422_not_a_500(deployment: Deployment) -> None:
    """Found by an attacker: adding a key with ``not_after: "garbage"`` was a 500; now a 422 naming the field."""
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as refused:
            await duty.request(
                "POST",
                f"/v1/members/{duty.member_id}/keys",
                {"use": "encryption", "public": _new_encryption_key(), "not_after": "garbage"},
            )
    assert refused.value.http_status == 422
    assert refused.value.problem["errors"] == [{"path": "/not_after", "message": "must be a valid date-time"}]


async def test_a_not_after_in_lowercase_rfc3339_is_accepted(deployment: Deployment) -> None:
    """Found while enabling the format check: ``t``/``z`` passed it, then the parser raised (a 500)."""
    async with deployment.client("csc-duty") as duty:
        added = await duty.request(
            "POST",
            f"/v1/members/{duty.member_id}/keys",
            {"use": "encryption", "public": _new_encryption_key(), "not_after": "2999-01-01t00:00:00z"},
        )
    assert added["use"] == "encryption"
