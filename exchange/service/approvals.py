"""The manager's approval of sharing without consent: the queue, and approve or refuse.

Guidance (SA practice tip 4; seven golden rules, rule 3): sharing without consent needs the
permission of a senior person. Managers and safeguarding leads of the *sender's* agency see the
manifest — never the content — and sign their decision over its digest. Only an approval
releases a held packet; for imminent harm the packet went at once and the approval is owed.
"""

from __future__ import annotations

import json
from typing import Any

from exchange import lifecycle, policy, schemas
from exchange.domain import APPROVER_ROLES, Actor, Agency, Event, PacketRecord, iso
from exchange.errors import Conflict, Forbidden, NotFound, PolicyViolation
from exchange.lifecycle import ApprovalState, PacketState, Party, Step
from exchange.service import paging, steps
from exchange.service.context import ServiceContext
from exchange.service.packets import check_approval, release_all, sharing_context


def _require_approver(actor: Actor) -> None:
    if not actor.member.has_any(*APPROVER_ROLES):
        raise Forbidden("Only a manager or safeguarding lead can see and decide the approval queue.")


def _queue_item(packet: PacketRecord) -> dict[str, Any]:
    manifest = json.loads(packet.manifest)
    return {
        "packet_id": packet.id,
        "state": "awaiting_approval" if packet.approval_state is ApprovalState.AWAITING else "approval_owed",
        "from": {"member": packet.sender_member, "agency": packet.sender_agency},
        "purpose": packet.purpose,
        "kind": packet.kind,
        "urgency": packet.urgency,
        "created": packet.created,
        "approval_due": packet.approval_due,
        "manifest_digest": packet.manifest_digest,
        "manifest": manifest,
    }


async def queue(ctx: ServiceContext, actor: Actor, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """Packets of the approver's agency waiting for (or owed) a decision, newest first, paged."""
    _require_approver(actor)
    queued = lifecycle.AWAITING_DECISION
    rows = await ctx.store.packets_awaiting_approval(actor.agency_id, limit + 1, paging.decode(cursor), queued)
    items = [_queue_item(p) for p in rows[:limit]]
    return paging.page(items, rows, limit, lambda row: (row.created, row.id), key="packets")


async def _pending(ctx: ServiceContext, actor: Actor, packet_id: str) -> PacketRecord:
    _require_approver(actor)
    packet = await ctx.store.get_packet(packet_id)
    if packet is None or packet.sender_agency != actor.agency_id:
        raise NotFound("No such packet awaiting approval in your agency.")
    if not lifecycle.approval_owed(packet.approval_state):
        raise lifecycle.TransitionNotAllowed(
            f"This packet is not waiting for a decision: its approval is {lifecycle.describe(packet.approval_state)}.",
            extras={"state": packet.approval_state.value},
        )
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
    """Record a manager's signed approval or refusal; an approval delivers a held packet.

    Exactly one decision per packet: the approval state is read and moved in one transaction, so
    of an approval and a refusal sent at the same moment one wins and the other gets 409.
    """
    schemas.check(document, "approval.v1", what="approval")
    packet = await _pending(ctx, actor, packet_id)
    if document["approver"] != actor.member_id:
        raise Forbidden("You can only sign a decision as yourself.")
    if packet.sender_member == actor.member_id:
        raise Forbidden("You cannot approve your own sharing without consent; ask another manager.")
    await check_approval(ctx, packet.sender_member, packet.sender_agency, packet.id, packet.manifest_digest, document)
    approve = document["decision"] == "approve"
    step = Step.APPROVE if approve else Step.REFUSE
    manifest = json.loads(packet.manifest)
    if approve and packet.state is PacketState.AWAITING_APPROVAL:
        await _check_still_deliverable(ctx, packet, manifest)
    who = (actor.member_id, actor.agency_id)
    async with ctx.change() as change:
        packet = await steps.packet_in(change, packet_id)
        held = packet.state is PacketState.AWAITING_APPROVAL
        now = iso(change.now)
        approval_step = await steps.step_approval(change, packet, step, Party.APPROVER, document)
        if held:
            packet_step = await steps.step_packet(change, packet, step, Party.APPROVER)
            ledger_type = packet_step.ledger_type
        else:
            ledger_type = approval_step.ledger_type
        assert ledger_type is not None
        receipt = await change.record(
            Event(
                ledger_type,
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
        await steps.settle(change, packet.id, ("approval",), None, met=True)
        if held and approve:
            await release_all(ctx, change, packet, who)
        elif held:
            for delivery in await change.tx.deliveries_for_packet(packet.id):
                await steps.step_delivery(change, packet, delivery, Step.WITHDRAW, Party.SYSTEM, actor=who)
            # Refused sharing is never delivered: its sealed content goes now, its record stays.
            await change.tx.remove_content(packet.id, now)
            await steps.settle(change, packet.id, ("retention",), None, met=False)
    status = "delivered" if approve else ("refused" if held else "delivered_refusal_recorded")
    return {
        "packet_id": packet.id,
        "decision": document["decision"],
        "status": status,
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }
