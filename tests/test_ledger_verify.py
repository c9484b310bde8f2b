"""The offline export verifier: one named test per attack, plus heads, the writer and a happy path."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange import crypto
from exchange.errors import LedgerProofError
from exchange.ledger import (
    EMPTY_ROOT,
    TreeHead,
    export_lines,
    format_timestamp,
    leaf_hash,
    root_hash,
    sign_tree_head,
    tree_head_signing_bytes,
    verify_export,
    verify_tree_head,
    write_export,
)
from exchange.ledger import verify as verify_module
from exchange.ledger.tree import Frontier
from exchange.ledger.verify import _canonical_entry
from exchange.ledger.verify_lines import _seq_is
from exchange.record import Record

TIME = "2025-03-14T09:26:53.589Z"
EXPORTED_AT = "2025-03-14T10:00:00.000Z"


# --------------------------------------------------------------------------- factories


@pytest.fixture(scope="module")
def server_key() -> crypto.SigningKey:
    return crypto.SigningKey.generate()


@pytest.fixture(scope="module")
def attacker_key() -> crypto.SigningKey:
    return crypto.SigningKey.generate()


def make_entry(seq: int, **changes: Any) -> bytes:
    """A realistic ledger entry (~250 bytes of canonical JSON): codes and ids, never content."""
    event: dict[str, Any] = {
        "seq": seq,
        "time": TIME,
        "type": "packet.delivered",
        "actor": f"member:{seq % 97:04d}-northshire",
        "agency": "agency:northshire-childrens-services",
        "manifest_digest": "sha256:" + leaf_hash(b"manifest %d" % seq).hex(),
        "packet_id": f"pkt_{seq:012d}",
        "purpose": "s47-enquiry",
    }
    event.update(changes)
    return bytes(rfc8785.dumps(event))


@dataclass
class Ledger:
    """Entries and the heads a server signed over them."""

    entries: list[bytes]
    heads: list[TreeHead]
    key_id: str

    def lines(self) -> list[bytes]:
        return list(export_lines(self.entries, self.heads, server_key_id=self.key_id, exported_at=EXPORTED_AT))


def sign_heads(
    entries: list[bytes], every: int, key: crypto.SigningKey, *, key_id: str | None = None, upto: int | None = None
) -> list[TreeHead]:
    """Heads at every ``every`` entries up to ``upto`` (default: all), signed by ``key``."""
    frontier, heads = Frontier(), []
    last = len(entries) if upto is None else upto
    for size, entry in enumerate(entries, start=1):
        frontier.append(leaf_hash(entry))
        if size % every == 0 and size <= last:
            head = sign_tree_head(size, frontier.root(), TIME, key)
            heads.append(head if key_id is None else replace(head, key_id=key_id))
    return heads


def build_ledger(count: int, every: int, key: crypto.SigningKey, *, tail: int = 0) -> Ledger:
    """A ledger of ``count`` entries with a signed head every ``every``, and ``tail`` unsigned ones."""
    entries = [make_entry(seq) for seq in range(count + tail)]
    return Ledger(entries, sign_heads(entries, every, key, upto=count), key.key_id)


def problem_of(lines: list[bytes], key: crypto.SigningKey, **options: Any) -> dict[str, Any]:
    """Verify and return the error's extras, with its detail under "detail"."""
    with pytest.raises(LedgerProofError) as caught:
        verify_export(lines, key.public_bytes, **options)
    return {**caught.value.extras, "detail": caught.value.detail}


def line_of_entry(lines: list[bytes], seq: int) -> int:
    """1-based line number of the entry line with this seq."""
    for number, raw in enumerate(lines, start=1):
        value = json.loads(raw)
        if value["kind"] == "entry" and value["seq"] == seq:
            return number
    raise AssertionError(f"no entry {seq}")


def line_of_head(lines: list[bytes], size: int) -> int:
    """1-based line number of the first head line of this size."""
    for number, raw in enumerate(lines, start=1):
        value = json.loads(raw)
        if value["kind"] == "head" and value["size"] == size:
            return number
    raise AssertionError(f"no head {size}")


def with_entry(lines: list[bytes], seq: int, entry: bytes) -> list[bytes]:
    """The export with entry ``seq``'s stored bytes replaced (line seq unchanged)."""
    out = list(lines)
    number = line_of_entry(lines, seq)
    out[number - 1] = b'{"entry":"%s","kind":"entry","seq":%d}\n' % (base64.b64encode(entry), seq)
    return out


def write_log(
    path: Path, entries: list[bytes], *, skip: int | None = None, alter: int | None = None, first_seq: int = 0
) -> Path:
    """A record log as the server writes it, with operational lines between ledger records."""
    record = Record(path, console=False)
    for seq, entry in enumerate(entries, start=first_seq):
        if seq % 250 == 0:
            record.log.info("http.request", path="/v1/packets", status=201)
        if seq == skip:
            continue
        data = make_entry(seq, type="packet.opened") if seq == alter else entry
        record.log.info("ledger.appended", seq=seq, ledger_entry=base64.b64encode(data).decode("ascii"))
    record.close()
    return path


# --------------------------------------------------------------------------- happy paths


