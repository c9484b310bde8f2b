"""Applying the lifecycle inside a change: read, check against the table, compare-and-set, record.

Every function here runs inside :meth:`ServiceContext.change`, so the state it reads, the check
:mod:`exchange.lifecycle` makes on it, the write (a compare-and-set on the state read) and the
ledger entry commit together or not at all. Of two racing transitions, the second reads the
first's result and is refused with 409.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from exchange import lifecycle
from exchange.domain import DeliveryRecord, Event, Obligation, PacketRecord, iso
from exchange.errors import NotFound
from exchange.lifecycle import ApprovalState, PacketState, Party, Step
from exchange.policy import Catalogue
from exchange.service.context import Change, PendingReceipt, ServiceContext

#: Obligations on a recipient's copy, settled as the loop moves on.
DELIVERY_OBLIGATIONS = ("ack", "action", "query_answer", "expiry")


async def packet_in(change: Change, packet_id: str) -> PacketRecord:
    packet = await change.tx.get_packet(packet_id)
    if packet is None:
        raise NotFound("No such packet.")
    return packet


async def packet_in_store(ctx: ServiceContext, packet_id: str) -> PacketRecord:
    packet = await ctx.store.get_packet(packet_id)
    if packet is None:
        raise NotFound("No such packet.")
    return packet


async def delivery_in(change: Change, packet_id: str, member_id: str) -> DeliveryRecord:
    """The member's copy as the transaction sees it; 404 if they have none they may see."""
    return visible_copy(await change.tx.get_delivery(packet_id, member_id))


def visible_copy(delivery: DeliveryRecord | None) -> DeliveryRecord:
    """``delivery`` if its recipient may see it; 404 otherwise."""
    if delivery is None or not lifecycle.visible_to_recipient(delivery.state) or _recalled_unseen(delivery):
        # The same answer whether the packet does not exist or is someone else's.
        raise NotFound("No such packet in your inbox.")
    return delivery


def _recalled_unseen(delivery: DeliveryRecord) -> bool:
    """Recalled while held for approval: it never reached the recipient, so they never see it."""
    return delivery.state is lifecycle.DeliveryState.RECALLED and delivery.delivered_at is None


