"""The ledger in the running service: signed heads off the request path, auditors' reads and proofs,
senders' receipts, and an export that verifies offline against the server key and the record log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exchange import crypto
from exchange.client import ApiError, ExchangeClient
from exchange.errors import LedgerProofError
from exchange.examples import referral
from exchange.ledger import TreeHead, leaf_hash, verify_consistency, verify_export, verify_tree_head
from exchange.ledger.proofs import check_inclusion_answer
from exchange.service.background import stop_task
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, Servers, beside, store_of

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines


async def _signed_size_at_least(client: ExchangeClient, size: int) -> TreeHead:
    for _ in range(100):
        head = TreeHead.from_json((await client.request("GET", "/v1/ledger/head"))["head"])
        if head.size >= size:
            return head
        await asyncio.sleep(0.05)
    raise AssertionError(f"no signed head reached size {size}")


async def _send_one(deployment: Deployment) -> dict[str, object]:
    duty = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent: dict[str, object] = await dsl.send(referral([duty]))
        return sent


def _ledger(sent: dict[str, object]) -> dict[str, Any]:
    """The ``ledger`` part of a submission's answer: its seq and leaf hash."""
    ledger = sent["ledger"]
    assert isinstance(ledger, dict)
    return ledger


async def test_heads_are_signed_in_the_background_and_verify(deployment: Deployment) -> None:
    """Soon after an event the server has signed a head covering it, under its own key."""
    sent = await _send_one(deployment)
    seq = sent["ledger"]["seq"]  # type: ignore[index]
    async with deployment.client("auditor") as auditor:
        head = await _signed_size_at_least(auditor, seq + 1)
    verify_tree_head(head, deployment.server_public_key)


async def test_race_the_head_signer_stops_when_the_ledger_grows_as_it_is_stopped(deployment: Deployment) -> None:
    """CI stop 15: the server's shutdown hung for good. The signer's wait for the ledger to grow (3.11's
    ``asyncio.wait_for``) returned normally when the stop's cancellation came in the same turn of the loop
    as the ledger grew, so the signer's loop went on and ``stop`` waited for it forever."""
    ctx = deployment.server.app[CONTEXT]
    signer = ctx.head_signer
    assert signer is not None
    for _ in range(3):
        await asyncio.sleep(0.01)  # the signer is waiting for the ledger to grow
        running = signer._task
        assert running is not None
        ctx.ledger_grew.set()
        started = time.monotonic()
        await asyncio.wait_for(signer.stop(), timeout=5)
        assert running.done() and time.monotonic() - started < 2
        await signer.start()


async def _health(running: Deployment) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{running.url}/health") as answer:
        health: dict[str, Any] = await answer.json()
        return health


async def test_one_instance_signs_heads_and_another_takes_over_when_it_stops(servers: Servers) -> None:
    """Two instances on one store: exactly one holds the heads lease (``/health`` says which, under its
    instance id), and after it stops the other signs the heads of what was sent through either."""
    one = await servers.start(head_lease_seconds=0.4)
    two = await servers.start(head_lease_seconds=0.4)
    await asyncio.sleep(0.2)  # both signers have asked for the lease
    first, second = await _health(one), await _health(two)
    assert first["instance"] != second["instance"]
    assert [first["leader"]["heads"], second["leader"]["heads"]] == [True, False]
    await _send_one(one)
    sent = await _send_one(two)
    async with two.client("auditor") as auditor:
        await _signed_size_at_least(auditor, _ledger(sent)["seq"] + 1)
    await servers.stop(one)  # a clean stop hands the lease over at once
    sent = await _send_one(two)
    async with two.client("auditor") as auditor:
        await _signed_size_at_least(auditor, _ledger(sent)["seq"] + 1)
    assert (await _health(two))["leader"]["heads"]


