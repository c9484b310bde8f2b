"""A key file keeps every key it ever held, so packets sealed before a rotation still open after it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import crypto
from exchange.domain import iso
from exchange.errors import KeyFileError
from exchange.keyfile import MemberCredentials

OLD_FORMAT = Path(__file__).parent / "vectors" / "keyfile" / "v1-without-history.json"
RETIRED = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _rotate(credentials: MemberCredentials, retired: datetime = RETIRED) -> MemberCredentials:
    return credentials.rotated(crypto.SigningKey.generate(), crypto.EncryptionKey.generate(), retired=retired)


def _fresh_keys() -> tuple[crypto.SigningKey, crypto.EncryptionKey]:
    return crypto.SigningKey.generate(), crypto.EncryptionKey.generate()


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
