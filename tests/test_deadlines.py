"""Deadlines on a real server with a moved clock: escalations, expiry, retention, restarts and the lease."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from exchange.client import ApiError
from exchange.domain import Obligation, iso, parse_iso, utc_now
from exchange.examples import imminent_harm, referral, referral_without_consent
from exchange.service import steps
from exchange.service.context import ServiceContext
from exchange.service.deadlines import DeadlineWorker, Round
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, Servers, beside
from tests.test_cli import cli, cli_json

#: Everyone in the demo directory who might look; each test says who must and must not see what.
EVERYONE = (
    "school-dsl",
    "school-head",
    "school-admin",
    "csc-duty",
    "csc-manager",
    "csc-admin",
    "police-officer",
    "auditor",
)


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


def _ctx(deployment: Deployment) -> ServiceContext:
    return deployment.server.app[CONTEXT]


def _worker(deployment: Deployment) -> DeadlineWorker:
    worker = _ctx(deployment).deadlines
    assert worker is not None
    return worker


def _move_to(deployment: Deployment, moment: str | datetime, **after: float) -> None:
    """Set the server's (and its clients') clock to ``moment`` plus ``after`` (timedelta keywords)."""
    target = (parse_iso(moment) if isinstance(moment, str) else moment) + timedelta(**after)
    deployment.clock.offset_seconds = (target - utc_now()).total_seconds()


async def _escalations(deployment: Deployment, label: str, query: str = "") -> list[dict[str, Any]]:
    async with deployment.client(label) as client:
        page = await client.request("GET", "/v1/escalations" + (f"?{query}" if query else ""))
    items: list[dict[str, Any]] = page["escalations"]
    return items


async def _kinds(deployment: Deployment, label: str, packet_id: str) -> list[str]:
    return sorted(e["kind"] for e in await _escalations(deployment, label) if e["packet_id"] == packet_id)


async def _ledger(deployment: Deployment, packet_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
    query = f"packet={packet_id}&limit=1000" + (f"&type={event_type}" if event_type else "")
    async with deployment.client("auditor") as auditor:
        found = await auditor.request("GET", f"/v1/ledger/entries?{query}")
    return [e["entry"] for e in found["entries"]]


async def _due(deployment: Deployment, packet_id: str, kind: str) -> str:
    """When the stored obligation of ``kind`` on the packet falls due (what the worker goes by)."""
    (due,) = {o.due for o in await _ctx(deployment).store.obligations_for(packet_id) if o.kind == kind}
    return due


async def _send(deployment: Deployment, packet_file: dict[str, Any]) -> dict[str, Any]:
    async with deployment.client("school-dsl") as dsl:
        sent: dict[str, Any] = await dsl.send(packet_file)
    return sent


def _routine_referral(deployment: Deployment, *labels: str) -> dict[str, Any]:
    return referral([_id(deployment, label) for label in labels or ("csc-duty",)], urgency="routine")


async def test_an_overdue_referral_acknowledgement_escalates_to_those_who_should_know(deployment: Deployment) -> None:
    """A routine referral unacknowledged one working day after delivery escalates to the sender, their
    manager, the duty worker who owes it and the receiving agency's safeguarding lead, and to nobody else."""
    sent = await _send(deployment, _routine_referral(deployment))
    delivered = parse_iso((await _ledger(deployment, sent["packet_id"], "packet.delivered"))[0]["time"])
    purpose = _ctx(deployment).catalogue.purpose("referral_to_childrens_social_care")
    assert purpose is not None
    spans = purpose.deadlines_for("routine")
    assert spans is not None and spans.ack.working_days == 1
    ack_due = await _due(deployment, sent["packet_id"], "ack")
    assert ack_due == iso(spans.ack.due_from(delivered, _ctx(deployment).catalogue.calendar))

    _move_to(deployment, ack_due, minutes=-1)
    await _worker(deployment).run_once()
    assert "ack" not in await _kinds(deployment, "school-dsl", sent["packet_id"])

    _move_to(deployment, ack_due, minutes=1)
    done = await _worker(deployment).run_once()
    assert steps.obligation_id("ack", sent["packet_id"], _id(deployment, "csc-duty")) in done.escalated
    for label in EVERYONE:
        kinds = await _kinds(deployment, label, sent["packet_id"])
        assert ("ack" in kinds) is (label in ("school-dsl", "school-head", "csc-duty", "csc-manager")), label
    (shown,) = [e for e in await _escalations(deployment, "school-head") if e["kind"] == "ack"]
    assert shown["state"] == "open" and shown["due"] == ack_due
    assert shown["owed_by"]["member_name"] == "Alex Reid (duty social worker)"
    assert shown["owed_to"]["member"] == _id(deployment, "school-dsl")
    assert shown["words"].startswith(f"Overdue since {ack_due}: acknowledgement of packet {sent['packet_id']}")
    assert "owed by Alex Reid (duty social worker) of Northfield Children's Services" in shown["words"]
    (raised,) = [
        e for e in await _ledger(deployment, sent["packet_id"], "escalation.raised") if e["details"]["kind"] == "ack"
    ]
    assert raised["details"]["owed_by_member"] == _id(deployment, "csc-duty")
    assert raised["details"]["owed_to_agency"] == deployment.credentials("school-dsl").agency_id
    assert raised["details"]["due"] == ack_due and raised["actor"] == {"member": None, "agency": None}