async def test_a_signer_that_dies_holding_the_lease_is_replaced_once_it_lapses(servers: Servers) -> None:
    """The leader's signer stops without a word (as in a crash): nothing is handed over, yet once its lease
    lapses the other instance signs."""
    one = await servers.start(head_lease_seconds=0.4)
    two = await servers.start(head_lease_seconds=0.4)
    await asyncio.sleep(0.2)
    signer = one.server.app[CONTEXT].head_signer
    assert signer is not None and signer.leader and signer._task is not None
    await stop_task(signer._task)  # dead: no last head, no release
    signer._task = None
    sent = await _send_one(two)
    async with two.client("auditor") as auditor:
        await _signed_size_at_least(auditor, _ledger(sent)["seq"] + 1)
    assert (await _health(two))["leader"]["heads"]


async def test_a_shutdown_that_gives_up_on_a_stuck_task_is_told_so() -> None:
    """Stopping a background task that will not end: the stopper's own cancellation (a shutdown's
    deadline) is raised, not swallowed as if it were the task's."""
    release = asyncio.Event()

    async def stuck() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stop_task(task), timeout=0.2)
    release.set()
    await task


async def test_sender_checks_their_submission_receipt(deployment: Deployment) -> None:
    """The submission's leaf is included in a signed head: the sender verifies it themselves."""
    sent = await _send_one(deployment)
    ledger = sent["ledger"]
    async with deployment.client("auditor") as auditor:
        await _signed_size_at_least(auditor, ledger["seq"] + 1)  # type: ignore[index]
    async with deployment.client("school-dsl") as dsl:
        answer, head = await dsl.receipt(ledger["seq"], deployment.server_public_key)  # type: ignore[index]
    assert head.size > ledger["seq"]  # type: ignore[index]
    assert leaf_hash(crypto.b64decode(answer["entry"])).hex() == ledger["leaf_hash"]  # type: ignore[index]
    # A proof doctored by a man in the middle does not verify.
    doctored = dict(answer) | {"proof": [crypto.b64encode(bytes(32))] * len(answer["proof"])}
    with pytest.raises(LedgerProofError):
        check_inclusion_answer(doctored, deployment.server_public_key)
    # Nor does a head presented under another key.
    from exchange.crypto import SigningKey

    with pytest.raises(LedgerProofError):
        check_inclusion_answer(answer, SigningKey.generate().public_bytes)


async def test_each_receipt_proves_the_ledger_extends_the_head_seen_before(deployment: Deployment) -> None:
    """A member keeps the last head they verified; the next receipt carries a consistency proof from
    it, so a ledger rewound or forked for this member (a split view) is caught on their side."""
    first = _ledger(await _send_one(deployment))
    async with deployment.client("auditor") as auditor:
        await _signed_size_at_least(auditor, first["seq"] + 1)
    async with deployment.client("school-dsl") as dsl:
        _, seen = await dsl.receipt(first["seq"], deployment.server_public_key)
    second = _ledger(await _send_one(deployment))
    async with deployment.client("auditor") as auditor:
        await _signed_size_at_least(auditor, second["seq"] + 1)
    key = deployment.server_public_key
    async with deployment.client("school-dsl") as dsl:
        answer, latest = await dsl.receipt(second["seq"], key, last_head=seen)
        assert latest.size > seen.size
        assert TreeHead.from_json(answer["consistency"]["old"]) == seen
        # The same head again needs no proof; a head seen before is never shown smaller.
        await dsl.receipt(second["seq"], key, last_head=latest)
        forked = replace(seen, root_hash=bytes(32))
        with pytest.raises(LedgerProofError, match="forked"):
            await dsl.receipt(second["seq"], key, last_head=forked)
        with pytest.raises(LedgerProofError, match="forked"):
            await dsl.receipt(second["seq"], key, last_head=replace(latest, root_hash=bytes(32)))
        with pytest.raises(LedgerProofError, match="rewound"):
            await dsl.receipt(second["seq"], key, last_head=replace(latest, size=latest.size + 5))
        # Only from a size the server signed can a proof be given. A submission appends two entries
        # together, so some size below the latest head was never signed.
        signed = {size for (size,) in await beside(deployment, "SELECT size FROM tree_heads")}
        unsigned = min(set(range(1, latest.size)) - signed)
        with pytest.raises(ApiError) as unknown:
            await dsl.request("GET", f"/v1/ledger/receipts/{second['seq']}?since={unsigned}")
        assert unknown.value.http_status == 404


