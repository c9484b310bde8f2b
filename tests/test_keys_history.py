"""A key file keeps every key it ever held, so packets sealed before a rotation still open after it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import crypto
from exchange.client import ApiError, ExchangeClient, open_fetched
from exchange.domain import iso
from exchange.errors import CryptoError, KeyFileError
from exchange.examples import referral
from exchange.keyfile import MemberCredentials
from tests.conftest import Deployment
from tests.test_cli import cli_json

OLD_FORMAT = Path(__file__).parent / "vectors" / "keyfile" / "v1-without-history.json"
RETIRED = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _rotate(credentials: MemberCredentials, retired: datetime = RETIRED) -> MemberCredentials:
    return credentials.rotated(crypto.SigningKey.generate(), crypto.EncryptionKey.generate(), retired=retired)


def _fresh_keys() -> tuple[crypto.SigningKey, crypto.EncryptionKey]:
    return crypto.SigningKey.generate(), crypto.EncryptionKey.generate()


async def _send_to(deployment: Deployment, member: str) -> str:
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([member]))
    return str(sent["packet_id"])


def _child_name(body: dict[str, object]) -> object:
    fields = body["fields"]
    assert isinstance(fields, list)
    return {f["name"]: f["value"] for f in fields}["child_name"]


# ---------------------------------------------------------------------------- against a real server


async def test_packets_sealed_before_two_rotations_still_open(deployment: Deployment) -> None:
    """Send, rotate twice with ``exchange keys rotate``, send again: both packets open from the rotated file."""
    key_file = deployment.key_dir / "csc-duty.json"
    original = MemberCredentials.load(key_file)
    assert original.member_id is not None
    before = await _send_to(deployment, original.member_id)

    mine = ["--key", str(key_file), "--server", deployment.url]
    first = await cli_json("keys", "rotate", *mine)
    second = await cli_json("keys", "rotate", *mine)
    after = await _send_to(deployment, original.member_id)

    rotated = MemberCredentials.load(key_file)
    assert rotated.encryption.key_id == second["encryption"]["key_id"]
    async with ExchangeClient(deployment.url, rotated) as client:
        old = await client.open(before)
        new = await client.open(after)
    assert old.manifest["recipients"][0]["encryption_key"] == original.encryption.key_id
    assert new.manifest["recipients"][0]["encryption_key"] == rotated.encryption.key_id
    assert _child_name(old.body) == _child_name(new.body) == "Jamie Example"
    assert [r.key.key_id for r in rotated.previous_encryption] == [
        original.encryption.key_id,
        first["encryption"]["key_id"],
    ]
    assert _mode(key_file) == 0o600


async def test_rotation_revokes_the_old_keys(deployment: Deployment) -> None:
    """Found by an attacker: ``keys rotate`` left the old signing key valid indefinitely; now both old keys are
    revoked (the file keeps them, so old packets still open) and the old key no longer authenticates."""
    key_file = deployment.key_dir / "csc-duty.json"
    original = MemberCredentials.load(key_file)
    assert original.member_id is not None
    before = await _send_to(deployment, original.member_id)
    rotated = await cli_json("keys", "rotate", "--key", str(key_file), "--server", deployment.url)
    assert rotated["retired"] == {"signing": original.signing.key_id, "encryption": original.encryption.key_id}
    assert rotated["revoked"] == [original.signing.key_id, original.encryption.key_id]
    async with ExchangeClient(deployment.url, original) as stale:
        with pytest.raises(ApiError) as refused:
            await stale.me()
    assert refused.value.http_status == 401
    async with ExchangeClient(deployment.url, MemberCredentials.load(key_file)) as renewed:
        keys = {k["key_id"]: k for k in (await renewed.me())["keys"]}
        opened = await renewed.open(before)
    assert all(keys[k]["revoked_at"] for k in rotated["revoked"])
    assert keys[rotated["signing"]["key_id"]]["revoked_at"] is None
    assert opened.packet_id == before


async def test_rotation_can_keep_the_old_keys(deployment: Deployment) -> None:
    """``keys rotate --keep-old`` leaves the old keys valid, for a member who revokes them later."""
    key_file = deployment.key_dir / "csc-duty.json"
    original = MemberCredentials.load(key_file)
    rotated = await cli_json("keys", "rotate", "--keep-old", "--key", str(key_file), "--server", deployment.url)
    assert rotated["revoked"] == []
    async with ExchangeClient(deployment.url, original) as client:  # the old signing key still authenticates
        keys = {k["key_id"]: k for k in (await client.me())["keys"]}
    assert keys[original.signing.key_id]["revoked_at"] is None


async def test_a_key_file_without_the_sealing_key_says_which_key_it_lacks(deployment: Deployment) -> None:
    """Opening with a file that lost the key a packet was sealed to names that key, and opens nothing."""
    original = deployment.credentials("csc-duty")
    assert original.member_id is not None
    packet_id = await _send_to(deployment, original.member_id)
    # What a second rotation left behind before key files kept their history: new keys only.
    forgetful = replace(_rotate(original), previous_signing=(), previous_encryption=())
    async with deployment.client("csc-duty") as duty:
        fetched = await duty.request("GET", f"/v1/packets/{packet_id}")
    with pytest.raises(CryptoError) as refused:
        open_fetched(fetched, forgetful)
    assert original.encryption.key_id in str(refused.value)
    assert "this key file does not hold" in str(refused.value)


# ---------------------------------------------------------------------------- the file itself


def test_a_key_file_written_before_history_still_loads(tmp_path: Path) -> None:
    """The old format (no ``previous`` list) loads with an empty history, and rotates like any other."""
    copy = tmp_path / "old.json"
    shutil.copyfile(OLD_FORMAT, copy)
    copy.chmod(0o600)
    document = json.loads(copy.read_text())
    assert "previous" not in document

    loaded = MemberCredentials.load(copy)
    assert loaded.member_id == document["member"]
    assert loaded.display_name == "Duty social worker"
    assert loaded.signing.key_id == document["signing"]["key_id"]
    assert loaded.encryption.key_id == document["encryption"]["key_id"]
    assert loaded.previous_signing == ()
    assert loaded.previous_encryption == ()
    assert loaded.encryption_key_for(document["encryption"]["key_id"]) is loaded.encryption
    assert loaded.encryption_key_for("mlkem768x25519:" + "0" * 32) is None

    _rotate(loaded).save(copy)
    again = MemberCredentials.load(copy)
    held = again.encryption_key_for(document["encryption"]["key_id"])
    assert held is not None
    assert held.private_bytes() == loaded.encryption.private_bytes()


@settings(max_examples=25)
@given(st.lists(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)), max_size=6))
def test_save_and_load_round_trip_any_number_of_rotations(gaps: list[timedelta]) -> None:
    """After any number of rotations, a saved file loads back with every key, in order, with its retirement time."""
    credentials = MemberCredentials("mem_" + "0d" * 12, "agy_" + "0a" * 12, None, *_fresh_keys(), "Duty")
    when = RETIRED
    for gap in gaps:
        when += gap
        credentials = _rotate(credentials, when)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "member.json"
        credentials.save(path)
        loaded = MemberCredentials.load(path)
        assert _mode(path) == 0o600

    def summary(c: MemberCredentials) -> object:
        return (
            c.member_id,
            c.agency_id,
            c.display_name,
            (c.signing.private_bytes(), c.encryption.private_bytes()),
            [(r.key.private_bytes(), iso(r.retired)) for r in c.previous_signing],
            [(r.key.private_bytes(), iso(r.retired)) for r in c.previous_encryption],
        )

    assert summary(loaded) == summary(credentials)
    assert len(loaded.previous_encryption) == len(gaps)
    for key in (credentials.encryption, *(r.key for r in credentials.previous_encryption)):
        found = loaded.encryption_key_for(key.key_id)
        assert found is not None
        assert found.private_bytes() == key.private_bytes()


def test_the_key_file_stays_mode_0600_through_rotations(tmp_path: Path) -> None:
    """Written, rewritten and rotated under a permissive umask, the file is 0600 and no temporary file is left."""
    path = tmp_path / "member.json"
    previous_umask = os.umask(0)
    try:
        credentials = MemberCredentials.generate()
        credentials.save(path)
        assert _mode(path) == 0o600
        for _ in range(2):
            credentials = _rotate(credentials)
            credentials.save(path)
            assert _mode(path) == 0o600
    finally:
        os.umask(previous_umask)
    assert [p.name for p in tmp_path.iterdir()] == ["member.json"]
    assert len(MemberCredentials.load(path).previous_encryption) == 2


def test_a_crash_before_the_rename_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If writing the rotated file fails part way, the file on disk is still the old one and nothing is left over."""
    path = tmp_path / "member.json"
    old = MemberCredentials.generate()
    old.save(path)

    def crash(self: Path, target: object) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _rotate(old).save(path)
    monkeypatch.undo()
    assert MemberCredentials.load(path).encryption.key_id == old.encryption.key_id
    assert [p.name for p in tmp_path.iterdir()] == ["member.json"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_id", "mlkem768x25519:" + "0" * 32),  # not the key its id names
        ("private", "not base64"),
        ("use", "wrapping"),
        ("retired", 1700000000),
    ],
)
def test_a_damaged_earlier_key_is_refused(tmp_path: Path, field: str, value: object) -> None:
    """A history entry that is unusable, or not the key its id names, fails the load rather than being skipped."""
    path = tmp_path / "member.json"
    _rotate(MemberCredentials.generate()).save(path)
    document = json.loads(path.read_text())
    entry = next(e for e in document["previous"] if e["use"] == "encryption")
    entry[field] = value
    path.unlink()
    crypto.write_private_file(path, json.dumps(document).encode())
    with pytest.raises(KeyFileError, match="earlier key"):
        MemberCredentials.load(path)