async def test_imminent_harm_is_acknowledged_within_the_hour_and_its_approval_is_owed(deployment: Deployment) -> None:
    """Imminent harm shared first: after an hour the unacknowledged copy and the owed approval both escalate."""
    tomorrow = (utc_now() + timedelta(days=1)).date().isoformat()
    sent = await _send(deployment, imminent_harm([_id(deployment, "csc-duty")], tomorrow))
    assert sent["status"] == "delivered"
    start = parse_iso((await _ledger(deployment, sent["packet_id"], "packet.submitted"))[0]["time"])
    for kind in ("ack", "approval"):
        due = parse_iso(await _due(deployment, sent["packet_id"], kind))
        assert abs(due - (start + timedelta(hours=1))) < timedelta(seconds=5), kind

    _move_to(deployment, start, minutes=59)
    assert (await _worker(deployment).run_once()).escalated == []
    _move_to(deployment, start, minutes=61)
    assert len((await _worker(deployment).run_once()).escalated) == 2

    assert await _kinds(deployment, "school-dsl", sent["packet_id"]) == ["ack", "approval"]
    assert await _kinds(deployment, "school-head", sent["packet_id"]) == ["ack", "approval"]
    # The receiving agency's lead and the duty worker see what children's services owe, not the school's approval.
    assert await _kinds(deployment, "csc-manager", sent["packet_id"]) == ["ack"]
    assert await _kinds(deployment, "csc-duty", sent["packet_id"]) == ["ack"]
    for label in ("police-officer", "auditor", "school-admin"):
        assert await _kinds(deployment, label, sent["packet_id"]) == []
    (approval,) = [e for e in await _escalations(deployment, "school-head") if e["kind"] == "approval"]
    assert approval["owed_by"]["member"] is None
    assert approval["owed_by"]["agency_name"] == "Northfield Primary School"
    assert "a manager's decision on sharing packet" in approval["words"]

    first = await _escalations(deployment, "school-dsl", "limit=1")
    async with deployment.client("school-dsl") as dsl:
        page = await dsl.escalations(cursor=None, limit=1)
        assert [e["escalation_id"] for e in page["escalations"]] == [first[0]["escalation_id"]]
        second = await dsl.escalations(cursor=page["next_cursor"], limit=1)
    assert second["escalations"][0]["escalation_id"] != first[0]["escalation_id"]
    assert second["next_cursor"] is None


