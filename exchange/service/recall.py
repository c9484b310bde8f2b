"""Recall: the sender takes back a packet no recipient has opened yet.

One change does it all, or nothing: the packet and every copy are read inside the write
transaction, checked against :func:`exchange.lifecycle.recallable`, stepped to ``recalled``
(compare-and-set), every open obligation of the packet is cancelled, the sealed content is
deleted (the record and the manifest stay) and ``packet.recalled`` is recorded once. A recall
racing a recipient's first fetch is serialised with it: if the fetch came first the copy is
``opened`` and the recall is refused (409); if the recall came first the fetch finds the copy
recalled (410).
"""

from __future__ import annotations

from typing import Any

from exchange import lifecycle, schemas
from exchange.domain import Actor, DeliveryRecord, Event, PacketRecord, iso
from exchange.errors import NotFound
from exchange.lifecycle import DeliveryState, Party, Step
from exchange.service import steps
from exchange.service.context import ServiceContext

#: Everything a packet can still owe or be owed; a recalled packet owes nothing and holds nothing.
RECALLED_OBLIGATIONS = ("ack", "action", "expiry", "query_answer", "approval", "retention")


class NotRecallable(lifecycle.TransitionNotAllowed):
    """A recipient has opened the packet (or it is no longer live): it cannot be taken back."""

    code = "lifecycle.not_recallable"
    title = "This packet can no longer be recalled"


def _why_not(packet: PacketRecord, deliveries: list[DeliveryRecord]) -> str:
    opened = [d.recipient_member for d in deliveries if d.state not in lifecycle.NOT_OPENED]
    if packet.state in (lifecycle.PacketState.AWAITING_APPROVAL, lifecycle.PacketState.DELIVERED) and opened:
        return (
            f"You cannot recall it: {', '.join(opened)} has already opened it. To put a mistake right, send a"
            " correction (exchange correct), and speak to the recipient if it went to the wrong person."
        )
    return f"You cannot recall it: the packet is {lifecycle.describe(packet.state)}."


async def recall(ctx: ServiceContext, actor: Actor, packet_id: str, document: Any) -> dict[str, Any]:
    """Recall ``packet_id`` for the reason (a code) in ``document``; only its sender may.

    Raises :class:`NotFound` (404) for anyone but the sender, :class:`NotRecallable` (409) once any
    recipient has opened it or the packet is no longer live.
    """
    schemas.check(document, "recall.v1", what="recall")
    reason = document["reason"]
    who = (actor.member_id, actor.agency_id)
    async with ctx.change() as change:
        packet = await change.tx.get_packet(packet_id)
        if packet is None or packet.sender_member != actor.member_id:
            # The same answer whether it does not exist or is someone else's.
            raise NotFound("No such packet among those you sent.")
        deliveries = await change.tx.deliveries_for_packet(packet.id)
        if not lifecycle.recallable(packet.state, [d.state for d in deliveries]):
            raise NotRecallable(
                _why_not(packet, deliveries),
                extras={"state": packet.state.value, "event": Step.RECALL.value},
            )
        transition = await steps.step_packet(change, packet, Step.RECALL, Party.SENDER)
        if lifecycle.approval_owed(packet.approval_state):
            await steps.step_approval(change, packet, Step.RECALL, Party.SENDER, None)
        for delivery in deliveries:
            if delivery.state is not DeliveryState.UNDELIVERED:  # final: it stays as it was reported
                await steps.step_delivery(change, packet, delivery, Step.RECALL, Party.SENDER, actor=who)
        await steps.settle(change, packet.id, RECALLED_OBLIGATIONS, None, met=False)
        now = iso(change.now)
        await change.tx.remove_content(packet.id, now)
        assert transition.ledger_type is not None
        receipt = await change.record(
            Event(
                transition.ledger_type,
                actor.member_id,
                actor.agency_id,
                packet=packet.id,
                manifest_digest=packet.manifest_digest,
                details={
                    "reason": reason,
                    "was": packet.state.value,
                    "recipients": [{"member": d.recipient_member, "agency": d.recipient_agency} for d in deliveries],
                },
            )
        )
    return {
        "packet_id": packet.id,
        "status": transition.next.value,
        "reason": reason,
        "recalled_at": now,
        "recipients": [d.recipient_member for d in deliveries],
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }
