"""The verifier's second core: a file verified in two processes gets exactly the single pass's verdict."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange import crypto
from exchange.errors import LedgerProofError
from exchange.ledger import (
    export_lines,
    leaf_hash,
    root_hash,
    sign_tree_head,
    verify_export,
    verify_lines,
    verify_split,
)
from exchange.ledger import verify as verify_module
from exchange.ledger.export import end_line
from exchange.ledger.tree import Frontier
from exchange.record import Record

TIME = "2025-03-14T09:26:53.589Z"
KEY = crypto.SigningKey.generate()
OTHER_KEY = crypto.SigningKey.generate()


def make_entry(seq: int, **changes: Any) -> bytes:
    """A realistic ledger entry: codes and ids, never content."""
    event: dict[str, Any] = {
        "seq": seq,
        "time": TIME,
        "type": "packet.delivered",
        "actor": f"member:{seq % 97:04d}-northshire",
        "packet_id": f"pkt_{seq:012d}",
    }
    event.update(changes)
    return bytes(rfc8785.dumps(event))


def export_of(entries: list[bytes], every: int, signed: int, key: crypto.SigningKey = KEY) -> list[bytes]:
    """The writer's lines for ``entries`` with a head every ``every`` entries up to ``signed``."""
    frontier, heads = Frontier(), []
    for size, entry in enumerate(entries, start=1):
        frontier.append(leaf_hash(entry))
        if size % every == 0 and size <= signed:
            heads.append(sign_tree_head(size, frontier.root(), TIME, key))
    return list(export_lines(entries, heads, server_key_id=KEY.key_id, exported_at=TIME))


@contextmanager
def split_at(share: float) -> Iterator[list[bool]]:
    """Verify every file in two processes, the worker taking ``share`` of it; yield the hand-overs' outcomes."""
    outcomes: list[bool] = []
    hand_over = verify_module._Verifier.hand_over

    def watched(verifier: Any, line: int) -> bool:
        outcome = hand_over(verifier, line)
        outcomes.append(outcome)
        return outcome

    with (
        mock.patch.object(verify_split, "_PARALLEL_MIN_BYTES", 0),
        mock.patch.object(verify_split, "_WORKER_SHARE", share),
        mock.patch.object(verify_module._Verifier, "hand_over", watched),
    ):
        yield outcomes


def verdict(path: Path, **options: Any) -> tuple[str, Any, list[int]]:
    """("ok", report without its timing) or ("problem", extras and detail), with the progress reported."""
    seen: list[int] = []
    try:
        report = verify_export(path, KEY.public_bytes, progress=seen.append, progress_every=7, **options)
    except LedgerProofError as exc:
        return "problem", {**exc.extras, "detail": exc.detail}, seen
    return "ok", {k: v for k, v in asdict(report).items() if k != "elapsed_seconds"}, seen


def single_pass_verdict(path: Path, **options: Any) -> tuple[str, Any, list[int]]:
    """The verdict of the one-process pass over the same file."""
    with mock.patch.object(verify_split, "_PARALLEL_MIN_BYTES", 2**62):
        return verdict(path, **options)


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def respelled(seq: int) -> bytes:
    """Entry ``seq`` as valid JSON with its seq readable, but not in canonical form (a space)."""
    return make_entry(seq).replace(b'"actor":', b'"actor": ')