async def test_a_held_packet_still_waiting_for_approval_escalates(deployment: Deployment) -> None:
    """Sharing without consent held for a manager: past its approval deadline the decision is escalated."""
    sent = await _send(deployment, referral_without_consent([_id(deployment, "csc-duty")]))
    assert sent["status"] == "awaiting_approval" and sent["approval_due"] is not None
    _move_to(deployment, await _due(deployment, sent["packet_id"], "approval"), minutes=1)
    await _worker(deployment).run_once()
    assert await _kinds(deployment, "school-head", sent["packet_id"]) == ["approval"]
    # Nothing was delivered, so children's services owe nothing and see nothing.
    assert await _kinds(deployment, "csc-duty", sent["packet_id"]) == []
    assert await _kinds(deployment, "csc-manager", sent["packet_id"]) == []


async def test_an_action_report_is_overdue_24_hours_after_a_referral(deployment: Deployment) -> None:
    """An acknowledged urgent referral with no action report after 24 hours escalates the action report only."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    async with deployment.client("csc-duty") as duty:
        await duty.acknowledge(sent["packet_id"])
    (delivered,) = await _ledger(deployment, sent["packet_id"], "packet.delivered")
    _move_to(deployment, delivered["time"], hours=24, minutes=-1)
    assert (await _worker(deployment).run_once()).escalated == []
    _move_to(deployment, delivered["time"], hours=24, minutes=1)
    done = await _worker(deployment).run_once()
    assert done.escalated == [steps.obligation_id("action", sent["packet_id"], _id(deployment, "csc-duty"))]
    (item,) = await _escalations(deployment, "school-dsl")
    assert item["kind"] == "action" and "action report on packet" in item["overdue"]


async def test_a_copy_never_opened_in_five_days_is_reported_undelivered(deployment: Deployment) -> None:
    """After 5 days the unopened copy is undelivered in the sender's outbox, with the reason, and escalated;
    the copy its recipient opened is not touched."""
    sent = await _send(deployment, _routine_referral(deployment, "csc-duty", "csc-manager"))
    async with deployment.client("csc-manager") as manager:
        await manager.open(sent["packet_id"])
    (first, _) = await _ledger(deployment, sent["packet_id"], "packet.delivered")
    _move_to(deployment, first["time"], days=5, minutes=-1)
    assert (await _worker(deployment).run_once()).undelivered == []
    _move_to(deployment, first["time"], days=5, minutes=1)
    done = await _worker(deployment).run_once()
    assert done.undelivered == [steps.obligation_id("expiry", sent["packet_id"], _id(deployment, "csc-duty"))]

    async with deployment.client("school-dsl") as dsl:
        (packet,) = await dsl.outbox()
    states = {r["member"]: (r["status"], r["loop"]) for r in packet["recipients"]}
    assert states[_id(deployment, "csc-duty")] == ("undelivered", "undelivered: never opened in time")
    assert states[_id(deployment, "csc-manager")][0] == "opened"
    (undelivered,) = await _ledger(deployment, sent["packet_id"], "packet.undelivered")
    assert undelivered["details"]["reason"] == "not_opened_within_window"
    assert undelivered["details"]["recipient"] == _id(deployment, "csc-duty")
    assert "undelivered" in await _kinds(deployment, "school-dsl", sent["packet_id"])
    assert "undelivered" in await _kinds(deployment, "school-head", sent["packet_id"])
    assert "undelivered" not in await _kinds(deployment, "police-officer", sent["packet_id"])

    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as gone:
            await duty.open(sent["packet_id"])
    assert gone.value.http_status == 410 and "never opened in time" in gone.value.problem["detail"]
    copies = {d.recipient_member: d for d in await _ctx(deployment).store.deliveries_for_packet(sent["packet_id"])}
    assert copies[_id(deployment, "csc-duty")].sealed_key == b""
    assert copies[_id(deployment, "csc-manager")].sealed_key != b""
    obligations = {o.id: o.state for o in await _ctx(deployment).store.obligations_for(sent["packet_id"])}
    # The acknowledgement fell due (and was escalated) before the copy expired; that record stands.
    assert obligations[steps.obligation_id("ack", sent["packet_id"], _id(deployment, "csc-duty"))] == "fired"


async def test_retention_removes_the_content_and_the_ledger_keeps_the_record(deployment: Deployment) -> None:
    """At the end of retention the sealed content is deleted (410 with the reason); manifest and ledger stay."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    async with deployment.client("csc-duty") as duty:
        await duty.acknowledge(sent["packet_id"])
    (submitted,) = await _ledger(deployment, sent["packet_id"], "packet.submitted")
    retention = _ctx(deployment).config.content_retention_days
    _move_to(deployment, submitted["time"], days=retention, minutes=1)
    done = await _worker(deployment).run_once()
    assert done.content_removed == [steps.obligation_id("retention", sent["packet_id"])]

    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as gone:
            await duty.open(sent["packet_id"])
    assert gone.value.http_status == 410 and "retention period" in gone.value.problem["detail"]
    types = [e["type"] for e in await _ledger(deployment, sent["packet_id"])]
    assert types[:4] == ["packet.submitted", "packet.delivered", "packet.opened", "packet.acknowledged"]
    assert "packet.content_removed" in types
    async with deployment.client("school-dsl") as dsl:
        (packet,) = await dsl.outbox()
    assert packet["content_removed_at"] is not None and packet["manifest_digest"] == sent["manifest_digest"]
    stored = await _ctx(deployment).store.get_packet(sent["packet_id"])
    assert stored is not None and stored.body == b"" and stored.manifest
    assert (await _worker(deployment).run_once()).content_removed == []