async def test_receipts_are_only_for_members_involved(deployment: Deployment) -> None:
    """The police officer cannot fetch the school's submission receipt."""
    sent = await _send_one(deployment)
    async with deployment.client("police-officer") as officer:
        with pytest.raises(ApiError) as refused:
            await officer.request("GET", f"/v1/ledger/receipts/{sent['ledger']['seq']}")  # type: ignore[index]
    assert refused.value.http_status == 404


async def test_only_auditors_read_the_ledger(deployment: Deployment) -> None:
    """Practitioners and managers get 403 from the auditor endpoints."""
    for label in ("school-dsl", "csc-manager", "csc-admin"):
        async with deployment.client(label) as client:
            for path in ("/v1/ledger/head", "/v1/ledger/entries", "/v1/ledger/export"):
                with pytest.raises(ApiError) as refused:
                    await client.request_text("GET", path)
                assert refused.value.http_status == 403


async def test_auditor_filters_entries_and_every_read_is_recorded(deployment: Deployment) -> None:
    """Filtering by type and packet works, and each auditor read appears in the ledger itself."""
    sent = await _send_one(deployment)
    async with deployment.client("auditor") as auditor:
        found = await auditor.request("GET", f"/v1/ledger/entries?packet={sent['packet_id']}")
        types = [e["entry"]["type"] for e in found["entries"]]
        assert types == ["packet.submitted", "packet.delivered"]
        duty = deployment.credentials("csc-duty")
        to_duty = await auditor.request("GET", f"/v1/ledger/entries?member={duty.member_id}&type=packet.delivered")
        assert [e["entry"]["packet"] for e in to_duty["entries"]] == [sent["packet_id"]]
        by_agency = await auditor.request("GET", f"/v1/ledger/entries?agency={duty.agency_id}&limit=1")
        assert len(by_agency["entries"]) == 1 and by_agency["next_start"] is not None
        later = await auditor.request("GET", "/v1/ledger/entries?since=2999-01-01T00:00:00Z")
        assert later["entries"] == []
        reads = await auditor.request("GET", "/v1/ledger/entries?type=ledger.read")
    assert [e["entry"]["details"]["what"] for e in reads["entries"]] == ["entries"] * 5
    assert all(e["entry"]["actor"]["member"] == deployment.credentials("auditor").member_id for e in reads["entries"])


async def test_consistency_between_two_signed_heads(deployment: Deployment) -> None:
    """A consistency proof shows the older signed tree is a prefix of the newer one."""
    async with deployment.client("auditor") as auditor:
        first = await _signed_size_at_least(auditor, 1)
        await _send_one(deployment)
        second = await _signed_size_at_least(auditor, first.size + 3)
        result = await auditor.request("GET", f"/v1/ledger/proof/consistency?from={first.size}&to={second.size}")
    verify_consistency(
        first.size, second.size, [crypto.b64decode(p) for p in result["proof"]], first.root_hash, second.root_hash
    )