def parsed(line: bytes) -> dict[str, Any]:
    """A line's JSON object, or {} when an earlier tamper left it something else."""
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# Ways to tamper with an export's lines, each at a drawn place.
def change_byte(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    line = lines[at]
    where = data.draw(st.integers(0, len(line) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != line[where]))
    return [*lines[:at], line[:where] + bytes([byte]) + line[where + 1 :], *lines[at + 1 :]]


def delete_line(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    return lines[:at] + lines[at + 1 :]


def duplicate_line(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    return [*lines[: at + 1], lines[at], *lines[at + 1 :]]


def swap_lines(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    other = data.draw(st.integers(0, len(lines) - 1))
    out = list(lines)
    out[at], out[other] = out[other], out[at]
    return out


def cut_after(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    return lines[: at + 1]


def insert_line(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    extra = data.draw(st.sampled_from([b"\n", b"{}\n", b"not json\n", b'{"kind":"entry"}\n', lines[-1]]))
    return [*lines[:at], extra, *lines[at:]]


def respell_entry(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    value = parsed(lines[at])
    if value.get("kind") != "entry" or type(value.get("seq")) is not int:
        return lines
    seq = value["seq"]
    entry = data.draw(st.sampled_from([respelled(seq), make_entry(seq + 1), make_entry(seq)[:-1], b"[]"]))
    line = b'{"entry":"%s","kind":"entry","seq":%d}\n' % (base64.b64encode(entry), seq)
    return [*lines[:at], line, *lines[at + 1 :]]


def respell_line(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    """The same line in another valid JSON spelling (off the fast path, still valid)."""
    if not parsed(lines[at]):
        return lines
    line = (json.dumps(parsed(lines[at]), indent=None) + "\n").encode("utf-8")
    return [*lines[:at], line, *lines[at + 1 :]]


def resign_head(lines: list[bytes], at: int, data: st.DataObject) -> list[bytes]:
    """A head re-signed by another key, or with another root, or forked."""
    value = parsed(lines[at])
    if value.get("kind") != "head" or not isinstance(value.get("root_hash"), str) or type(value.get("size")) is not int:
        return lines
    try:
        root = base64.b64decode(value["root_hash"], validate=True)
    except ValueError:
        return lines
    changed = data.draw(st.sampled_from(["key", "root", "fork"]))
    if changed == "key":
        head = sign_tree_head(value["size"], root, TIME, OTHER_KEY)
    else:
        head = sign_tree_head(value["size"], leaf_hash(root), TIME, KEY)
    line = bytes(rfc8785.dumps({"kind": "head", **head.to_json()})) + b"\n"
    if changed == "fork":
        return [*lines[: at + 1], line, *lines[at + 1 :]]
    return [*lines[:at], line, *lines[at + 1 :]]


TAMPERS = [
    change_byte, delete_line, duplicate_line, swap_lines, cut_after, insert_line, respell_entry, respell_line,
    resign_head,
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(0, 120),
    every=st.integers(1, 40),
    unsigned=st.integers(0, 30),
    share=st.floats(0.02, 0.98),
    strict=st.booleans(),
    tampers=st.lists(st.sampled_from(TAMPERS), max_size=3),
    data=st.data(),
)
def test_split_verdict_is_the_single_pass_verdict(
    tmp_path: Path,
    count: int,
    every: int,
    unsigned: int,
    share: float,
    strict: bool,
    tampers: list[Any],
    data: st.DataObject,
) -> None:
    """On random exports, honest or tampered, the two-process verdict (report, or problem and line) is one pass's."""
    entries = [make_entry(seq) for seq in range(count)]
    lines = export_of(entries, every, max(count - unsigned, 0))
    for tamper in tampers:
        if not lines:  # deleted or cut to nothing: no line left to tamper with
            break
        lines = tamper(lines, data.draw(st.integers(0, len(lines) - 1)), data)
    path = write(tmp_path / "export.jsonl", lines)
    expected = single_pass_verdict(path, strict=strict)
    with split_at(share) as outcomes:
        assert verdict(path, strict=strict) == expected
    if not tampers and outcomes:
        assert outcomes == [True], "an honest export is taken over from the worker"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    share=st.floats(0.05, 0.95),
    skip=st.none() | st.integers(0, 59),
    alter=st.none() | st.integers(0, 59),
)
def test_split_verdict_with_a_record_log_is_the_single_pass_verdict(
    tmp_path: Path, share: float, skip: int | None, alter: int | None
) -> None:
    """With a record log, missing and different entries on either side of the split are reported as by one pass."""
    entries = [make_entry(seq) for seq in range(60)]
    path = write(tmp_path / "export.jsonl", export_of(entries, 10, 60))
    log = tmp_path / "record.log"
    log.unlink(missing_ok=True)
    record = Record(log, console=False)
    for seq, entry in enumerate(entries):
        if seq != skip:
            data = make_entry(seq, type="packet.opened") if seq == alter else entry
            record.log.info("ledger.appended", seq=seq, ledger_entry=base64.b64encode(data).decode("ascii"))
    record.close()
    expected = single_pass_verdict(path, log_path=log)
    with split_at(share):
        assert verdict(path, log_path=log) == expected


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_an_honest_file_is_verified_in_two_processes(tmp_path: Path, share: float) -> None:
    """A clean export is taken over from the worker, and its report is the single pass's."""
    entries = [make_entry(seq) for seq in range(1000)]
    path = write(tmp_path / "export.jsonl", export_of(entries, 100, 990))
    with split_at(share) as outcomes:
        found = verdict(path)
    assert outcomes == [True]
    assert found == single_pass_verdict(path)
    assert found[1]["root_hash"] == root_hash([leaf_hash(e) for e in entries])


def test_cap_reached_across_the_split_falls_back_to_the_single_pass(tmp_path: Path) -> None:
    """When the deferred entries would reach the cap across the split, the worker's summary is dropped."""
    entries = [make_entry(seq) for seq in range(200)]
    entries[150] = respelled(150)
    path = write(tmp_path / "export.jsonl", export_of(entries, 200, 200))
    cap = sum(len(entry) + verify_lines._DEFERRED_OVERHEAD for entry in entries[:160])  # reached at seq 159
    with mock.patch.object(verify_module, "_DEFERRED_BYTES", cap):
        expected = single_pass_verdict(path)
        with split_at(0.5) as outcomes:
            found = verdict(path)
    assert outcomes == [False]
    assert found == expected
    assert (found[0], found[1]["problem"], found[1]["seq"]) == ("problem", "entry.not_canonical", 150)


def test_perfect_subtrees_fold_to_the_same_root() -> None:
    """Runs of leaves folded as perfect subtrees, split anywhere, give the root of the leaves appended one by one."""
    leaves = [leaf_hash(b"%d" % i) for i in range(300)]
    for start in (0, 1, 5, 64, 100, 255, 299):
        verifier = verify_module._Verifier(KEY.public_bytes, KEY.key_id, None, None, 1, False)
        summary = verify_split._Summary(
            [
                verify_split._Run(0, verify_split._perfect_subtrees(leaves[:start], 0)),
                verify_split._Run(start, verify_split._perfect_subtrees(leaves[start:], start)),
                verify_split._Line(1, end_line(len(leaves), 0, 0)),
            ],
            0, [], [], 0, 0,
        )
        assert verifier.apply(summary, 0) == list(range(1, 301))
        assert verifier.root() == root_hash(leaves)