async def test_a_late_acknowledgement_resolves_the_escalation(deployment: Deployment) -> None:
    """Acknowledging after the escalation marks it resolved late; it leaves the open list."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    _move_to(deployment, await _due(deployment, sent["packet_id"], "ack"), minutes=5)
    await _worker(deployment).run_once()
    assert [e["kind"] for e in await _escalations(deployment, "school-dsl", "state=open")] == ["ack"]
    async with deployment.client("csc-duty") as duty:
        await duty.acknowledge(sent["packet_id"])
    (item,) = await _escalations(deployment, "school-dsl")
    assert item["state"] == "resolved" and item["resolved_late"] is True
    assert "Resolved late, at" in item["words"]
    assert await _escalations(deployment, "school-dsl", "state=open") == []
    (ack,) = await _ledger(deployment, sent["packet_id"], "packet.acknowledged")
    assert ack["details"]["on_time"] is False


async def test_acknowledging_an_escalation_is_recorded_once(deployment: Deployment) -> None:
    """The sender's manager acknowledges once (recorded); a second acknowledgement is 409; an outsider gets 404."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    _move_to(deployment, await _due(deployment, sent["packet_id"], "ack"), minutes=5)
    await _worker(deployment).run_once()
    (item,) = await _escalations(deployment, "school-head")
    async with deployment.client("police-officer") as outsider:
        with pytest.raises(ApiError) as hidden:
            await outsider.acknowledge_escalation(item["escalation_id"])
    assert hidden.value.http_status == 404
    async with deployment.client("school-head") as head:
        acknowledged = await head.acknowledge_escalation(item["escalation_id"])
    assert acknowledged["state"] == "acknowledged" and acknowledged["acknowledged_by"] == _id(deployment, "school-head")
    assert "Acknowledged by Jo Morgan (headteacher)" in acknowledged["words"]
    async with deployment.client("csc-manager") as lead:
        with pytest.raises(ApiError) as again:
            await lead.acknowledge_escalation(item["escalation_id"])
    assert again.value.http_status == 409 and again.value.problem_code == "escalation.already_acknowledged"
    (recorded,) = await _ledger(deployment, sent["packet_id"], "escalation.acknowledged")
    assert recorded["actor"]["member"] == _id(deployment, "school-head")
    assert recorded["details"]["escalation"] == item["escalation_id"]
    assert await _escalations(deployment, "csc-duty", "state=open") == []
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as unknown:
            await duty.request("GET", "/v1/escalations?state=late")
    assert unknown.value.http_status == 400