def test_a_few_thousand_entries_verify(server_key: crypto.SigningKey) -> None:
    """An honest export of 3,000 entries with a head every 100 verifies and reports what it holds."""
    ledger = build_ledger(3000, 100, server_key)
    seen: list[int] = []
    report = verify_export(ledger.lines(), server_key.public_bytes, progress=seen.append, progress_every=1000)
    assert report.entries == 3000
    assert report.heads == 30
    assert report.last_signed_size == 3000
    assert report.unsigned_tail == 0
    assert report.root_hash == report.last_signed_root == root_hash([leaf_hash(e) for e in ledger.entries])
    assert report.server_key_id == server_key.key_id
    assert seen == [1000, 2000, 3000]
    assert report.as_json()["entries"] == 3000


def test_an_unsigned_tail_is_reported_not_rejected(server_key: crypto.SigningKey) -> None:
    """Entries after the last head (signing lags) are counted as the unsigned tail."""
    ledger = build_ledger(500, 100, server_key, tail=37)
    report = verify_export(ledger.lines(), server_key.public_bytes)
    assert (report.entries, report.last_signed_size, report.unsigned_tail) == (537, 500, 37)
    assert report.last_signed_root == root_hash([leaf_hash(e) for e in ledger.entries[:500]])
    assert report.root_hash == root_hash([leaf_hash(e) for e in ledger.entries])


def test_an_export_without_entries_verifies(server_key: crypto.SigningKey) -> None:
    """An empty ledger, with or without a head of size 0, verifies."""
    empty_head = sign_tree_head(0, EMPTY_ROOT, TIME, server_key)
    for heads in ([], [empty_head]):
        report = verify_export(Ledger([], heads, server_key.key_id).lines(), server_key.public_bytes)
        assert (report.entries, report.heads, report.root_hash) == (0, len(heads), EMPTY_ROOT)


