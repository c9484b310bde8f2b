"""The manager's approval of sharing without consent: the queue, and approve or refuse.

Guidance (SA practice tip 4; seven golden rules, rule 3): sharing without consent needs the
permission of a senior person. Managers and safeguarding leads of the *sender's* agency see the
manifest — never the content — and sign their decision over its digest. Only an approval
releases a held packet; for imminent harm the packet went at once and the approval is owed.
"""

from __future__ import annotations

import json
from typing import Any

from exchange import policy, schemas
from exchange.domain import APPROVER_ROLES, Actor, Agency, DeliveryStatus, Event, PacketRecord, PacketStatus, iso
from exchange.errors import Conflict, Forbidden, NotFound, PolicyViolation
from exchange.service.context import ServiceContext
from exchange.service.packets import check_approval, record_deliveries, sharing_context


def _require_approver(actor: Actor) -> None:
    if not actor.member.has_any(*APPROVER_ROLES):
        raise Forbidden("Only a manager or safeguarding lead can see and decide the approval queue.")


def _queue_item(packet: PacketRecord) -> dict[str, Any]:
    manifest = json.loads(packet.manifest)
    return {
        "packet_id": packet.id,
        "state": "awaiting_approval" if packet.status is PacketStatus.AWAITING_APPROVAL else "approval_owed",
        "from": {"member": packet.sender_member, "agency": packet.sender_agency},
        "purpose": packet.purpose,
        "kind": packet.kind,
        "urgency": packet.urgency,
        "created": packet.created,
        "approval_due": packet.approval_due,
        "manifest_digest": packet.manifest_digest,
        "manifest": manifest,
    }


async def queue(ctx: ServiceContext, actor: Actor, limit: int = 100) -> list[dict[str, Any]]:
    """Packets of the approver's agency waiting for (or owed) a decision, oldest first."""
    _require_approver(actor)
    return [_queue_item(p) for p in await ctx.store.packets_awaiting_approval(actor.agency_id, limit)]


async def _pending(ctx: ServiceContext, actor: Actor, packet_id: str) -> PacketRecord:
    _require_approver(actor)
    packet = await ctx.store.get_packet(packet_id)
    if packet is None or packet.sender_agency != actor.agency_id:
        raise NotFound("No such packet awaiting approval in your agency.")
    owed = packet.status is PacketStatus.DELIVERED and packet.approval is None and packet.approval_due is not None
    if packet.status is not PacketStatus.AWAITING_APPROVAL and not owed:
        raise Conflict(f"This packet is not waiting for a decision (it is {packet.status.value}).")
    return packet


async def show(ctx: ServiceContext, actor: Actor, packet_id: str) -> dict[str, Any]:
    """The manifest of one queued packet (its content stays sealed to the recipients)."""
    return _queue_item(await _pending(ctx, actor, packet_id))


async def _check_still_deliverable(ctx: ServiceContext, packet: PacketRecord, manifest: dict[str, Any]) -> None:
    """Run the rules again at delivery time, now with the approval: nothing is delivered that breaks them."""
    sender = await ctx.store.get_member(packet.sender_member)
    agency = await ctx.store.get_agency(packet.sender_agency)
    if sender is None or agency is None:
        raise Conflict("The sender of this packet is no longer in the directory; it cannot be delivered.")
    recipients: dict[str, Agency] = {}
    for delivery in await ctx.store.deliveries_for_packet(packet.id):
        recipient_agency = await ctx.store.get_agency(delivery.recipient_agency)
        if recipient_agency is not None:
            recipients[delivery.recipient_member] = recipient_agency
    context = await sharing_context(
        ctx, Actor(sender, agency, ""), manifest, recipients, approval_attached=True, stage="delivery"
    )
    decision = policy.evaluate(manifest, context, ctx.catalogue)
    if decision.violations:
        raise PolicyViolation(decision.violations)


async def decide(ctx: ServiceContext, actor: Actor, packet_id: str, document: Any) -> dict[str, Any]:
    """Record a manager's signed approval or refusal; an approval delivers a held packet."""
    schemas.check(document, "approval.v1", what="approval")
    packet = await _pending(ctx, actor, packet_id)
    if document["approver"] != actor.member_id:
        raise Forbidden("You can only sign a decision as yourself.")
    if packet.sender_member == actor.member_id:
        raise Forbidden("You cannot approve your own sharing without consent; ask another manager.")
    await check_approval(ctx, packet.sender_agency, packet.id, packet.manifest_digest, document)
    approve = document["decision"] == "approve"
    held = packet.status is PacketStatus.AWAITING_APPROVAL
    manifest = json.loads(packet.manifest)
    if approve and held:
        await _check_still_deliverable(ctx, packet, manifest)
    async with ctx.change() as change:
        now = iso(change.now)
        if approve:
            await change.tx.set_packet_status(packet.id, PacketStatus.DELIVERED, document)
        elif held:
            await change.tx.set_packet_status(packet.id, PacketStatus.REFUSED, document)
        else:
            # Imminent harm: the packet already went; the refusal stands on record for review.
            await change.tx.set_packet_status(packet.id, PacketStatus.DELIVERED, document)
        receipt = await change.record(
            Event(
                "packet.approved" if approve else "packet.approval_refused",
                actor.member_id,
                actor.agency_id,
                packet=packet.id,
                manifest_digest=packet.manifest_digest,
                details={
                    "key_id": document["key_id"],
                    "reason_code": document.get("reason_code"),
                    "after_delivery": not held,
                    "on_time": None if packet.approval_due is None else now <= packet.approval_due,
                },
            )
        )
        if held:
            for recipient in manifest["recipients"]:
                await change.tx.update_delivery(
                    packet.id,
                    recipient["member"],
                    status=DeliveryStatus.DELIVERED if approve else DeliveryStatus.WITHDRAWN,
                    delivered_at=now if approve else None,
                )
            if approve:
                await record_deliveries(
                    change, actor.member_id, actor.agency_id, packet.id, packet.manifest_digest, manifest
                )
    status = "delivered" if approve else ("refused" if held else "delivered_refusal_recorded")
    return {
        "packet_id": packet.id,
        "decision": document["decision"],
        "status": status,
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }
