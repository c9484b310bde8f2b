"""The record is crash-consistent, and a record log or store that cannot be written makes the server
read-only (503 with a reason, reads and /health still answered), never a 500 (issue 8, item 3)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exchange import crypto, httpsig
from exchange.client import ApiError
from exchange.domain import Event
from exchange.errors import LedgerProofError
from exchange.examples import referral
from exchange.ledger.verify import verify_export
from exchange.record import COMMITTED_EVENT, Record
from exchange.web.app import build_app
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, make_config, start_deployment
from tests.test_ledger_verify import Ledger, sign_heads

FULL = Path("/dev/full")  # every write fails with ENOSPC: a full disk without filling one


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Deployment]:
    """The demo deployment, read-only for a fifth of a second after each failure (not five)."""
    running, close = await start_deployment(tmp_path, read_only_retry_seconds=0.2)
    try:
        yield running
    finally:
        await close()


def _swap_log_for(deployment: Deployment, target: Path | None) -> Path:
    """Move the live record log aside (as rotation does) and put ``target`` at its path (a symlink),
    or a directory when ``target`` is None; the server reopens the path at its next line."""
    live = deployment.config.record_log_path
    aside = live.with_name(live.name + ".before")
    live.rename(aside)
    if target is None:
        live.mkdir()
    else:
        live.symlink_to(target)
    return aside


def _restore_log(deployment: Deployment) -> None:
    live = deployment.config.record_log_path
    if live.is_symlink() or live.is_file():
        live.unlink()
    else:
        live.rmdir()


async def _export(deployment: Deployment, tmp_path: Path) -> Path:
    async with deployment.client("auditor") as auditor:
        for _ in range(100):
            head = await auditor.request("GET", "/v1/ledger/head")
            if head["head"]["size"] >= head["ledger_size"]:
                break
            await asyncio.sleep(0.05)
        text = await auditor.request_text("GET", "/v1/ledger/export")
    export = tmp_path / "ledger.jsonl"
    export.write_text(text)
    return export


async def _health(deployment: Deployment) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(deployment.url + "/health") as response:
        return response.status, json.loads(await response.text())


async def test_a_full_disk_under_the_record_log_makes_the_server_read_only(quick: Deployment) -> None:
    """Finding "with a full disk every request, /health included, is a 500": a send is refused with
    503 read_only.disk_full and Retry-After, nothing is committed, and reads and /health still answer."""
    duty = quick.credentials("csc-duty").member_id or ""
    async with quick.client("school-dsl") as dsl:
        before = len(await dsl.outbox())
        sealed = await dsl.prepare(referral([duty]))
        _swap_log_for(quick, FULL)
        with pytest.raises(ApiError) as refused:
            await dsl.submit(sealed)
        assert (refused.value.http_status, refused.value.problem_code) == (503, "read_only.disk_full")
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        assert refused.value.problem["cause"] == "record_log"
        assert len(await dsl.outbox()) == before  # nothing was committed
        assert (await dsl.me())["id"] == quick.credentials("school-dsl").member_id
    status, health = await _health(quick)
    assert status == 200
    assert health["status"] == "read_only"
    assert (health["read_only"]["cause"], health["read_only"]["code"]) == ("record_log", "read_only.disk_full")
    assert health["read_only"]["error"] == "ENOSPC"


async def test_the_retry_of_a_refused_change_succeeds_once_the_log_is_writable(quick: Deployment) -> None:
    """Finding "a committed change answered with a plain 500, and the client's retry gets 409": the
    refused submission committed nothing, so the same sealed packet sent again is accepted once the
    record log can be written again, and /health is "ok" again."""
    duty = quick.credentials("csc-duty").member_id or ""
    async with quick.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([duty]))
        _swap_log_for(quick, FULL)
        with pytest.raises(ApiError) as refused:
            await dsl.submit(sealed)
        assert refused.value.http_status == 503
        _restore_log(quick)
        await asyncio.sleep(0.25)  # the read-only retry interval of this deployment
        sent = await dsl.submit(sealed)
    assert sent["status"] == "delivered"
    status, health = await _health(quick)
    assert (status, health["status"]) == (200, "ok")
    assert "read_only" not in health


async def test_an_unwritable_record_log_path_is_read_only_with_its_own_code(quick: Deployment) -> None:
    """A record log path that cannot be opened for writing (here a directory) refuses changes with
    503 read_only.record_log; reads go on."""
    duty = quick.credentials("csc-duty").member_id or ""
    async with quick.client("school-dsl") as dsl:
        _swap_log_for(quick, None)
        with pytest.raises(ApiError) as refused:
            await dsl.send(referral([duty]))
        assert (refused.value.http_status, refused.value.problem_code) == (503, "read_only.record_log")
        assert refused.value.problem["detail"].endswith("Nothing was changed; try again later.")
        assert str(quick.config.record_log_path) not in json.dumps(refused.value.problem)
        await dsl.outbox()
    _status, health = await _health(quick)
    assert (health["status"], health["read_only"]["error"]) == ("read_only", "EISDIR")


async def test_a_read_only_server_refuses_at_once_until_the_retry_is_due(tmp_path: Path) -> None:
    """While read-only, a change is refused straight away (no work done) until Retry-After has
    passed; the refusal says how long to wait."""
    deployment, close = await start_deployment(tmp_path, read_only_retry_seconds=30)
    try:
        duty = deployment.credentials("csc-duty").member_id or ""
        async with deployment.client("school-dsl") as dsl:
            _swap_log_for(deployment, FULL)
            with pytest.raises(ApiError) as first:
                await dsl.send(referral([duty]))
            _restore_log(deployment)  # writable again, but no retry is due yet
            with pytest.raises(ApiError) as second:
                await dsl.send(referral([duty]))
        assert first.value.problem_code == second.value.problem_code == "read_only.disk_full"
        assert second.value.retry_after == 30
    finally:
        await close()


async def test_a_change_is_in_the_record_log_whenever_it_is_in_the_ledger(quick: Deployment, tmp_path: Path) -> None:
    """Finding "the record log is written after the database commit": with the log failing, the old
    order committed the change and lost its line (the export then failed ``verify --log`` as if
    tampered); now the change is not committed, and the export verifies against the log pieces."""
    duty = quick.credentials("csc-duty").member_id or ""
    async with quick.client("school-dsl") as dsl:
        await dsl.send(referral([duty]))
        sealed = await dsl.prepare(referral([duty]))
        aside = _swap_log_for(quick, FULL)
        with pytest.raises(ApiError):
            await dsl.submit(sealed)
        _restore_log(quick)
        await asyncio.sleep(0.25)
        await dsl.send(referral([duty]))
    export = await _export(quick, tmp_path)
    report = verify_export(export, quick.server_public_key, log_path=[aside, quick.config.record_log_path])
    assert report.log_entries_checked == report.entries


async def test_a_full_database_disk_makes_the_server_read_only(quick: Deployment) -> None:
    """A store that cannot grow (SQLite's SQLITE_FULL, here by capping its pages) refuses a send with
    503 read_only.disk_full naming the store, where it was a plain 500."""
    duty = quick.credentials("csc-duty").member_id or ""
    store = quick.server.app[CONTEXT].store
    async with quick.client("school-dsl") as dsl:
        # A body larger than the database's free pages, so that storing it must grow the file.
        sealed = await dsl.prepare(referral([duty], narrative="Seen again on the stairs. " * 7_000))
        # The writer connection's page cap is SQLite's own way to make a database "full".
        writer = store._writer  # type: ignore[attr-defined]
        async with writer.execute("PRAGMA page_count") as cursor:
            row = await cursor.fetchone()
        await writer.execute(f"PRAGMA max_page_count = {int(row[0])}")
        try:
            with pytest.raises(ApiError) as refused:
                await dsl.submit(sealed)
        finally:
            await writer.execute("PRAGMA max_page_count = 1073741823")
        assert (refused.value.http_status, refused.value.problem_code) == (503, "read_only.disk_full")
        assert refused.value.problem["cause"] == "store"
        _status, health = await _health(quick)
        assert (health["status"], health["read_only"]["cause"]) == ("read_only", "store")
        await asyncio.sleep(0.25)
        assert (await dsl.submit(sealed))["status"] == "delivered"
    _status, health = await _health(quick)
    assert health["status"] == "ok"


async def test_signed_reads_go_on_while_the_store_cannot_be_written(quick: Deployment) -> None:
    """A store that refuses every write (here SQLite's query_only) still answers signed reads, their
    nonces held in memory (a replay is still refused), while a change gets 503 and /health says why."""
    store = quick.server.app[CONTEXT].store
    writer = store._writer  # type: ignore[attr-defined]
    async with quick.client("school-dsl") as dsl:
        await writer.execute("PRAGMA query_only = ON")
        try:
            assert (await dsl.me())["id"] == quick.credentials("school-dsl").member_id
            assert await dsl.outbox() == []
            with pytest.raises(ApiError) as refused:
                await dsl.send(referral([quick.credentials("csc-duty").member_id or ""]))
            assert refused.value.http_status == 503
            assert refused.value.problem_code.startswith("read_only")
            _status, health = await _health(quick)
            assert (health["status"], health["read_only"]["cause"]) == ("read_only", "store")
            signed = httpsig.sign_request("GET", quick.url + "/v1/me", b"", dsl.credentials.signing)
            async with aiohttp.ClientSession() as session:
                async with session.get(quick.url + "/v1/me", headers=signed) as first:
                    assert first.status == 200
                async with session.get(quick.url + "/v1/me", headers=signed) as replay:
                    assert replay.status == 401
        finally:
            await writer.execute("PRAGMA query_only = OFF")
        await asyncio.sleep(0.25)
        assert (await dsl.send(referral([quick.credentials("csc-duty").member_id or ""])))["status"] == "delivered"


# --------------------------------------------------------------------------- the verifier and the log


def _entry(seq: int, kind: str = "packet.submitted") -> bytes:
    return crypto.canonical_json({"seq": seq, "time": "2025-01-06T09:00:00Z", "type": kind})


async def _log_change(record: Record, txn: str, seq: int, entry: bytes, *, committed: bool) -> None:
    """Lines as ServiceContext.change writes them: synced before the commit, marked after it."""
    fields = {"seq": seq, "ledger_entry": base64.b64encode(entry).decode("ascii"), "txn": txn}
    await record.write_durably([("packet.submitted", fields)])
    if committed:
        record.mark(COMMITTED_EVENT, txn=txn, first_seq=seq, last_seq=seq)


def _export_lines(entries: list[bytes], key: crypto.SigningKey) -> list[bytes]:
    """The export of ``entries`` under one signed head."""
    return Ledger(entries, sign_heads(entries, len(entries), key), key.key_id).lines()


@pytest.fixture
def server_key() -> crypto.SigningKey:
    return crypto.SigningKey.generate()


def _problem(lines: list[bytes], key: crypto.SigningKey, log: Path) -> dict[str, Any]:
    with pytest.raises(LedgerProofError) as caught:
        verify_export(lines, key.public_bytes, log_path=log)
    return caught.value.extras


async def test_a_rolled_back_change_whose_seq_was_reused_is_not_tampering(
    server_key: crypto.SigningKey, tmp_path: Path
) -> None:
    """Finding "a crash between commit and log looks like tampering", the other side of the new order:
    a line synced for a change that then did not commit, its seq reused by the next change, is an
    orphan the verifier counts, not a conflict; lines for seqs the ledger never reached are tolerated."""
    entries = [_entry(0), _entry(1), _entry(2)]
    record = Record(tmp_path / "record.jsonl", console=False)
    await _log_change(record, "a0", 0, entries[0], committed=True)
    await _log_change(record, "a1", 1, _entry(1, "packet.opened"), committed=False)  # rolled back
    await _log_change(record, "a2", 1, entries[1], committed=True)  # seq 1 reused
    await _log_change(record, "a3", 2, entries[2], committed=False)  # crash after commit, before its mark
    await _log_change(record, "a4", 3, _entry(3), committed=False)  # crash before commit: a logged tail
    record.close()
    report = verify_export(_export_lines(entries, server_key), server_key.public_bytes, log_path=record.path)
    assert (report.log_entries_checked, report.log_orphaned_entries, report.log_entries_beyond_export) == (3, 1, 1)


async def test_a_logged_entry_that_differs_from_the_ledger_is_still_tampering(
    server_key: crypto.SigningKey, tmp_path: Path
) -> None:
    """Tolerating orphans does not hide tampering: a seq whose only logged line differs from the
    ledger is log.entry_different, and a ledger holding another entry than the one the log marks
    committed is too, even when its bytes also appear in an orphaned line."""
    entries = [_entry(0), _entry(1)]
    lines = _export_lines(entries, server_key)
    only_other = Record(tmp_path / "one.jsonl", console=False)
    await _log_change(only_other, "b0", 0, entries[0], committed=True)
    await _log_change(only_other, "b1", 1, _entry(1, "packet.opened"), committed=False)
    only_other.close()
    different = _problem(lines, server_key, only_other.path)
    assert (different["problem"], different["seq"]) == ("log.entry_different", 1)
    marked = Record(tmp_path / "two.jsonl", console=False)
    await _log_change(marked, "c0", 0, entries[0], committed=True)
    await _log_change(marked, "c1", 1, entries[1], committed=False)
    await _log_change(marked, "c2", 1, _entry(1, "packet.opened"), committed=True)
    marked.close()
    assert _problem(lines, server_key, marked.path)["problem"] == "log.entry_different"


async def test_two_committed_entries_for_one_seq_are_a_conflict(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A ledger rewound and rewritten (both versions marked committed in the log) is a log.conflict."""
    entries = [_entry(0)]
    record = Record(tmp_path / "record.jsonl", console=False)
    await _log_change(record, "d0", 0, entries[0], committed=True)
    await _log_change(record, "d1", 0, _entry(0, "packet.opened"), committed=True)
    record.close()
    conflict = _problem(_export_lines(entries, server_key), server_key, record.path)
    assert (conflict["problem"], conflict["seq"]) == ("log.conflict", 0)


async def test_a_line_cut_short_is_closed_and_skipped(server_key: crypto.SigningKey, tmp_path: Path) -> None:
    """A fragment a crash left at the end of the log is ended before the next line is written, and
    the verifier skips it (its change cannot have committed) and counts it."""
    entries = [_entry(0)]
    path = tmp_path / "record.jsonl"
    path.write_bytes(b'{"event": "packet.submitted", "ledger_entry": "eyJz')
    os.chmod(path, 0o600)
    record = Record(path, console=False)
    await _log_change(record, "e0", 0, entries[0], committed=True)
    record.close()
    assert path.read_bytes().count(b"\n") == 3  # the fragment, the entry line, its committed mark
    report = verify_export(_export_lines(entries, server_key), server_key.public_bytes, log_path=path)
    assert (report.log_entries_checked, report.log_torn_lines) == (1, 1)


# --------------------------------------------------------------------------- what a failed request logs


async def test_a_failed_request_logs_its_route_not_its_concrete_path(tmp_path: Path) -> None:
    """Finding "a failed request logs its concrete path": the record gets the route's pattern only,
    since a path can hold anything a caller typed (here a name and a date of birth)."""
    config = make_config(tmp_path)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = build_app(config, console=False)
    app.router.add_get("/broken/{anything}", broken)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            url = str(server.make_url("/broken/Jamie-Smith-2014-03-02"))
            async with session.get(url) as response:
                assert response.status == 500
                assert (await response.json())["code"] == "server.error"
    finally:
        await server.close()
    log = config.record_log_path.read_text()
    failed = [json.loads(line) for line in log.splitlines() if '"request.failed"' in line]
    assert [line["route"] for line in failed] == ["/broken/{anything}"]
    assert "Jamie" not in log


async def test_race_a_change_cancelled_while_its_group_commits_is_recorded_as_committed(
    quick: Deployment, tmp_path: Path
) -> None:
    """A change whose caller is cancelled after its body (a client gone, a server stopping) still
    commits with its group; the record log must then say committed, not rolled back. Before: it was
    marked rolled back although its entry is in the ledger."""
    ctx = quick.server.app[CONTEXT]
    syncing, go_on = asyncio.Event(), asyncio.Event()
    txns: dict[str, str] = {}

    async def slow_sync() -> None:
        syncing.set()
        await go_on.wait()

    async def change(name: str, entered: asyncio.Event, proceed: asyncio.Event, *, slow: bool) -> None:
        async with ctx.change() as step:
            entered.set()
            await proceed.wait()
            txns[name] = step.txn
            if slow:
                step.tx.before_commit(slow_sync)
            await step.record(Event("ledger.read", None, None, details={"what": name}))

    first_in, second_in, first_on, second_on = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    second_on.set()
    first = asyncio.create_task(change("first", first_in, first_on, slow=False))
    await first_in.wait()
    second = asyncio.create_task(change("second", second_in, second_on, slow=True))  # commits for both
    while not ctx.store._waiting:  # type: ignore[attr-defined]  # noqa: ASYNC110 - the second waits for the lock
        await asyncio.sleep(0)
    first_on.set()
    async with asyncio.timeout(10):
        await syncing.wait()
    assert second_in.is_set() and not first.done()
    first.cancel()
    go_on.set()
    async with asyncio.timeout(10):
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
    marks = [json.loads(line) for line in quick.config.record_log_path.read_text().splitlines()]
    first_marks = [m["event"] for m in marks if m.get("txn") == txns["first"] and "ledger_entry" not in m]
    assert first_marks == [COMMITTED_EVENT]
    export = await _export(quick, tmp_path)
    report = verify_export(export, quick.server_public_key, log_path=quick.config.record_log_path)
    assert report.log_entries_checked == report.entries and report.log_orphaned_entries == 0


async def test_race_a_sync_waits_for_the_one_in_flight_that_took_its_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two changes committing in separate transactions (PostgreSQL: no group commit), both lines written,
    the first's fsync in flight: the second's sync found nothing left to sync and returned at once, so
    its COMMIT could be durable before its record line. Now it waits for the fsync that covers it."""
    import threading

    from exchange import record as record_module

    gate = threading.Event()
    real = record_module._SYNC

    def slow(descriptor: int) -> None:
        gate.wait(5)
        real(descriptor)

    monkeypatch.setattr(record_module, "_SYNC", slow)  # the OS call, held back: an fsync that takes a while
    record = Record(tmp_path / "record.jsonl", console=False)
    try:
        record.append([("packet.submitted", {"seq": 0})])
        record.append([("packet.submitted", {"seq": 1})])
        first = asyncio.create_task(record.sync())
        await asyncio.sleep(0.05)  # its fsync now covers both lines, and has not finished
        second = asyncio.create_task(record.sync())
        await asyncio.sleep(0.05)
        assert not second.done(), "the second change's line is not durable yet"
        gate.set()
        await asyncio.gather(first, second)
    finally:
        gate.set()
        record.close()