async def test_race_concurrent_acknowledgements_of_an_escalation_one_wins(deployment: Deployment) -> None:
    """Eight members acknowledging one escalation at once: one 201, the others 409, one ledger entry."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    _move_to(deployment, await _due(deployment, sent["packet_id"], "ack"), minutes=5)
    await _worker(deployment).run_once()
    (item,) = await _escalations(deployment, "school-dsl")

    async def attempt(label: str) -> int:
        async with deployment.client(label) as client:
            try:
                await client.acknowledge_escalation(item["escalation_id"])
            except ApiError as error:
                return error.http_status
            return 201

    labels = ["school-dsl", "school-head", "csc-duty", "csc-manager"] * 2
    outcomes = await asyncio.gather(*(attempt(label) for label in labels))
    assert sorted(outcomes) == [201] + [409] * 7
    assert len(await _ledger(deployment, sent["packet_id"], "escalation.acknowledged")) == 1


async def test_running_the_worker_twice_raises_each_escalation_once(deployment: Deployment) -> None:
    """Rounds run again and again, even at once, raise one escalation per obligation."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    _move_to(deployment, await _due(deployment, sent["packet_id"], "ack"), hours=25)
    worker = _worker(deployment)
    rounds = [*await asyncio.gather(worker.run_once(), worker.run_once(), worker.run_once())]
    rounds.append(await worker.run_once())
    escalated = [oid for done in rounds for oid in done.escalated]
    assert sorted(escalated) == sorted(
        steps.obligation_id(kind, sent["packet_id"], _id(deployment, "csc-duty")) for kind in ("ack", "action")
    )
    raised = await _ledger(deployment, sent["packet_id"], "escalation.raised")
    assert sorted(e["details"]["kind"] for e in raised) == ["ack", "action"]


async def test_a_restart_neither_loses_nor_repeats_an_escalation(servers: Servers) -> None:
    """Stopped after a deadline passed but before any round, a restarted server raises it (once, on its own);
    restarted again after that round, it raises nothing new."""
    first = await servers.start()
    sent = await _send(first, referral([_id(first, "csc-duty")]))
    _move_to(first, sent["ack_due"], minutes=5)
    await servers.stop(first)  # the deadline has passed, no round has seen it

    second = await servers.start(deadline_check_seconds=0.05)
    _move_to(second, sent["ack_due"], minutes=6)
    for _ in range(200):  # the periodic loop, not a call from the test, finds it
        if await _kinds(second, "school-dsl", sent["packet_id"]):
            break
        await asyncio.sleep(0.05)
    assert await _kinds(second, "school-dsl", sent["packet_id"]) == ["ack"]
    await servers.stop(second)

    third = await servers.start()
    _move_to(third, sent["ack_due"], minutes=7)
    assert (await _worker(third).run_once()).escalated == []
    assert len(await _ledger(third, sent["packet_id"], "escalation.raised")) == 1
    assert await _kinds(third, "school-head", sent["packet_id"]) == ["ack"]


async def test_two_servers_on_one_database_take_turns_under_the_lease(servers: Servers) -> None:
    """Of two servers on one SQLite file only the lease holder runs rounds; the other takes over when it stops."""
    one, two = await servers.start(), await servers.start()
    sent = await _send(one, referral([_id(one, "csc-duty")]))
    for running in (one, two):
        _move_to(running, sent["ack_due"], minutes=5)
    first = await _worker(one).run_once()
    rounds = await asyncio.gather(_worker(one).run_once(), _worker(two).run_once(), _worker(two).run_once())
    assert first.ran and len(first.escalated) == 1
    assert [r.ran for r in rounds] == [True, False, False]
    assert len(await _ledger(one, sent["packet_id"], "escalation.raised")) == 1

    await servers.stop(one)  # a clean stop gives the lease up at once
    assert (await _worker(two).run_once()).ran


