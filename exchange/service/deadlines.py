"""The deadline worker: what has fallen due, derived from stored due times, escalated exactly once.

DESIGN.md sections 5 and 8: an obligation (acknowledge, report the action, approve, answer a query
or a request, open in time, keep content no longer than retention allows) is a row with a due time
on the ``(state, due)`` index. Nothing is kept in memory: each round reads what is open and due,
and for each obligation, in ONE change, re-reads the obligation and the state it is about, then

* settles it ``cancelled`` when it no longer stands (the packet was recalled, the request withdrawn);
* otherwise fires it (compare-and-set ``open`` → ``fired``), stores an :class:`Escalation` and
  records ``escalation.raised`` in the ledger;
* for ``expiry`` (a copy never opened within ``undelivered_after_days``, as MESH does after 5
  days) it also moves the copy to ``undelivered``, records ``packet.undelivered`` with the reason
  and deletes that copy's sealed key: the sender is told, the packet is not dropped;
* for ``retention`` it deletes the sealed content and records ``packet.content_removed``; the
  manifest, the deliveries and the ledger stay.

Because the obligation's state is read and moved inside the same transaction as the escalation and
its ledger entry, a restart at any point, a second round, or a second instance cannot raise the
same escalation twice, and one that fell due while the server was down is raised on the next
round. Only one instance runs rounds at a time, under the ``deadlines`` lease in the database,
renewed every round and released on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from exchange import lifecycle
from exchange.domain import Escalation, Event, Obligation, PacketRecord, iso, new_id, parse_iso
from exchange.lifecycle import DeliveryState, PacketState, Party, Step
from exchange.service import steps
from exchange.service.background import stop_task
from exchange.service.context import Change, ServiceContext

LEASE = "deadlines"

#: Obligations read per round; a full batch means more may be due, so the next round starts at once.
BATCH = 200

#: Kinds whose breach is escalated to the people waiting and their managers.
ESCALATING = frozenset({"ack", "action", "approval", "query_answer", "request_answer"})
#: Kinds about one recipient's copy, owed by ``owed_by_member``.
_ON_A_COPY = frozenset({"ack", "action", "query_answer", "expiry"})
#: A request still waiting for the holder's answer.
_REQUEST_OPEN = "open"
#: A copy never opened in its window: the escalation the sender sees.
UNDELIVERED = "undelivered"


@dataclass
class Round:
    """What one round did, by obligation id: for tests, ``/health`` and the log."""

    #: False when another instance holds the lease (this one did nothing).
    ran: bool
    escalated: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    content_removed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: Already handled by another round between the read and the change (nothing was done again).
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: The batch was full: more may be due.
    more: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "escalated": self.escalated,
            "undelivered": self.undelivered,
            "content_removed": self.content_removed,
            "cancelled": self.cancelled,
            "skipped": self.skipped,
            "failed": self.failed,
        }


class DeadlineWorker:
    """Runs deadline rounds in the background, on one instance at a time (the ``deadlines`` lease)."""

    def __init__(self, ctx: ServiceContext, holder: str | None = None) -> None:
        self.ctx = ctx
        #: This instance's name on the lease (the context's instance id unless a test names another).
        self.holder = holder or ctx.instance_id
        self._task: asyncio.Task[None] | None = None
        self.last_round: Round | None = None
        #: When (by the context's clock) the lease this instance last took runs out; None if it has none.
        self._lease_until: datetime | None = None

    @property
    def leader(self) -> bool:
        """Whether this instance holds the ``deadlines`` lease (it is the one running rounds)."""
        return self._lease_until is not None and self._lease_until > self.ctx.clock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deadline-worker")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        # A clean stop hands the work over at once rather than when the lease lapses.
        with contextlib.suppress(Exception):
            async with self.ctx.store.write() as tx:
                await tx.release_lease(LEASE, self.holder)
            self._lease_until = None

    async def run_once(self) -> Round:
        """One round: take (or renew) the lease, then handle every open obligation now due (one batch).

        Safe to call at any time and from any instance: an obligation is acted on only if it is still
        open inside the change that acts on it, so nothing is done twice.
        """
        now = self.ctx.clock()
        expires = now + timedelta(seconds=self.ctx.config.deadline_lease_seconds)
        async with self.ctx.store.write() as tx:
            if not await tx.take_lease(LEASE, self.holder, iso(now), iso(expires)):
                self._lease_until = None
                return Round(ran=False)
            due = await tx.due_obligations(iso(now), BATCH)
        self._lease_until = expires
        done = Round(ran=True)
        for obligation in due:
            try:
                outcome = await self._handle(obligation.id)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - one bad row must not stop the others; it stays open
                self.ctx.record.log.error(
                    "deadlines.obligation_failed", obligation=obligation.id, error_type=type(error).__name__
                )
                outcome = "failed"
            getattr(done, outcome).append(obligation.id)
        # A full batch means more may be due, unless every one of it failed (then wait, do not spin).
        done.more = len(due) >= BATCH and len(done.failed) < len(due)
        self.last_round = done
        if due:
            self.ctx.record.log.info(
                "deadlines.round",
                holder=self.holder,
                **{outcome: len(ids) for outcome, ids in done.as_json().items() if outcome != "ran"},
            )
        return done

    async def health(self) -> dict[str, Any]:
        """For ``/health``: what is due and not yet handled. Obligations left due for longer than a lease
        and a few rounds mean no instance is running the worker (or it keeps failing): the alarm."""
        now = self.ctx.clock()
        waiting, oldest = await self.ctx.store.oldest_due_obligation(iso(now))
        config = self.ctx.config
        patience = timedelta(seconds=config.deadline_lease_seconds + 5 * config.deadline_check_seconds)
        alarm = oldest is not None and parse_iso(oldest) < now - patience
        report: dict[str, Any] = {"due_unhandled": waiting, "oldest_due": oldest, "alarm": alarm}
        if self.last_round is not None:
            report["last_round"] = self.last_round.as_json()
        if alarm:
            report["detail"] = (
                "Deadlines have been due for longer than the worker's lease and several rounds without being"
                " escalated: check that a server instance is running the deadline worker."
            )
        return report

    async def _run(self) -> None:
        # The first round comes one interval after start: start-up stays free of background writes, and
        # whatever fell due while the server was down is still found, from the stored due times.
        interval = self.ctx.config.deadline_check_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                while (await self.run_once()).more:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the worker must survive a failing round
                self.ctx.record.log.error("deadlines.round_failed", error_type=type(error).__name__)

    async def _handle(self, obligation_id: str) -> str:
        async with self.ctx.change() as change:
            obligation = await change.tx.get_obligation(obligation_id)
            if obligation is None or obligation.state != "open":
                return "skipped"
            return await _act(self.ctx, change, obligation)


async def _act(ctx: ServiceContext, change: Change, obligation: Obligation) -> str:
    """Decide and do, inside the change, what an obligation that has fallen due calls for."""
    when = iso(change.now)
    packet = await change.tx.get_packet(obligation.packet_id) if obligation.packet_id else None
    if obligation.kind == "retention":
        if packet is None:
            await change.tx.settle_obligation(obligation.id, "cancelled", when)
            return "cancelled"
        await _remove_content(change, packet)
        await change.tx.settle_obligation(obligation.id, "met", when)
        return "content_removed"
    if not await _stands(change, obligation, packet):
        await change.tx.settle_obligation(obligation.id, "cancelled", when)
        return "cancelled"
    if not await change.tx.fire_obligation(obligation.id, when):
        return "skipped"
    if obligation.kind == "expiry":
        assert packet is not None and obligation.owed_by_member is not None  # _stands checked both
        await _mark_undelivered(change, packet, obligation.owed_by_member)
        await _raise(change, obligation, packet, UNDELIVERED)
        return "undelivered"
    if obligation.kind not in ESCALATING:
        # A kind this worker does not know: reported rather than silently dropped.
        ctx.record.log.warning("deadlines.unknown_kind", obligation=obligation.id, kind=obligation.kind)
    await _raise(change, obligation, packet, obligation.kind)
    return "escalated"


async def _stands(change: Change, obligation: Obligation, packet: PacketRecord | None) -> bool:
    """Whether the obligation is still owed, judged from the state stored now (never from memory)."""
    kind = obligation.kind
    if kind in _ON_A_COPY:
        if packet is None or obligation.owed_by_member is None:
            return False
        delivery = await change.tx.get_delivery(packet.id, obligation.owed_by_member)
        return delivery is not None and lifecycle.obligation_stands(kind, packet.state, delivery.state)
    if kind == "approval":
        live = packet is not None and packet.state in (PacketState.DELIVERED, PacketState.AWAITING_APPROVAL)
        return live and packet is not None and lifecycle.approval_owed(packet.approval_state)
    if kind == "request_answer":
        if obligation.request_id is None:
            return False
        return await change.tx.info_request_state(obligation.request_id) == _REQUEST_OPEN
    # An unknown kind stands: escalating it is safer than cancelling what nobody checked.
    return True


async def _mark_undelivered(change: Change, packet: PacketRecord, member: str) -> None:
    """Never opened in time: the copy becomes ``undelivered`` (recorded), and can no longer be fetched."""
    delivery = await change.tx.get_delivery(packet.id, member)
    assert delivery is not None and delivery.state is DeliveryState.DELIVERED
    await steps.step_delivery(
        change,
        packet,
        delivery,
        Step.EXPIRE,
        Party.SYSTEM,
        actor=(None, None),
        details={"reason": "not_opened_within_window"},
    )
    await change.tx.remove_sealed_key(packet.id, member)
    # What the recipient owed on the copy is owed no longer; an escalation already raised for it stays.
    for kind in ("ack", "action"):
        await change.tx.settle_obligation(steps.obligation_id(kind, packet.id, member), "cancelled", iso(change.now))


async def _remove_content(change: Change, packet: PacketRecord) -> None:
    """The end of retention: the sealed body, keys and notes go; the manifest and the ledger stay."""
    if packet.content_removed_at is not None:
        return
    await change.tx.remove_content(packet.id, iso(change.now))
    await change.record(
        Event(
            "packet.content_removed",
            None,
            None,
            packet=packet.id,
            manifest_digest=packet.manifest_digest,
            details={"reason": "retention_period_ended", "retain_until": packet.retain_until},
        )
    )


async def _raise(change: Change, obligation: Obligation, packet: PacketRecord | None, kind: str) -> None:
    escalation = Escalation(
        id=new_id("esc"),
        obligation_id=obligation.id,
        kind=kind,
        due=obligation.due,
        raised_at=iso(change.now),
        packet_id=obligation.packet_id,
        request_id=obligation.request_id,
        owed_by_member=obligation.owed_by_member,
        owed_by_agency=obligation.owed_by_agency,
        owed_to_member=obligation.owed_to_member,
        owed_to_agency=obligation.owed_to_agency,
    )
    await change.tx.insert_escalation(escalation)
    await change.record(
        Event(
            "escalation.raised",
            None,
            None,
            packet=obligation.packet_id,
            manifest_digest=packet.manifest_digest if packet is not None else None,
            details=_details(escalation),
        )
    )


def _details(escalation: Escalation) -> Mapping[str, Any]:
    """Codes and ids only (never content): what fell due, when, who owes it and who is waiting."""
    details = {
        "escalation": escalation.id,
        "obligation": escalation.obligation_id,
        "kind": escalation.kind,
        "due": escalation.due,
        "request": escalation.request_id,
        "owed_by_member": escalation.owed_by_member,
        "owed_by_agency": escalation.owed_by_agency,
        "owed_to_member": escalation.owed_to_member,
        "owed_to_agency": escalation.owed_to_agency,
    }
    return {key: value for key, value in details.items() if value is not None}