async def test_export_verifies_offline_with_the_log_and_tampering_is_found(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The auditor's export passes the offline verifier, record log included; one changed byte fails it."""
    await _send_one(deployment)
    async with deployment.client("auditor") as auditor:
        await _signed_size_at_least(auditor, 20)
        text = await auditor.request_text("GET", "/v1/ledger/export")
    export = tmp_path / "ledger.jsonl"
    export.write_text(text)
    report = verify_export(export, deployment.server_public_key, log_path=deployment.config.record_log_path)
    assert report.entries >= 20 and report.log_entries_checked == report.entries

    lines = text.splitlines()
    victim = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "entry" and i > 5)
    record = json.loads(lines[victim])
    entry = bytearray(crypto.b64decode(record["entry"]))
    entry[10] ^= 1
    record["entry"] = crypto.b64encode(bytes(entry))
    lines[victim] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerProofError) as failed:
        verify_export(tampered, deployment.server_public_key)
    assert failed.value.extras["seq"] is not None or failed.value.extras["line"] is not None


async def test_instances_appending_in_turn_keep_one_verified_tree(servers: Servers, tmp_path: Path) -> None:
    """Each instance starts its next append from the frontier it last committed only while the ledger is
    still that size: with two instances taking turns (and two at once), the export verifies offline, every
    signed head's root included, and each instance's stored frontier reads as its cache said."""
    one, two = await servers.start(), await servers.start()
    for running in (one, two, two, one, one, two):
        await _send_one(running)
    await asyncio.gather(_send_one(one), _send_one(two), _send_one(one))
    for running in (one, two):
        memo = running.server.app[CONTEXT].frontier.current
        stored = await store_of(running).ledger_nodes(list(memo.nodes))
        assert dict(memo.nodes) == stored and memo.size > 0
    async with one.client("auditor") as auditor:
        size = await store_of(one).ledger_size()
        await _signed_size_at_least(auditor, size)
        export = tmp_path / "ledger.jsonl"
        export.write_text(await auditor.request_text("GET", "/v1/ledger/export"))
    assert verify_export(export, one.server_public_key).entries >= size


async def test_the_record_log_survives_rotation(deployment: Deployment, tmp_path: Path) -> None:
    """Moving the record log away while the server runs (logrotate's way) starts a new file at the same
    path; the export verifies against the two pieces together, and not against the new one alone."""
    await _send_one(deployment)
    live = deployment.config.record_log_path
    rotated = live.with_name(live.name + ".1")
    live.rename(rotated)
    sent = _ledger(await _send_one(deployment))
    assert live.exists()
    async with deployment.client("auditor") as auditor:
        await _signed_size_at_least(auditor, sent["seq"] + 1)
        text = await auditor.request_text("GET", "/v1/ledger/export")
    export = tmp_path / "ledger.jsonl"
    export.write_text(text)
    report = verify_export(export, deployment.server_public_key, log_path=[rotated, live])
    assert report.log_entries_checked == report.entries
    with pytest.raises(LedgerProofError) as failed:
        verify_export(export, deployment.server_public_key, log_path=[live])
    assert failed.value.extras["problem"] == "log.entry_missing"


async def test_concurrent_submissions_keep_one_consistent_ledger(deployment: Deployment, tmp_path: Path) -> None:
    """Twenty packets submitted at once: every one is delivered and the ledger still verifies end to end."""
    duty = deployment.credentials("csc-duty").member_id or ""

    async def send_one(label: str) -> dict[str, object]:
        async with deployment.client(label) as client:
            sent: dict[str, object] = await client.send(referral([duty]))
            return sent

    results = await asyncio.gather(*(send_one(("school-dsl", "school-head")[i % 2]) for i in range(20)))
    assert {r["status"] for r in results} == {"delivered"}
    seqs = [r["ledger"]["seq"] for r in results]  # type: ignore[index]
    assert len(set(seqs)) == 20
    async with deployment.client("csc-duty") as recipient:
        assert len(await recipient.inbox()) == 20
    async with deployment.client("auditor") as auditor:
        await _signed_size_at_least(auditor, max(seqs) + 1)
        text = await auditor.request_text("GET", "/v1/ledger/export")
    export = tmp_path / "ledger.jsonl"
    export.write_text(text)
    report = verify_export(export, deployment.server_public_key, log_path=deployment.config.record_log_path)
    assert report.entries > max(seqs)