def test_the_export_file_verifies_from_disk(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """write_export writes a file verify_export accepts, leaving no partial file behind."""
    ledger = build_ledger(300, 64, server_key, tail=3)
    target = tmp_path / "ledger.jsonl"
    summary = write_export(target, ledger.entries, ledger.heads, server_key_id=server_key.key_id, exported_at=TIME)
    assert (summary.entries, summary.heads, summary.signed_size) == (303, 4, 256)
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.jsonl"]
    assert verify_export(target, server_key.public_bytes).unsigned_tail == 47


def test_lines_in_other_valid_json_shapes_still_verify(server_key: crypto.SigningKey) -> None:
    """The verifier reads any JSON spelling of a line (spaces, key order, CRLF, text), not only the writer's."""
    ledger = build_ledger(200, 50, server_key)
    respelled = [json.dumps(json.loads(raw), indent=None) + "\r\n" for raw in ledger.lines()]
    assert verify_export(respelled, server_key.public_bytes).entries == 200


def test_the_record_log_matches(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """With --log, every exported entry is found in the server's record log with the same bytes."""
    ledger = build_ledger(1000, 100, server_key)
    log = write_log(tmp_path / "record.jsonl", [*ledger.entries, make_entry(1000)])
    report = verify_export(ledger.lines(), server_key.public_bytes, log_path=log)
    assert report.log_entries_checked == 1000
    assert report.log_entries_beyond_export == 1


def test_entries_off_the_fast_path_still_verify(server_key: crypto.SigningKey) -> None:
    """Canonical entries with non-ASCII text, fractions, nesting or large numbers take the exact route and pass."""
    entries = [make_entry(seq) for seq in range(8)]
    entries[2] = make_entry(2, agency="agence:Île-de-France 👪")
    entries[3] = make_entry(3, score=0.25, big=1e16)
    entries[4] = make_entry(4, refs={"b": [1, 2, {"c": None}], "a": True}, note="tab\there")
    ledger = Ledger(entries, sign_heads(entries, 4, server_key), server_key.key_id)
    assert verify_export(ledger.lines(), server_key.public_bytes).entries == 8


# --------------------------------------------------------------------------- attacks on entries


def test_attack_one_byte_of_a_stored_entry_changed(server_key: crypto.SigningKey) -> None:
    """A changed byte that keeps the entry valid is caught at the next signed head, naming the range."""
    lines = build_ledger(1000, 100, server_key).lines()
    tampered = make_entry(345).replace(b"packet.delivered", b"packet.deliverex")
    found = problem_of(with_entry(lines, 345, tampered), server_key)
    assert found["problem"] == "head.root_mismatch"
    assert (found["line"], found["seq"], found["since_seq"]) == (line_of_head(lines, 400), 399, 300)


def test_attack_one_byte_changed_is_pinned_to_its_entry_by_the_log(
    server_key: crypto.SigningKey, tmp_path: Path
) -> None:
    """With the honest record log, the root mismatch also names the exact altered entry."""
    ledger = build_ledger(1000, 100, server_key)
    lines = with_entry(ledger.lines(), 345, make_entry(345).replace(b"s47-enquiry", b"s47-enquirz"))
    found = problem_of(lines, server_key, log_path=write_log(tmp_path / "record.jsonl", ledger.entries))
    assert found["problem"] == "head.root_mismatch"
    assert f"disagrees first at seq 345 (line {line_of_entry(lines, 345)})" in found["detail"]


def test_attack_one_byte_that_breaks_the_json(server_key: crypto.SigningKey) -> None:
    """A changed byte that breaks the JSON is caught at the entry itself."""
    lines = build_ledger(300, 100, server_key).lines()
    found = problem_of(with_entry(lines, 150, make_entry(150).replace(b'"time":', b'"time";')), server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.not_json", line_of_entry(lines, 150), 150)


def test_attack_entry_not_in_canonical_form(server_key: crypto.SigningKey) -> None:
    """Entry bytes that are valid JSON but not RFC 8785 canonical are caught at the entry."""
    lines = build_ledger(300, 100, server_key).lines()
    loose = json.dumps(json.loads(make_entry(42))).encode()
    found = problem_of(with_entry(lines, 42, loose), server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.not_canonical", line_of_entry(lines, 42), 42)


def test_attack_entry_deleted(server_key: crypto.SigningKey) -> None:
    """Deleting an entry is a sequence gap at the line where the next entry now sits."""
    lines = build_ledger(1000, 100, server_key).lines()
    number = line_of_entry(lines, 510)
    found = problem_of(lines[: number - 1] + lines[number:], server_key)
    assert (found["problem"], found["line"], found["seq"], found["expected_seq"]) == ("entry.seq_gap", number, 511, 510)


def test_attack_two_entries_swapped(server_key: crypto.SigningKey) -> None:
    """Swapping two entries is reported as a reordering, naming where the expected entry went."""
    lines = build_ledger(1000, 100, server_key).lines()
    first, second = line_of_entry(lines, 620), line_of_entry(lines, 627)
    lines[first - 1], lines[second - 1] = lines[second - 1], lines[first - 1]
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.seq_reordered", first, 627)
    assert (found["expected_seq"], found["expected_line"]) == (620, second)


def test_attack_adjacent_entries_swapped_with_their_numbers(server_key: crypto.SigningKey) -> None:
    """Swapping two entries and renumbering their lines still fails: the bytes carry their own seq."""
    ledger = build_ledger(300, 100, server_key)
    lines = ledger.lines()
    lines = with_entry(with_entry(lines, 10, ledger.entries[11]), 11, ledger.entries[10])
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.seq_mismatch", line_of_entry(lines, 10), 10)


def test_attack_entry_duplicated(server_key: crypto.SigningKey) -> None:
    """Replaying an entry line a second time is a duplicate sequence number."""
    lines = build_ledger(300, 100, server_key).lines()
    number = line_of_entry(lines, 77)
    found = problem_of([*lines[:number], lines[number - 1], *lines[number:]], server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.seq_duplicate", number + 1, 77)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (b"[1,2]", "entry.not_object"),
        (make_entry(5).replace(b'"type":"packet.delivered"', b'"type":7'), "entry.missing_field"),
        (b'{"time":"x","type":"y"}', "entry.missing_field"),
        (make_entry(5).replace(b'"seq":5', b'"seq":1.5'), "entry.missing_field"),
        (make_entry(5).replace(b'"seq":5', b'"seq":5.0'), "entry.not_canonical"),
        (make_entry(5).replace(b'"seq":5', b'"seq":-0'), "entry.not_canonical"),
        (make_entry(5).replace(b'"seq":5', b'"seq":99999999999999999'), "entry.not_canonical"),
        (make_entry(5) + b" ", "entry.not_canonical"),
        (b"\xff\xfe", "entry.not_json"),
    ],
    ids=[
        "array", "type-not-text", "no-seq", "fraction-seq", "float-seq", "minus-zero", "huge-seq", "trailing-space",
        "not-utf8",
    ],
)
def test_attack_malformed_entry_bytes(server_key: crypto.SigningKey, entry: bytes, problem: str) -> None:
    """Entries that are not canonical JSON objects with seq, time and type are caught at the entry."""
    lines = build_ledger(10, 10, server_key).lines()
    found = problem_of(with_entry(lines, 5, entry), server_key)
    assert (found["problem"], found["line"], found["seq"]) == (problem, line_of_entry(lines, 5), 5)


@pytest.mark.parametrize("text", [b"!!!!", b"YR==", b"bWFrZV9lbnRyeQ"], ids=["alphabet", "loose-padding", "no-padding"])
def test_attack_entry_base64_spelled_differently(server_key: crypto.SigningKey, text: bytes) -> None:
    """Invalid base64, including a second spelling of the same bytes via padding bits, is refused."""
    lines = build_ledger(10, 10, server_key).lines()
    number = line_of_entry(lines, 3)
    lines[number - 1] = b'{"entry":"%s","kind":"entry","seq":3}\n' % text
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.bad_base64", number, 3)


# --------------------------------------------------------------------------- truncation


def test_attack_truncated_between_heads(server_key: crypto.SigningKey) -> None:
    """Cutting the export between two heads is reported as truncated where the cut is."""
    lines = build_ledger(1000, 100, server_key).lines()
    cut = line_of_entry(lines, 750)
    found = problem_of(lines[: cut - 1], server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("export.truncated", cut, 750)


def test_attack_truncated_through_the_last_head(server_key: crypto.SigningKey) -> None:
    """Cutting off the last head (and the end line) is reported as truncated."""
    lines = build_ledger(1000, 100, server_key).lines()
    last_head = line_of_head(lines, 1000)
    found = problem_of(lines[: last_head - 1], server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("export.truncated", last_head, 1000)


def test_attack_tail_entries_cut_but_end_line_kept(server_key: crypto.SigningKey) -> None:
    """Removing the last entries while keeping the end line is still truncation."""
    lines = build_ledger(100, 50, server_key, tail=5).lines()
    found = problem_of(lines[:-3] + lines[-1:], server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("export.truncated", len(lines) - 2, 103)


def test_attack_last_head_removed_but_end_line_kept(server_key: crypto.SigningKey) -> None:
    """Removing only the last head is caught by the end line's count of heads."""
    lines = build_ledger(300, 100, server_key).lines()
    found = problem_of(lines[:-2] + lines[-1:], server_key)
    assert (found["problem"], found["line"]) == ("export.count_mismatch", len(lines) - 1)


def test_attack_lines_after_the_end(server_key: crypto.SigningKey) -> None:
    """Anything after the end line is refused."""
    lines = build_ledger(10, 5, server_key).lines()
    found = problem_of([*lines, lines[2]], server_key)
    assert (found["problem"], found["line"]) == ("export.trailing_data", len(lines) + 1)


# --------------------------------------------------------------------------- attacks on heads


def forked_head(ledger: Ledger, size: int, key: crypto.SigningKey) -> bytes:
    """A head line for ``size`` over a different history, validly signed by ``key``."""
    other = [*ledger.entries[: size - 1], make_entry(size - 1, type="packet.recalled")]
    head = sign_tree_head(size, root_hash([leaf_hash(e) for e in other]), TIME, key)
    return rfc8785.dumps({"kind": "head", **head.to_json()}) + b"\n"


def test_attack_fork_second_head_differs(server_key: crypto.SigningKey) -> None:
    """A second server-signed head of the same size with another root is reported as a fork."""
    ledger = build_ledger(500, 100, server_key)
    lines = ledger.lines()
    honest = line_of_head(lines, 300)
    lines.insert(honest, forked_head(ledger, 300, server_key))
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("head.fork", honest + 1, 299)
    assert found["other_line"] == honest


def test_attack_fork_first_head_differs(server_key: crypto.SigningKey) -> None:
    """A fork is reported as such even when the head that disagrees with the entries comes first."""
    ledger = build_ledger(500, 100, server_key)
    lines = ledger.lines()
    honest = line_of_head(lines, 300)
    lines.insert(honest - 1, forked_head(ledger, 300, server_key))
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("head.fork", honest + 1, 299)
    assert found["other_line"] == honest


def test_attack_fork_replayed_later(server_key: crypto.SigningKey) -> None:
    """A conflicting head for an earlier size, slipped in later, is still a fork."""
    ledger = build_ledger(500, 100, server_key)
    lines = ledger.lines()
    later = line_of_head(lines, 400)
    lines.insert(later, forked_head(ledger, 200, server_key))
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["other_line"]) == ("head.fork", later + 1, line_of_head(lines, 200))


def test_attack_forged_head_signature(server_key: crypto.SigningKey) -> None:
    """A head whose signature was altered is refused at that head."""
    lines = build_ledger(500, 100, server_key).lines()
    number = line_of_head(lines, 300)
    head = json.loads(lines[number - 1])
    signature = bytearray(base64.b64decode(head["signature"]))
    signature[10] ^= 0x01
    head["signature"] = base64.b64encode(bytes(signature)).decode()
    lines[number - 1] = rfc8785.dumps(head) + b"\n"
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("head.signature_invalid", number, 299)


def test_attack_head_with_altered_root(server_key: crypto.SigningKey) -> None:
    """Changing a head's root without the key breaks its signature."""
    lines = build_ledger(200, 100, server_key).lines()
    number = line_of_head(lines, 100)
    head = json.loads(lines[number - 1])
    head["root_hash"] = base64.b64encode(EMPTY_ROOT).decode()
    lines[number - 1] = rfc8785.dumps(head) + b"\n"
    assert problem_of(lines, server_key)["problem"] == "head.signature_invalid"


def test_attack_history_rewritten_and_resigned_with_another_key(
    server_key: crypto.SigningKey, attacker_key: crypto.SigningKey
) -> None:
    """Replacing an entry and re-signing every later head without the server key fails at the first such head."""
    ledger = build_ledger(500, 100, server_key)
    rewritten = list(ledger.entries)
    rewritten[250] = make_entry(250, type="packet.recalled")
    forged = sign_heads(rewritten, 100, attacker_key, key_id=server_key.key_id)
    heads = [h for h in ledger.heads if h.size <= 250] + [h for h in forged if h.size > 250]
    lines = Ledger(rewritten, heads, server_key.key_id).lines()
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("head.signature_invalid", line_of_head(lines, 300), 299)


def test_attack_whole_export_resigned_under_the_attackers_key_id(
    server_key: crypto.SigningKey, attacker_key: crypto.SigningKey
) -> None:
    """An export made and signed entirely by another key is refused at the header."""
    lines = build_ledger(200, 100, attacker_key).lines()
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"]) == ("export.key_mismatch", 1)


def test_attack_head_naming_another_key(server_key: crypto.SigningKey, attacker_key: crypto.SigningKey) -> None:
    """A head that names a key other than the header's server key is refused."""
    ledger = build_ledger(200, 100, server_key)
    ledger.heads[1] = sign_tree_head(200, ledger.heads[1].root_hash, TIME, attacker_key)
    lines = ledger.lines()
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"]) == ("head.key_id_mismatch", line_of_head(lines, 200))


def test_attack_head_moved_before_its_entries(server_key: crypto.SigningKey) -> None:
    """A head placed anywhere but right after the entry completing its size is misplaced."""
    lines = build_ledger(300, 100, server_key).lines()
    number = line_of_head(lines, 200)
    head = lines.pop(number - 1)
    lines.insert(number - 5, head)
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("head.misplaced", number - 4, 199)


def test_attack_old_head_replayed_later(server_key: crypto.SigningKey) -> None:
    """An older head repeated after a newer one is out of order."""
    lines = build_ledger(300, 100, server_key).lines()
    number = line_of_head(lines, 200)
    lines.insert(number, lines[line_of_head(lines, 100) - 1])
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("head.out_of_order", number + 1, 99)


def test_attack_malformed_head(server_key: crypto.SigningKey) -> None:
    """A head line missing a field is refused as malformed."""
    lines = build_ledger(200, 100, server_key).lines()
    number = line_of_head(lines, 100)
    head = json.loads(lines[number - 1])
    del head["timestamp"]
    lines[number - 1] = json.dumps(head).encode()
    assert problem_of(lines, server_key)["problem"] == "head.malformed"


# --------------------------------------------------------------------------- the record log


def test_attack_log_missing_an_entry(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """An exported entry absent from the record log is reported with its seq and export line."""
    ledger = build_ledger(600, 100, server_key)
    log = write_log(tmp_path / "record.jsonl", ledger.entries, skip=432)
    lines = ledger.lines()
    found = problem_of(lines, server_key, log_path=log)
    assert (found["problem"], found["line"], found["seq"]) == ("log.entry_missing", line_of_entry(lines, 432), 432)
    assert (found["source"], found["missing_seqs"], found["different_count"]) == ("log", [432], 0)


def test_attack_log_with_different_bytes(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A record log entry whose bytes differ from the export's is reported with its seq."""
    ledger = build_ledger(600, 100, server_key)
    log = write_log(tmp_path / "record.jsonl", ledger.entries, alter=77)
    lines = ledger.lines()
    found = problem_of(lines, server_key, log_path=log)
    assert (found["problem"], found["line"], found["seq"]) == ("log.entry_different", line_of_entry(lines, 77), 77)
    assert found["different_seqs"] == [77]


def test_attack_log_with_two_versions_of_one_entry(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A log holding two different entries for one seq is itself inconsistent."""
    ledger = build_ledger(20, 10, server_key)
    log = write_log(tmp_path / "record.jsonl", ledger.entries)
    with log.open("a") as out:
        out.write(json.dumps({"seq": 4, "ledger_entry": base64.b64encode(make_entry(4, type="x")).decode()}) + "\n")
    found = problem_of(ledger.lines(), server_key, log_path=log)
    assert (found["problem"], found["seq"], found["line"]) == ("log.conflict", 4, 22)


def test_a_rotated_log_is_checked_as_its_pieces(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A log cut in two by rotation verifies when both pieces are given; with only the newer piece,
    the first entry of the older one is missing; the same seq with other bytes in the other piece
    is a conflict naming both files."""
    ledger = build_ledger(40, 10, server_key)
    older = write_log(tmp_path / "record.jsonl.1", ledger.entries[:25])
    newer = write_log(tmp_path / "record.jsonl", ledger.entries[25:], first_seq=25)
    report = verify_export(ledger.lines(), server_key.public_bytes, log_path=[older, newer])
    assert report.log_entries_checked == 40
    found = problem_of(ledger.lines(), server_key, log_path=[newer])
    assert (found["problem"], found["seq"]) == ("log.entry_missing", 0)
    with newer.open("a") as out:
        out.write(json.dumps({"seq": 3, "ledger_entry": base64.b64encode(make_entry(3, type="x")).decode()}) + "\n")
    found = problem_of(ledger.lines(), server_key, log_path=[older, newer])
    assert (found["problem"], found["seq"], found["file"], found["other_file"]) == (
        "log.conflict", 3, str(newer), str(older)
    )


def test_malformed_or_unreadable_log(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A log line claiming a ledger entry must be readable, and the log file must exist."""
    lines = build_ledger(10, 5, server_key).lines()
    log = tmp_path / "record.jsonl"
    log.write_text('{"event": "x"}\n{"seq": 1, "ledger_entry": "!!"}\n')
    found = problem_of(lines, server_key, log_path=log)
    assert (found["problem"], found["line"], found["source"]) == ("log.malformed", 2, "log")
    assert problem_of(lines, server_key, log_path=tmp_path / "missing.jsonl")["problem"] == "log.unreadable"


# --------------------------------------------------------------------------- the export's frame


def test_header_problems(server_key: crypto.SigningKey, attacker_key: crypto.SigningKey) -> None:
    """An empty export, a wrong format, or a key other than the export's is refused at the header."""
    lines = build_ledger(10, 5, server_key).lines()
    assert problem_of([], server_key)["problem"] == "export.empty"
    assert problem_of([b"{}\n", *lines[1:]], server_key)["problem"] == "export.bad_header"
    assert problem_of(lines, attacker_key)["problem"] == "export.key_mismatch"
    with pytest.raises(LedgerProofError):
        verify_export(lines, b"not a key")


def test_unreadable_export(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A missing export file is reported as unreadable, not as a crash."""
    with pytest.raises(LedgerProofError) as caught:
        verify_export(tmp_path / "missing.jsonl", server_key.public_bytes)
    assert caught.value.extras["problem"] == "export.unreadable"


def test_unknown_line_kind_is_refused(server_key: crypto.SigningKey) -> None:
    """A line of an unknown kind is malformed, at its own line."""
    lines = build_ledger(10, 5, server_key).lines()
    lines.insert(3, b'{"kind":"comment"}\n')
    assert (problem_of(lines, server_key)["problem"], problem_of(lines, server_key)["line"]) == (
        "export.malformed_line", 4
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_single_byte_change_to_a_value_after_the_header_is_caught(
    server_key: crypto.SigningKey, data: st.DataObject
) -> None:
    """Changing any one byte of any entry, head or end line of a fully signed export is detected,
    unless the line still reads as the very same JSON value: a respelling of the line (here, the
    newline turned into trailing whitespace), which the verifier accepts by design (see
    test_lines_in_other_valid_json_shapes_still_verify). Base64 has one spelling per value, so a
    change to a hash's or signature's padding bits is a changed value."""
    lines = build_ledger(40, 8, server_key).lines()
    number = data.draw(st.integers(2, len(lines)))
    original = lines[number - 1]
    raw = bytearray(original)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.sampled_from(b'"{}:,0189AZaz+/=\n ').filter(lambda b: b != raw[position]))
    lines[number - 1] = bytes(raw)
    try:
        respelled = json.loads(bytes(raw)) == json.loads(original)
    except ValueError:
        respelled = False
    if respelled:
        assert verify_export(lines, server_key.public_bytes).entries == 40
    else:
        with pytest.raises(LedgerProofError):
            verify_export(lines, server_key.public_bytes)


@pytest.mark.parametrize("field", ["signature", "root_hash"])
def test_a_head_in_non_canonical_base64_is_refused(server_key: crypto.SigningKey, field: str) -> None:
    """Setting the padding bits of a head's last base64 character keeps the decoded bytes but changes
    the text: refused as a malformed head, not accepted as the same head."""
    lines = build_ledger(16, 8, server_key).lines()
    number = line_of_head(lines, 16)
    head = json.loads(lines[number - 1])
    text = head[field]
    assert text.endswith("=")
    body = text.rstrip("=")
    last = body[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    head[field] = body[:-1] + alphabet[alphabet.index(last) | 1] + text[len(body):]
    assert base64.b64decode(head[field]) == base64.b64decode(text)
    lines[number - 1] = (json.dumps(head, separators=(",", ":"), sort_keys=True) + "\n").encode()
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"]) == ("head.malformed", number)


# --------------------------------------------------------------------------- canonical fast path

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8))
def test_fast_canonical_check_agrees_with_rfc8785(value: dict[str, Any]) -> None:
    """The fast check accepts exactly the RFC 8785 bytes, and refuses other spellings of the same value."""
    try:
        canonical = bytes(rfc8785.dumps(value))
    except ValueError:  # e.g. a lone surrogate: no canonical form, so every spelling is refused
        canonical = None
    spellings = {
        json.dumps(value).encode(),
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
    }
    if canonical is not None:
        spellings.add(canonical)
        assert _canonical_entry(canonical, 2, 0).keys() == value.keys()
    for spelling in spellings - {canonical}:
        with pytest.raises(LedgerProofError):
            _canonical_entry(spelling, 2, 0)


@pytest.mark.parametrize(
    ("number", "canonical"),
    [(b"9007199254740991", True), (b"9007199254740992", True), (b"9007199254740993", False),
     (b"10000000000000000", True), (b"1e16", False), (b"1.0", False), (b"0.5", True), (b"-0", False)],
)
def test_numbers_are_judged_as_rfc8785_doubles(number: bytes, canonical: bool) -> None:
    """Numbers are IEEE doubles (RFC 8785 section 3.2.2.3): beyond 2**53 only a double's own form passes."""
    entry = b'{"n":' + number + b"}"
    if canonical:
        _canonical_entry(entry, 2, 0)
    else:
        with pytest.raises(LedgerProofError, match="canonical"):
            _canonical_entry(entry, 2, 0)


# --------------------------------------------------------------------------- strict, and the seq under a head


def signed_ledger(entries: list[bytes], every: int, key: crypto.SigningKey, *, upto: int | None = None) -> list[bytes]:
    """The export of these exact entry bytes with heads the server signed over them."""
    return Ledger(entries, sign_heads(entries, every, key, upto=upto), key.key_id).lines()


def respelled(seq: int) -> bytes:
    """Entry ``seq`` as valid JSON of the same value, not in canonical form (an escaped letter)."""
    loose = make_entry(seq).replace(b"packet.delivered", b"packet.deliv\\u0065red")
    assert loose != make_entry(seq) and json.loads(loose) == json.loads(make_entry(seq))
    return loose


def test_signed_non_canonical_entry_passes_by_default_but_not_strict(server_key: crypto.SigningKey) -> None:
    """A non-canonical entry the server itself signed is covered by its head by default; --strict refuses it."""
    entries = [make_entry(seq) for seq in range(300)]
    entries[42] = respelled(42)
    lines = signed_ledger(entries, 100, server_key)
    assert verify_export(lines, server_key.public_bytes).entries == 300
    found = problem_of(lines, server_key, strict=True)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.not_canonical", line_of_entry(lines, 42), 42)


def test_non_canonical_entry_in_the_unsigned_tail_fails_by_default(server_key: crypto.SigningKey) -> None:
    """Entries after the last head are covered by nothing else, so their canonical form is always checked."""
    entries = [make_entry(seq) for seq in range(310)]
    entries[305] = respelled(305)
    lines = signed_ledger(entries, 100, server_key, upto=300)
    found = problem_of(lines, server_key)
    assert (found["problem"], found["line"], found["seq"]) == ("entry.not_canonical", line_of_entry(lines, 305), 305)


def test_a_tail_entry_problem_is_reported_before_a_later_one(server_key: crypto.SigningKey) -> None:
    """The deferred check keeps the first problem first: a bad tail entry before a gap, a cut or a bad end line."""
    entries = [make_entry(seq) for seq in range(320)]
    entries[303] = respelled(303)
    lines = signed_ledger(entries, 100, server_key, upto=300)
    expected = ("entry.not_canonical", line_of_entry(lines, 303), 303)
    for broken in (
        lines[:line_of_entry(lines, 310) - 1] + lines[line_of_entry(lines, 310):],  # a gap at 310
        lines[:line_of_entry(lines, 315)],  # cut short
        [*lines[:-1], b'{"entries":1,"heads":3,"kind":"end","signed_size":300}\n'],  # counts disagree
    ):
        found = problem_of(broken, server_key)
        assert (found["problem"], found["line"], found["seq"]) == expected


def test_entry_under_a_head_whose_seq_cannot_be_read_is_still_checked(server_key: crypto.SigningKey) -> None:
    """Signed bytes that are not JSON, or lack a top-level seq, are reported at the entry even under a head."""
    for bad, problem in (
        (b"\xff\xfe", "entry.not_json"),
        (make_entry(7)[:-1], "entry.not_json"),  # the closing brace is missing
        (make_entry(7).replace(b'"seq":7', b'"seq":"7"'), "entry.missing_field"),
        (make_entry(7, details={"seq": 7}).replace(b',"seq":7,', b","), "entry.missing_field"),
    ):
        entries = [make_entry(seq) for seq in range(20)]
        entries[7] = bad
        lines = signed_ledger(entries, 10, server_key)
        found = problem_of(lines, server_key)
        assert (found["problem"], found["line"], found["seq"]) == (problem, line_of_entry(lines, 7), 7)


def test_deferred_entries_beyond_the_cap_are_checked_at_once(
    server_key: crypto.SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the memory cap the deferred entries are checked in full without waiting: stricter, never laxer."""
    entries = [make_entry(seq) for seq in range(300)]
    entries[42] = respelled(42)
    lines = signed_ledger(entries, 100, server_key)
    monkeypatch.setattr(verify_module, "_DEFERRED_BYTES", 4096)
    found = problem_of(lines, server_key)
    assert (found["problem"], found["seq"]) == ("entry.not_canonical", 42)


def test_signed_entry_whose_nested_seq_matches_but_top_level_does_not(server_key: crypto.SigningKey) -> None:
    """A "seq" inside details or actor equal to the line's seq does not hide a wrong top-level seq."""
    for changes in (
        {"details": {"seq": 5}},
        {"actor": {"member": "m", "seq": 5}},
        {"zone": {"seq": 5, "x": 1}},  # sorts after "seq": the last "seq" in the bytes is nested
        {"zone": {"seq": 5}},
    ):
        entries = [make_entry(seq) for seq in range(10)]
        entries[5] = make_entry(6, **changes)  # top-level seq 6 where seq 5 belongs
        lines = signed_ledger(entries, 10, server_key)
        found = problem_of(lines, server_key)
        assert (found["problem"], found["line"], found["entry_seq"]) == (
            "entry.seq_mismatch", line_of_entry(lines, 5), 6
        )


@pytest.mark.parametrize(
    ("entry", "seq", "read"),
    [
        (b'{"seq":5,"t":1}', 5, True),
        (b'{"a":"x\\\\","seq":5,"t":"y"}', 5, True),  # a string ending in an escaped backslash before it
        (b'{"seq":3,"z\\"seq":5,"zz":1}', 5, False),  # a key ending in a quote and seq, after the real one
        (b'{"seq":3,"z":{"seq":5,"b":1},"zz":1}', 5, False),  # nested after the top-level seq
        (b'{"a":{"seq":5,"b":1},"t":1}', 5, False),  # nested, no top-level seq
        (b'[{"seq":5,"b":1}]', 5, False),  # not an object
        (b'{"seq":5,"seq":6,"t":1}', 5, False),  # repeated key: json.loads takes the last
        (b'{"seq":5,"seq":6,"t":1}', 6, True),
        (b'{"seq":50,"t":1}', 5, False),
        (b'{"seq":5.0,"t":1}', 5, False),
        (b'{"seq":5,"t":"}"}', 5, False),  # not sure: full check
        (b'{"t":1,"seq":5}', 5, False),  # seq last: full check
    ],
)
def test_seq_reader_edge_cases(entry: bytes, seq: int, read: bool) -> None:
    """The byte search says yes only when the top-level seq is provably the one asked for."""
    assert _seq_is(entry, seq) is read
    if read:
        assert json.loads(entry)["seq"] == seq


json_keys = st.sampled_from(["seq", "a", "details", "sub", "zone", 'a"seq', 'seq"', '"seq":']) | st.text(max_size=6)
tricky_text = st.sampled_from(['"seq":5,', "}", '\\"seq":', ',"seq":0}', "seq"]) | st.text(max_size=10)
nested_values = st.recursive(
    st.none() | st.booleans() | st.integers(0, 12) | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=10,
)


@given(
    st.integers(0, 12),
    st.dictionaries(json_keys, nested_values, max_size=5),
    st.sampled_from(["packet.submitted", "packet.opened"]),
    st.randoms(use_true_random=False),
)
def test_seq_reader_finds_the_top_level_seq_among_nested_ones(
    seq: int, details: dict[str, Any], event_type: str, rng: Any
) -> None:
    """The byte search reads the top-level seq exactly, whatever "seq" keys or text lie nested around it."""
    event: dict[str, Any] = {
        "seq": seq, "time": TIME, "type": event_type, "actor": {"seq": seq + 1}, "details": details
    }
    canonical = bytes(rfc8785.dumps(event))
    assert _seq_is(canonical, seq)
    assert not _seq_is(canonical, seq + 1) and not _seq_is(canonical, seq * 10 + 1)
    # Never a wrong answer, for any spelling of any object, the top-level seq present or not.
    items = list({**details, **event}.items()) + list(details.items())
    rng.shuffle(items)
    for value in (dict(items), details, {**details, "seq": str(seq)}, {**details, "zzz": {"seq": seq, "a": 1}}):
        for spelling in (
            bytes(rfc8785.dumps(value)),
            json.dumps(value, separators=(",", ":")).encode(),
            json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(),
        ):
            for candidate in range(13):
                if _seq_is(spelling, candidate):
                    top = json.loads(spelling).get("seq")
                    assert type(top) is int and top == candidate, (spelling, candidate)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(json_keys, nested_values, max_size=4), min_size=6, max_size=6), st.data())
def test_exports_with_nested_seq_keys_verify_and_mismatches_are_caught(
    server_key: crypto.SigningKey, details: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Signed entries with nested "seq" keys verify in both modes; a wrong top-level seq fails in both."""
    entries = [
        make_entry(seq, details={**extra, "seq": data.draw(st.integers(0, 6))}) for seq, extra in enumerate(details)
    ]
    lines = signed_ledger(entries, 3, server_key)
    assert verify_export(lines, server_key.public_bytes).entries == 6
    assert verify_export(lines, server_key.public_bytes, strict=True).entries == 6
    wrong = data.draw(st.integers(0, 5))
    entries[wrong] = make_entry(wrong + 1, details={**details[wrong], "seq": wrong})
    lines = signed_ledger(entries, 3, server_key)
    for strict in (False, True):
        found = problem_of(lines, server_key, strict=strict)
        assert (found["problem"], found["seq"], found["entry_seq"]) == ("entry.seq_mismatch", wrong, wrong + 1)


# --------------------------------------------------------------------------- heads and the writer


def test_tree_head_signing_bytes_are_pinned() -> None:
    """The signed message is RFC 8785 JSON of type, size, root and time, byte for byte."""
    assert tree_head_signing_bytes(0, EMPTY_ROOT, "2025-01-31T09:30:00Z") == (
        b'{"root_hash":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","size":0,'
        b'"timestamp":"2025-01-31T09:30:00Z","type":"safeguarding-exchange/tree-head/v1"}'
    )


def test_tree_head_json_round_trip_and_verification(server_key: crypto.SigningKey) -> None:
    """A signed head survives its JSON form and verifies under the server key only."""
    head = sign_tree_head(3, leaf_hash(b"x"), TIME, server_key)
    again = TreeHead.from_json(json.loads(json.dumps(head.to_json())))
    assert again == head
    verify_tree_head(again, server_key.public_bytes)
    with pytest.raises(LedgerProofError):
        verify_tree_head(again, crypto.SigningKey.generate().public_bytes)
    with pytest.raises(LedgerProofError):
        verify_tree_head(replace(again, key_id=crypto.SigningKey.generate().key_id), server_key.public_bytes)


@pytest.mark.parametrize(
    "change",
    [
        {"size": -1}, {"size": True}, {"root_hash": "AAAA"}, {"root_hash": "!"}, {"timestamp": "2025-01-31 09:30"},
        {"timestamp": "2025-02-30T09:30:00Z"}, {"timestamp": "2025-01-31T09:30:00+01:00"}, {"key_id": ""},
        {"signature": "AAAA"}, {"extra": 1},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_tree_head_from_json_refuses_malformed_fields(server_key: crypto.SigningKey, change: dict[str, Any]) -> None:
    """Every malformed tree head field is refused with a LedgerProofError."""
    head = sign_tree_head(3, leaf_hash(b"x"), TIME, server_key).to_json()
    with pytest.raises(LedgerProofError):
        TreeHead.from_json({**head, **change})


def test_format_timestamp_is_rfc3339_utc() -> None:
    """Tree head times are UTC with milliseconds and a Z; naive datetimes are refused."""
    from datetime import datetime, timedelta, timezone

    moment = datetime(2025, 1, 31, 10, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2025-01-31T09:30:00.123Z"
    with pytest.raises(LedgerProofError):
        format_timestamp(datetime(2025, 1, 31))  # a naive time is the point


def test_writer_refuses_heads_out_of_order_or_beyond_the_entries(server_key: crypto.SigningKey) -> None:
    """The writer will not emit heads out of size order or larger than the export."""
    ledger = build_ledger(20, 5, server_key)
    with pytest.raises(LedgerProofError, match="out of order"):
        list(export_lines(ledger.entries, ledger.heads[::-1], server_key_id=ledger.key_id, exported_at=TIME))
    with pytest.raises(LedgerProofError, match="only 10 entries"):
        list(export_lines(ledger.entries[:10], ledger.heads, server_key_id=ledger.key_id, exported_at=TIME))


def test_writer_failure_leaves_no_file(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A failed write_export leaves neither the target nor a partial file."""
    ledger = build_ledger(20, 5, server_key)
    with pytest.raises(LedgerProofError):
        write_export(
            tmp_path / "x.jsonl", ledger.entries[:3], ledger.heads, server_key_id=ledger.key_id, exported_at=TIME
        )
    assert list(tmp_path.iterdir()) == []