async def test_a_lease_left_by_a_crashed_server_lapses(servers: Servers) -> None:
    """A lease whose holder vanished without giving it up is taken over once it has lapsed, not before."""
    running = await servers.start()
    lease = _ctx(running).config.deadline_lease_seconds
    crashed_at = utc_now() + timedelta(seconds=lease + 5)
    _move_to(running, crashed_at)
    crashed = DeadlineWorker(_ctx(running), holder="inst_crashed")
    assert (await crashed.run_once()).ran  # took the lease, then "crashed": it never gives it up
    _move_to(running, crashed_at, seconds=lease - 5)
    assert not (await _worker(running).run_once()).ran
    _move_to(running, crashed_at, seconds=lease + 5)
    assert (await _worker(running).run_once()).ran


async def test_race_two_workers_that_both_think_they_hold_the_lease_raise_once(servers: Servers) -> None:
    """Even two instances under one holder name, running together, raise each escalation exactly once."""
    one, two = await servers.start(), await servers.start()
    sent = await _send(one, referral([_id(one, "csc-duty")]))
    for running in (one, two):
        _move_to(running, sent["ack_due"], hours=25)
    twin = DeadlineWorker(_ctx(two), holder=_worker(one).holder)
    rounds: list[Round] = list(
        await asyncio.gather(*(w.run_once() for w in (_worker(one), twin, _worker(one), twin)))
    )
    assert all(r.ran for r in rounds)
    assert sum(len(r.escalated) for r in rounds) == 2
    raised = await _ledger(one, sent["packet_id"], "escalation.raised")
    assert sorted(e["details"]["kind"] for e in raised) == ["ack", "action"]


# -------------------------------------------------------------------- the sender's query


async def test_an_unanswered_query_escalates_and_an_answered_one_does_not(deployment: Deployment) -> None:
    """The sender queries two action reports; the one left unanswered past the query span escalates."""
    duty = _id(deployment, "csc-duty")
    unanswered = await _send(deployment, referral([duty], urgency="urgent"))
    answered = await _send(deployment, referral([duty], urgency="urgent"))
    async with deployment.client("csc-duty") as worker, deployment.client("school-dsl") as dsl:
        for sent in (unanswered, answered):
            await worker.acknowledge(sent["packet_id"])
            await worker.report(sent["packet_id"], "information_noted", "Noted; no contact yet.")
            await dsl.query(sent["packet_id"], duty, "Have you spoken to the child?")
        await worker.report(answered["packet_id"], "child_in_need_assessment_s17", "Yes; assessment opened.")
    obligations = await _ctx(deployment).store.obligations_for(unanswered["packet_id"])
    (query,) = [o for o in obligations if o.kind == "query_answer"]
    _move_to(deployment, query.due, minutes=1)
    done = await _worker(deployment).run_once()
    assert done.escalated == [query.id]
    assert await _kinds(deployment, "csc-manager", unanswered["packet_id"]) == ["query_answer"]
    assert await _kinds(deployment, "school-head", unanswered["packet_id"]) == ["query_answer"]
    assert await _kinds(deployment, "school-dsl", answered["packet_id"]) == []
    assert await _kinds(deployment, "police-officer", unanswered["packet_id"]) == []


# -------------------------------------------------------------------- requests (a race the feature cannot make)


async def _add_obligation(ctx: ServiceContext, obligation: Obligation) -> None:
    async with ctx.store.write() as tx:
        await tx.add_obligation(obligation)


