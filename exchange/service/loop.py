"""The feedback loop: a recipient's action report, and the sender's confirmation or query.

DESIGN.md section 5, and the guidance's last word: "never assume another professional acted:
find out what they will do and verify it". After acknowledging, a recipient reports what they
did or will do (an action code, a narrative sealed to the sender) with a signature over the
manifest digest; the sender confirms it (the loop is closed) or queries it (sealed question),
and the recipient answers a query with another report. Every statement goes through the one
current-key check, and every step is one transition of :mod:`exchange.lifecycle`, read, checked
and written in one transaction with exactly one ledger entry.

The server reads no narrative: it checks the action code against the packet's kind, that a
note is sealed to a current encryption key of the member it is for, and that each statement
answers the latest one in its recipient's loop (:mod:`exchange.feedback`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from exchange import crypto, feedback, lifecycle, schemas, statements
from exchange.domain import Actor, DeliveryRecord, KeyUse, LoopStatement, Obligation, PacketRecord, iso, parse_iso
from exchange.errors import Conflict, InvalidRequest, NotFound
from exchange.lifecycle import DeliveryState, Party, Step
from exchange.service import steps
from exchange.service.context import Change, ServiceContext
from exchange.service.keys import current_key, verify_signed

_NOT_IN_INBOX = "No such packet in your inbox."
_NOT_IN_OUTBOX = "No such packet in your outbox."


def _ledger(receipt: Any) -> dict[str, Any]:
    return {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()}


async def _packet(ctx: ServiceContext, packet_id: str, hidden: str) -> PacketRecord:
    """The packet, or 404 with ``hidden``: the words a non-party gets, so a packet that exists and one
    that does not read alike to them."""
    packet = await ctx.store.get_packet(packet_id)
    if packet is None:
        raise NotFound(hidden)
    return packet


async def _visible_copy(ctx: ServiceContext, packet_id: str, member_id: str) -> DeliveryRecord | None:
    for delivery in await ctx.store.deliveries_for_packet(packet_id):
        if delivery.recipient_member == member_id and lifecycle.visible_to_recipient(delivery.state):
            return delivery
    return None


def _sealed_note(document: Mapping[str, Any]) -> bytes | None:
    text = document.get("sealed_note")
    return None if text is None else crypto.b64decode(text, what="sealed note")


async def _check_answers(change: Change, packet_id: str, recipient: str, answers: str | None) -> None:
    """A statement must answer the latest one in its recipient's loop (``None``: the loop is empty).

    Read inside the transaction, so of two statements written against the same state only one links.
    """
    try:
        chain = feedback.in_chain_order(
            await change.tx.statements_for(packet_id, recipient),
            lambda s: s.id,
            lambda s: feedback.answers_in(s.statement),
        )
    except ValueError as error:
        # Never written by this service (it links every statement to the latest); refuse to add to it.
        raise Conflict(f"The stored loop of {recipient} is not one chain ({error}).") from None
    latest = chain[-1].id if chain else None
    if answers != latest:
        raise feedback.StaleStatement(
            "This statement answers "
            + (f"statement {answers}" if answers else "nothing")
            + ", but the latest statement in the loop is "
            + (latest or "none")
            + "; read the loop again ('exchange loop') and answer the latest one.",
            extras={"answers": answers, "latest": latest},
        )


def _on_time(due: str | None, now: datetime) -> bool | None:
    return None if due is None else now <= parse_iso(due)


async def _obligation_due(ctx: ServiceContext, packet_id: str, obligation_id: str) -> str | None:
    """When an obligation of this packet was due (its due time never changes once stored)."""
    return next((o.due for o in await ctx.store.obligations_for(packet_id) if o.id == obligation_id), None)


# ------------------------------------------------------------------------------ the recipient's report


async def report(ctx: ServiceContext, actor: Actor, packet_id: str, document: Any) -> dict[str, Any]:
    """Record a recipient's signed action report: ``acknowledged`` or ``queried`` → ``action_reported``.

    Raises 404 to anyone without a copy, 403 to the sender, 409 when the copy is not at a step that
    takes a report (not yet acknowledged, already reported, closed) or the report answers a
    statement that is not the latest, 422 for an action that does not fit or a key that is not current.
    """
    schemas.check(document, "loop_report.v1", what="action report")
    packet = await _packet(ctx, packet_id, _NOT_IN_INBOX)
    if packet.sender_member == actor.member_id:
        raise lifecycle.NotYourStep(
            "Only a recipient can report the action taken; you sent this packet (confirm or query their report).",
            extras={"event": Step.REPORT.value},
        )
    if await _visible_copy(ctx, packet_id, actor.member_id) is None:
        raise NotFound(_NOT_IN_INBOX)
    sealed = _sealed_note(document)
    action: str = document["action"]
    answers: str | None = document["answers"]
    feedback.check_action(packet.kind, action, has_narrative=sealed is not None)
    if sealed is not None:
        await current_key(
            ctx,
            document["note_key"],
            member_id=packet.sender_member,
            use=KeyUse.ENCRYPTION,
            what="The report's sealed narrative",
        )
    statement = statements.loop_statement(
        feedback.REPORT,
        packet.id,
        packet.manifest_digest,
        actor.member_id,
        actor.member_id,
        action=action,
        note_digest=crypto.digest_text(sealed) if sealed is not None else None,
        answers=answers,
    )
    key, signature = await verify_signed(
        ctx, document, member_id=actor.member_id, statement=statement, what="The action report"
    )
    stmt_id = feedback.statement_id(statement)
    if answers is None:
        owed = steps.obligation_id("action", packet.id, actor.member_id)
        due = await _obligation_due(ctx, packet.id, owed) or packet.action_due
    else:
        owed = steps.obligation_id("query_answer", packet.id, actor.member_id, answers)
        due = await _obligation_due(ctx, packet.id, owed)
    async with ctx.change() as change:
        delivery = await steps.delivery_in(change, packet_id, actor.member_id)
        lifecycle.next_delivery_state(delivery.state, Step.REPORT, Party.RECIPIENT)
        await _check_answers(change, packet.id, actor.member_id, answers)
        when = iso(change.now)
        receipt = await steps.step_delivery(
            change,
            packet,
            delivery,
            Step.REPORT,
            Party.RECIPIENT,
            actor=(actor.member_id, actor.agency_id),
            times={"reported_at": when},
            details={
                "action": action,
                "statement": stmt_id,
                "answers": answers,
                "key_id": key.key_id,
                "on_time": _on_time(due, change.now),
            },
        )
        await change.tx.insert_statement(
            LoopStatement(
                id=stmt_id,
                packet_id=packet.id,
                recipient_member=actor.member_id,
                author_member=actor.member_id,
                type=feedback.REPORT,
                action=action,
                statement=statement,
                key_id=key.key_id,
                signature=signature,
                sealed_note=sealed,
                note_key=document.get("note_key"),
                created=when,
            )
        )
        await steps.settle(
            change,
            packet.id,
            ("action", "query_answer") if answers is not None else ("action",),
            actor.member_id,
            met=True,
        )
    assert receipt is not None  # the table records every report
    return {
        "packet_id": packet.id,
        "recipient": actor.member_id,
        "statement_id": stmt_id,
        "action": action,
        "answers": answers,
        "status": DeliveryState.ACTION_REPORTED.value,
        "loop": lifecycle.describe(DeliveryState.ACTION_REPORTED),
        "reported_at": when,
        "ledger": _ledger(receipt),
    }


# ------------------------------------------------------------------------------ the sender's review


def _query_due(ctx: ServiceContext, packet: PacketRecord, start: datetime) -> str | None:
    definition = ctx.catalogue.purpose(packet.purpose)
    spans = definition.deadlines_for(packet.urgency) if definition is not None else None
    return None if spans is None else iso(spans.query.due_from(start, ctx.catalogue.calendar))


async def review(ctx: ServiceContext, actor: Actor, packet_id: str, recipient: str, document: Any) -> dict[str, Any]:
    """Record the sender's signed confirmation (``action_reported`` → ``confirmed``: the loop is closed)
    or query (→ ``queried``, an answer owed by the recipient by the catalogue's ``query`` span).

    Raises 404 to anyone who neither sent nor received the packet, 403 to a recipient, 409 when there
    is no report waiting for review (or it is not the latest statement).
    """
    schemas.check(document, "loop_review.v1", what="review of an action report")
    packet = await _packet(ctx, packet_id, _NOT_IN_OUTBOX)
    if packet.sender_member != actor.member_id:
        if await _visible_copy(ctx, packet_id, actor.member_id) is not None:
            raise lifecycle.NotYourStep(
                "Only the sender can confirm or query an action report.", extras={"event": document["decision"]}
            )
        raise NotFound(_NOT_IN_OUTBOX)
    if not any(d.recipient_member == recipient for d in await ctx.store.deliveries_for_packet(packet_id)):
        raise NotFound(f"Packet {packet_id} was not sent to {recipient}.")
    decision: str = document["decision"]
    step = Step.CONFIRM if decision == feedback.CONFIRM else Step.QUERY
    sealed = _sealed_note(document)
    if step is Step.QUERY and sealed is None:
        raise InvalidRequest("A query needs its question, sealed to the recipient.")
    if step is Step.CONFIRM and sealed is not None:
        raise InvalidRequest("A confirmation carries no note; to ask something, query the report instead.")
    if sealed is not None:
        await current_key(
            ctx, document["note_key"], member_id=recipient, use=KeyUse.ENCRYPTION, what="The query's sealed question"
        )
    answers: str = document["answers"]
    statement = statements.loop_statement(
        decision,
        packet.id,
        packet.manifest_digest,
        recipient,
        actor.member_id,
        note_digest=crypto.digest_text(sealed) if sealed is not None else None,
        answers=answers,
    )
    key, signature = await verify_signed(
        ctx, document, member_id=actor.member_id, statement=statement, what=f"The {decision} of the action report"
    )
    stmt_id = feedback.statement_id(statement)
    async with ctx.change() as change:
        delivery = await change.tx.get_delivery(packet_id, recipient)
        if delivery is None:
            raise NotFound(f"Packet {packet_id} was not sent to {recipient}.")
        lifecycle.next_delivery_state(delivery.state, step, Party.SENDER)
        await _check_answers(change, packet.id, recipient, answers)
        when = iso(change.now)
        answer_due = _query_due(ctx, packet, change.now) if step is Step.QUERY else None
        details: dict[str, Any] = {"statement": stmt_id, "answers": answers, "key_id": key.key_id}
        if step is Step.QUERY:
            details["answer_due"] = answer_due
        receipt = await steps.step_delivery(
            change,
            packet,
            delivery,
            step,
            Party.SENDER,
            actor=(actor.member_id, actor.agency_id),
            times={"confirmed_at": when} if step is Step.CONFIRM else None,
            details=details,
        )
        await change.tx.insert_statement(
            LoopStatement(
                id=stmt_id,
                packet_id=packet.id,
                recipient_member=recipient,
                author_member=actor.member_id,
                type=decision,
                action=None,
                statement=statement,
                key_id=key.key_id,
                signature=signature,
                sealed_note=sealed,
                note_key=document.get("note_key"),
                created=when,
            )
        )
        if answer_due is not None:
            await change.tx.add_obligation(
                Obligation(
                    id=steps.obligation_id("query_answer", packet.id, recipient, stmt_id),
                    kind="query_answer",
                    due=answer_due,
                    created=when,
                    packet_id=packet.id,
                    owed_by_member=recipient,
                    owed_by_agency=delivery.recipient_agency,
                    owed_to_member=packet.sender_member,
                    owed_to_agency=packet.sender_agency,
                )
            )
    assert receipt is not None  # the table records every confirmation and query
    state = DeliveryState.CONFIRMED if step is Step.CONFIRM else DeliveryState.QUERIED
    return {
        "packet_id": packet.id,
        "recipient": recipient,
        "decision": decision,
        "statement_id": stmt_id,
        "answers": answers,
        "status": state.value,
        "loop": lifecycle.describe(state),
        "answer_due": answer_due,
        "ledger": _ledger(receipt),
    }


# ------------------------------------------------------------------------------ reading the loop


def _statement_json(statement: LoopStatement, signing_key: bytes | None) -> dict[str, Any]:
    return {
        "id": statement.id,
        "type": statement.type,
        "author": statement.author_member,
        "action": statement.action,
        "created": statement.created,
        "statement": crypto.b64encode(statement.statement),
        "key_id": statement.key_id,
        "signing_key": crypto.b64encode(signing_key) if signing_key is not None else None,
        "signature": crypto.b64encode(statement.signature),
        "sealed_note": crypto.b64encode(statement.sealed_note) if statement.sealed_note is not None else None,
        "note_key": statement.note_key,
    }


async def loop(ctx: ServiceContext, actor: Actor, packet_id: str) -> dict[str, Any]:
    """The packet's loop: every recipient's statements for the sender, their own for a recipient.

    Each statement comes with its exact bytes, signature, the public key it names and its sealed
    note, so the caller's SDK verifies it all and opens the notes meant for them; 404 to anyone else.
    """
    packet = await _packet(ctx, packet_id, "No such packet.")
    deliveries = await ctx.store.deliveries_for_packet(packet_id)
    if packet.sender_member != actor.member_id:
        deliveries = [
            d
            for d in deliveries
            if d.recipient_member == actor.member_id and lifecycle.visible_to_recipient(d.state)
        ]
        if not deliveries:
            raise NotFound("No such packet.")
    manifest = json.loads(packet.manifest)
    keys: dict[str, bytes | None] = {}

    async def public(key_id: str) -> bytes | None:
        if key_id not in keys:
            key = await ctx.store.get_key(key_id)
            keys[key_id] = key.public_bytes if key is not None else None
        return keys[key_id]

    recipients = []
    for delivery in deliveries:
        stored = await ctx.store.statements_for(packet_id, delivery.recipient_member)
        recipients.append(
            {
                "member": delivery.recipient_member,
                "agency": delivery.recipient_agency,
                "status": delivery.state.value,
                "loop": lifecycle.describe(delivery.state),
                "acknowledged_at": delivery.acknowledged_at,
                "reported_at": delivery.reported_at,
                "confirmed_at": delivery.confirmed_at,
                "statements": [_statement_json(s, await public(s.key_id)) for s in stored],
            }
        )
    sender_key = await public(manifest["sender"]["signing_key"])
    return {
        "packet_id": packet.id,
        "manifest": manifest,
        "manifest_digest": packet.manifest_digest,
        "signature": crypto.b64encode(packet.signature),
        "sender_signing_key": crypto.b64encode(sender_key) if sender_key is not None else None,
        "status": packet.state.value,
        "recipients": recipients,
    }


async def latest_actions(ctx: ServiceContext, packet_id: str) -> dict[str, str]:
    """Each recipient's latest reported action code (for the outbox), by the chain's order."""
    by_recipient: dict[str, list[LoopStatement]] = {}
    for statement in await ctx.store.statements_for(packet_id):
        by_recipient.setdefault(statement.recipient_member, []).append(statement)
    latest: dict[str, str] = {}
    for member, stored in by_recipient.items():
        try:
            chain = feedback.in_chain_order(stored, lambda s: s.id, lambda s: feedback.answers_in(s.statement))
        except ValueError:
            chain = stored
        action = next((s.action for s in reversed(chain) if s.type == feedback.REPORT and s.action), None)
        if action is not None:
            latest[member] = action
    return latest