async def step_delivery(
    change: Change,
    packet: PacketRecord,
    delivery: DeliveryRecord,
    step: Step,
    party: Party,
    *,
    actor: tuple[str | None, str | None],
    times: Mapping[str, str] | None = None,
    ack_signature: bytes | None = None,
    ack_key: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> PendingReceipt | None:
    """Move one copy by ``step`` (checked against the table), and record it if the table says so."""
    transition = lifecycle.next_delivery_state(delivery.state, step, party)
    await change.tx.set_delivery_state(
        packet.id,
        delivery.recipient_member,
        delivery.state,
        transition.next,
        when=iso(change.now),
        times=times,
        ack_signature=ack_signature,
        ack_key=ack_key,
    )
    if transition.ledger_type is None:
        return None
    return await change.record(
        Event(
            transition.ledger_type,
            actor[0],
            actor[1],
            packet=packet.id,
            manifest_digest=packet.manifest_digest,
            details={"recipient": delivery.recipient_member, "recipient_agency": delivery.recipient_agency}
            | dict(details or {}),
        )
    )


async def step_packet(
    change: Change,
    packet: PacketRecord,
    step: Step,
    party: Party,
    *,
    superseded_by: str | None = None,
    corrected_fields: Sequence[str] | None = None,
) -> lifecycle.Transition[PacketState]:
    """Move the packet by ``step``; the caller records the event (it knows the details)."""
    transition = lifecycle.next_packet_state(packet.state, step, party)
    await change.tx.set_packet_state(
        packet.id, packet.state, transition.next, superseded_by=superseded_by, corrected_fields=corrected_fields
    )
    return transition


async def step_approval(
    change: Change, packet: PacketRecord, step: Step, party: Party, approval: Mapping[str, Any] | None
) -> lifecycle.Transition[ApprovalState]:
    transition = lifecycle.next_approval_state(packet.approval_state, step, party)
    await change.tx.set_approval_state(packet.id, packet.approval_state, transition.next, approval)
    return transition


def obligation_id(kind: str, *parts: str) -> str:
    """Deterministic: the same obligation is never stored twice, whoever tries to add it again."""
    return "obl_" + "_".join((kind, *parts))


@dataclass(frozen=True)
class Dues:
    """When a delivered copy must be acknowledged, actioned, and opened (else it is undelivered)."""

    ack: str | None
    action: str | None
    expiry: str | None


async def release(
    change: Change, packet: PacketRecord, delivery: DeliveryRecord, actor: tuple[str | None, str | None], dues: Dues
) -> None:
    """Deliver one held copy (``pending`` → ``delivered``) and open its obligations."""
    await step_delivery(
        change, packet, delivery, Step.RELEASE, Party.SYSTEM, actor=actor, times={"delivered_at": iso(change.now)}
    )
    await open_delivery_obligations(change, packet, delivery.recipient_member, delivery.recipient_agency, dues)


async def open_delivery_obligations(change: Change, packet: PacketRecord, member: str, agency: str, dues: Dues) -> None:
    """What a recipient owes once a copy reaches them: acknowledgement, action report, opening in time."""
    owed = {"ack": dues.ack, "action": dues.action, "expiry": dues.expiry}
    for kind, due in owed.items():
        if due is None:
            continue
        await change.tx.add_obligation(
            Obligation(
                id=obligation_id(kind, packet.id, member),
                kind=kind,
                due=due,
                created=iso(change.now),
                packet_id=packet.id,
                owed_by_member=member,
                owed_by_agency=agency,
                owed_to_member=packet.sender_member,
                owed_to_agency=packet.sender_agency,
            )
        )


async def _owed_to_sender(
    change: Change, packet: PacketRecord, kind: str, due: str | None, *, owed_by_agency: str | None = None
) -> None:
    """A packet-wide obligation, whose escalation the sender (and their agency) waits for."""
    if due is None:
        return
    await change.tx.add_obligation(
        Obligation(
            id=obligation_id(kind, packet.id),
            kind=kind,
            due=due,
            created=iso(change.now),
            packet_id=packet.id,
            owed_by_agency=owed_by_agency,
            owed_to_member=packet.sender_member,
            owed_to_agency=packet.sender_agency,
        )
    )


async def open_approval_obligation(change: Change, packet: PacketRecord) -> None:
    """A manager of the sender's agency owes a decision by ``approval_due``."""
    await _owed_to_sender(change, packet, "approval", packet.approval_due, owed_by_agency=packet.sender_agency)


async def add_retention(change: Change, packet: PacketRecord) -> None:
    """The sealed content is deleted at ``retain_until``; the record and the manifest stay."""
    await _owed_to_sender(change, packet, "retention", packet.retain_until)


async def settle(change: Change, packet_id: str, kinds: tuple[str, ...], member: str | None, *, met: bool) -> None:
    await change.tx.settle_obligations(
        kinds, packet_id=packet_id, owed_by_member=member, state="met" if met else "cancelled", when=iso(change.now)
    )


def dues_from(catalogue: Catalogue, purpose: str, urgency: str, start: datetime, undelivered_after: timedelta) -> Dues:
    """A copy's due times counted from its delivery at ``start``, by the catalogue's spans."""
    definition = catalogue.purpose(purpose)
    spans = definition.deadlines_for(urgency) if definition is not None else None
    expiry = iso(start + undelivered_after)
    if spans is None:
        return Dues(None, None, expiry)
    calendar = catalogue.calendar
    return Dues(iso(spans.ack.due_from(start, calendar)), iso(spans.action.due_from(start, calendar)), expiry)