async def test_a_request_answered_before_its_obligation_fires_is_cancelled(deployment: Deployment) -> None:
    """An open request past its answer time escalates; one whose obligation outlived its answer is cancelled.

    The request feature settles the obligation in the answer's own change; rows written beside the
    server make the one case it cannot (an obligation still open on an answered request).
    """
    ctx = _ctx(deployment)
    requester, holder = deployment.credentials("police-officer"), deployment.credentials("csc-manager")
    now = iso(ctx.clock())

    # The rows as the request feature would store them, written beside the running server.
    for request_id, state in (("req_open", "open"), ("req_answered", "answered")):
        await beside(
            deployment,
            "INSERT INTO info_requests (id, requester_member, requester_agency, holder_agency, document,"
            " digest, key_id, signature, purpose, urgency, state, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            request_id, requester.member_id, requester.agency_id, holder.agency_id, b"{}", request_id,
            "k", b"", "information_request", "urgent", state, now,
        )
    for request_id in ("req_open", "req_answered"):
        await _add_obligation(
            ctx,
            Obligation(
                id=steps.obligation_id("request_answer", request_id),
                kind="request_answer",
                due=now,
                created=now,
                request_id=request_id,
                owed_by_agency=holder.agency_id,
                owed_to_member=requester.member_id,
                owed_to_agency=requester.agency_id,
            ),
        )
    done = await _worker(deployment).run_once()
    assert done.escalated == [steps.obligation_id("request_answer", "req_open")]
    assert done.cancelled == [steps.obligation_id("request_answer", "req_answered")]
    (item,) = await _escalations(deployment, "police-officer")
    assert item["request_id"] == "req_open" and "answer to information request req_open" in item["words"]
    assert [e["request_id"] for e in await _escalations(deployment, "csc-manager")] == ["req_open"]
    assert await _escalations(deployment, "csc-duty") == []
    assert await _escalations(deployment, "school-dsl") == []


async def test_the_cli_lists_and_acknowledges_escalations(deployment: Deployment) -> None:
    """``exchange escalations`` lists in words, ``--open --json`` for machines; ``ack ID`` acknowledges one."""
    sent = await _send(deployment, referral([_id(deployment, "csc-duty")]))
    _move_to(deployment, await _due(deployment, sent["packet_id"], "ack"), minutes=5)
    await _worker(deployment).run_once()
    deployment.clock.offset_seconds = 0  # the CLI signs with the real clock
    head = ["--key", str(deployment.key_dir / "school-head.json"), "--server", deployment.url]

    out, _ = await cli("escalations", *head)
    assert "1 escalation(s):" in out and f"acknowledgement of packet {sent['packet_id']}" in out
    assert "owed by Alex Reid (duty social worker) of Northfield Children's Services" in out
    listed = await cli_json("escalations", "list", "--open", *head)
    (item,) = listed["escalations"]
    out, _ = await cli("escalations", "ack", item["escalation_id"], *head)
    assert f"You acknowledged escalation {item['escalation_id']}" in out
    out, _ = await cli("escalations", "--open", *head)
    assert out.strip() == "No open escalations."
    out, err = await cli("escalations", "ack", item["escalation_id"], *head, expect=1)
    assert "already been acknowledged" in err or "acknowledged this escalation" in err
    _, err = await cli("escalations", "ack", *head, expect=1)
    assert "Say which escalation to acknowledge" in err
    outsider = ["--key", str(deployment.key_dir / "police-officer.json"), "--server", deployment.url]
    out, _ = await cli("escalations", *outsider)
    assert out.strip() == "No escalations."


async def test_health_raises_the_alarm_when_deadlines_go_unhandled(deployment: Deployment) -> None:
    """/health says degraded when obligations sit due past the lease and several rounds; a round clears it."""
    sent = await _send(deployment, _routine_referral(deployment))
    async with deployment.client("school-dsl") as dsl:
        assert (await dsl.health())["deadlines"] == {"due_unhandled": 0, "oldest_due": None, "alarm": False}
        _move_to(deployment, sent["ack_due"], hours=2)
        stuck = await dsl.health()
        assert stuck["status"] == "degraded" and stuck["deadlines"]["alarm"]
        assert stuck["deadlines"]["due_unhandled"] >= 1 and "deadline worker" in stuck["deadlines"]["detail"]
        await _worker(deployment).run_once()
        healthy = await dsl.health()
    assert healthy["status"] == "ok" and not healthy["deadlines"]["alarm"]
