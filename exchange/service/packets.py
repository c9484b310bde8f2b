"""Packet use cases: submit, inbox, fetch, acknowledge, outbox.

The server never sees content: it checks the manifest (schema, signature, recipients' keys,
digests of the parts, the sharing rules) and stores ciphertext it cannot read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from exchange import crypto, lifecycle, policy, schemas, statements
from exchange.domain import (
    APPROVER_ROLES,
    SHARING_ROLES,
    Actor,
    Agency,
    DeliveryRecord,
    Event,
    KeyUse,
    PacketRecord,
    iso,
    parse_iso,
)
from exchange.errors import (
    CryptoError,
    ExchangeError,
    Forbidden,
    Gone,
    InvalidRequest,
    NotFound,
    PolicyViolation,
    SchemaViolation,
    SenderMismatch,
    SenderNotMemberOfAgency,
    SenderNotSigner,
    Violation,
)
from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, Party, Step
from exchange.service import corrections, loop, paging, steps
from exchange.service import requests as info_requests
from exchange.service.context import Change, PendingReceipt, ServiceContext
from exchange.service.keys import current_key, verify_signed, verify_statement


@dataclass(frozen=True)
class SubmissionReceipt:
    packet_id: str
    manifest_digest: str
    status: PacketState
    ledger: PendingReceipt
    ack_due: str | None
    approval_due: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "packet_id": self.packet_id,
            "manifest_digest": self.manifest_digest,
            "status": self.status.value,
            "ack_due": self.ack_due,
            "approval_due": self.approval_due,
            "ledger": {"seq": self.ledger.seq, "leaf_hash": self.ledger.leaf_hash.hex()},
        }


@dataclass(frozen=True)
class _Checked:
    """A submission whose parts have been verified, ready for the rules."""

    manifest: dict[str, Any]
    digest: str
    signature: bytes
    body: bytes
    sealed_keys: dict[str, bytes]
    recipient_agencies: dict[str, Agency]
    approval: dict[str, Any] | None
    #: Recipients whose roles never receive packets (a service rule, reported with the policy's).
    cannot_receive: tuple[str, ...]
    #: The manifest's RFC 8785 bytes, made once: the signature, the digest and the stored copy all use them.
    canonical: bytes


async def submit(ctx: ServiceContext, actor: Actor, document: Any) -> SubmissionReceipt:
    """Check a packet submission and deliver it, hold it for approval, or reject it.

    A rejection (schema, crypto or sharing rules) is itself recorded in the ledger, then raised;
    nothing of a rejected packet is stored or delivered.
    """
    try:
        checked = await _check_submission(ctx, actor, document)
        decision = policy.evaluate(
            checked.manifest,
            await sharing_context(
                ctx,
                actor,
                checked.manifest,
                checked.recipient_agencies,
                approval_attached=checked.approval is not None and checked.approval["decision"] == "approve",
                stage="submission",
            ),
            ctx.catalogue,
        )
        if checked.approval is not None and checked.approval["decision"] != "approve":
            raise PolicyViolation(
                [
                    Violation(
                        "without_consent.approval_refused",
                        "/approval",
                        "A manager refused this sharing; it cannot be sent with a refusal attached.",
                        _rule_source("without_consent.approval_refused"),
                    )
                ]
            )
        violations = [
            *_role_violations(checked),
            *await info_requests.reply_violations(ctx, actor, checked.manifest),
            *decision.violations,
            *await corrections.violations(ctx, actor, checked.manifest),
        ]
        if violations:
            raise PolicyViolation(violations)
    except (SchemaViolation, CryptoError, PolicyViolation, InvalidRequest, SenderMismatch) as error:
        await _record_rejection(ctx, actor, document, error)
        raise
    return await _accept(ctx, actor, checked, decision)


def _role_violations(checked: _Checked) -> list[Violation]:
    paths = {r["member"]: i for i, r in enumerate(checked.manifest["recipients"])}
    return [
        Violation(
            "recipient.role_cannot_receive",
            f"/recipients/{paths[member]}/member",
            "This member is an agency admin or auditor: they manage the directory or read the record and"
            " never receive packets. Send it to a practitioner, manager or safeguarding lead.",
            _rule_source("recipient.role_cannot_receive"),
        )
        for member in checked.cannot_receive
    ]


def _rule_source(rule_id: str) -> str:
    return next(rule.source for rule in policy.SERVICE_RULES if rule.id == rule_id)


_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PACKET_ID = re.compile(r"pkt_[A-Za-z0-9]{16,64}")


async def _record_rejection(ctx: ServiceContext, actor: Actor, document: Any, error: ExchangeError) -> None:
    manifest = document.get("manifest") if isinstance(document, Mapping) else None
    details: dict[str, Any] = {"code": error.code}
    packet_id = None
    if isinstance(manifest, Mapping):
        # A rejected document is untrusted: only values shaped like our own codes and ids are kept,
        # so a name typed into the wrong place never reaches the ledger.
        purpose, candidate = manifest.get("purpose"), manifest.get("packet_id")
        if isinstance(purpose, str) and _CODE.fullmatch(purpose):
            details["purpose"] = purpose
        if isinstance(candidate, str) and _PACKET_ID.fullmatch(candidate):
            packet_id = candidate
    if isinstance(error, PolicyViolation):
        details["rules"] = sorted({v.rule for v in error.violations})
    async with ctx.change() as change:
        await change.record(
            Event("packet.rejected", actor.member_id, actor.agency_id, packet=packet_id, details=details)
        )


async def _check_submission(ctx: ServiceContext, actor: Actor, document: Any) -> _Checked:
    if not actor.member.has_any(*SHARING_ROLES):
        raise Forbidden("Only practitioners, managers and safeguarding leads send packets.")
    schemas.check(document, "packet.v1", what="packet")
    manifest = document["manifest"]
    policy.validate_manifest_schema(manifest, ctx.catalogue)

    sender = manifest["sender"]
    # Service rules sender.not_signer and sender.not_member_of_agency: a claim of authority, not a bad signature.
    if sender["member"] != actor.member_id:
        raise SenderNotSigner(
            "The manifest names another member as its sender. A packet is sent only in the name of the member"
            " who signs the request: prepare and sign it with your own key."
        )
    if sender["agency"] != actor.agency_id:
        raise SenderNotMemberOfAgency(
            f"The manifest names {sender['agency']} as your agency, but you are a member of {actor.agency_id}."
            " A packet is sent only for the agency you belong to."
        )
    sender_key = await current_key(
        ctx, sender["signing_key"], member_id=actor.member_id, use=KeyUse.SIGNING, what="The manifest"
    )
    signature = crypto.b64decode(document["signature"], what="manifest signature")
    canonical = crypto.canonical_json(manifest)
    crypto.verify_manifest_signature(manifest, signature, sender_key.public_bytes, canonical=canonical)

    # Too many or duplicated recipients are sharing rules (recipient.cap_exceeded, recipient.duplicate):
    # the policy reports them with every other violation, so only the unique ones are looked up here.
    recipients = list({r["member"]: r for r in manifest["recipients"]}.values())
    members = [r["member"] for r in recipients]
    if actor.member_id in members:
        raise InvalidRequest("You cannot send a packet to yourself.")
    if set(document["sealed_keys"]) != set(members):
        raise CryptoError("There must be exactly one sealed content key for each recipient.")
    agencies: dict[str, Agency] = {}
    cannot_receive: list[str] = []
    for recipient in recipients:
        member = await ctx.store.get_member(recipient["member"])
        if member is None or not member.active or member.agency_id != recipient["agency"]:
            raise InvalidRequest(f"Recipient {recipient['member']} is not an active member of that agency.")
        await current_key(
            ctx, recipient["encryption_key"], member_id=member.id, use=KeyUse.ENCRYPTION, what="The packet's sealing"
        )
        agency = await ctx.store.get_agency(member.agency_id)
        assert agency is not None
        agencies[member.id] = agency
        if not member.has_any(*SHARING_ROLES):
            cannot_receive.append(recipient["member"])

    body = crypto.b64decode(document["body"], what="body")
    sealed = {m: crypto.b64decode(v, what="sealed key") for m, v in document["sealed_keys"].items()}
    crypto.check_content_digests(manifest, body, sealed)
    digest = crypto.digest_text(canonical)

    approval = document.get("approval")
    if approval is not None:
        await check_approval(ctx, actor.member_id, actor.agency_id, manifest["packet_id"], digest, approval)
    return _Checked(manifest, digest, signature, body, sealed, agencies, approval, tuple(cannot_receive), canonical)


async def sharing_context(
    ctx: ServiceContext,
    actor: Actor,
    manifest: Mapping[str, Any],
    recipient_agencies: Mapping[str, Agency],
    *,
    approval_attached: bool,
    stage: policy.Stage,
) -> policy.SharingContext:
    """What the rules need besides the manifest, looked up in the directory and the store.

    For each packet this one is derived from (``derived_from``), the onward-sharing limit of its
    consent applies — but only for packets the sender actually received; any other id is left out
    so the rule fails closed. For a reply (``in_reply_to``), the fields the request asked for, if
    the sender is one of its holders (else none are known, and the reply is refused); a request
    already answered or declined is a 409.
    """
    limits: dict[str, policy.OnwardLimit] = {}
    for earlier_id in manifest.get("derived_from") or []:
        earlier = await ctx.store.get_packet(earlier_id)
        if earlier is None:
            continue
        received = [
            d for d in await ctx.store.deliveries_for_packet(earlier_id) if d.recipient_member == actor.member_id
        ]
        if received and lifecycle.visible_to_recipient(received[0].state):
            limits[earlier_id] = policy.OnwardLimit.of_manifest(json.loads(earlier.manifest))
    requested: frozenset[str] | None = None
    in_reply_to = manifest.get("in_reply_to")
    if isinstance(in_reply_to, str):
        request = await info_requests.answerable(ctx, actor, in_reply_to, manifest)
        if request is not None:
            requested = frozenset(json.loads(request.document)["fields"])
    return policy.SharingContext(
        now=ctx.clock(),
        requested_fields=requested,
        sender_agency_kind=actor.agency.kind.value,
        recipient_agency_kinds={member: agency.kind.value for member, agency in recipient_agencies.items()},
        approval_attached=approval_attached,
        stage=stage,
        recipient_cap=ctx.config.max_recipients,
        onward_limits=limits,
        # The directory's purpose lists (DESIGN.md section 4), where an agency has them.
        sender_purposes=actor.agency.send_purposes,
        recipient_purposes={
            member: agency.receive_purposes
            for member, agency in recipient_agencies.items()
            if agency.receive_purposes is not None
        },
    )


async def check_approval(
    ctx: ServiceContext, sender: str, sender_agency: str, packet_id: str, digest: str, approval: Mapping[str, Any]
) -> None:
    """An approval must be signed, with a current key, by a manager or safeguarding lead of the sender's
    agency who is not the sender, over this digest. Both paths (attached at submission, or given
    through the queue) come through here, so nobody approves their own sharing on either."""
    if approval["approver"] == sender:
        raise PolicyViolation(
            [
                Violation(
                    "without_consent.self_approval",
                    "/approval/approver",
                    "You cannot approve your own sharing without consent: another manager or safeguarding lead"
                    " of your agency must decide.",
                    _rule_source("without_consent.self_approval"),
                )
            ]
        )
    approver = await ctx.store.get_member(approval["approver"])
    if approver is None or approver.agency_id != sender_agency or not approver.has_any(*APPROVER_ROLES):
        raise PolicyViolation(
            [
                Violation(
                    "without_consent.approver_not_manager",
                    "/approval/approver",
                    "Only a manager or safeguarding lead of the sender's own agency can approve sharing"
                    " without consent.",
                    _rule_source("without_consent.approver_not_manager"),
                )
            ]
        )
    statement = statements.approval_statement(packet_id, digest, approver.id, approval["decision"])
    await verify_statement(
        ctx,
        key_id=approval["key_id"],
        member_id=approver.id,
        statement=statement,
        signature=crypto.b64decode(approval["signature"], what="approval"),
        what="The manager's approval",
    )


def _approval_state(checked: _Checked, decision: policy.Decision) -> ApprovalState:
    if checked.approval is not None:
        return ApprovalState.APPROVED
    if decision.needs_approval:
        return ApprovalState.OWED if decision.deliver_before_approval else ApprovalState.AWAITING
    return ApprovalState.NOT_NEEDED


async def _accept(ctx: ServiceContext, actor: Actor, checked: _Checked, decision: policy.Decision) -> SubmissionReceipt:
    manifest = checked.manifest
    hold = decision.needs_approval and not decision.deliver_before_approval
    state = PacketState.AWAITING_APPROVAL if hold else PacketState.DELIVERED
    async with ctx.change() as change:
        now = iso(change.now)
        packet = PacketRecord(
            id=manifest["packet_id"],
            sender_member=actor.member_id,
            sender_agency=actor.agency_id,
            manifest=checked.canonical,
            manifest_digest=checked.digest,
            signature=checked.signature,
            body=checked.body,
            purpose=manifest["purpose"],
            kind=manifest["kind"],
            urgency=manifest["urgency"],
            state=state,
            created=now,
            approval=checked.approval,
            ack_due=iso(decision.ack_due_by) if decision.ack_due_by else None,
            action_due=iso(decision.action_due_by) if decision.action_due_by else None,
            approval_due=iso(decision.approval_due_by) if decision.approval_due_by else None,
            approval_state=_approval_state(checked, decision),
            in_reply_to=manifest.get("in_reply_to"),
            supersedes=corrections.corrects(manifest)[0],
            corrected_fields=corrections.corrects(manifest)[1],
            subject=(manifest.get("subject") or {}).get("pseudonym"),
            retain_until=iso(change.now + timedelta(days=ctx.config.content_retention_days)),
        )
        await change.tx.insert_packet(packet)
        submitted = await change.record(
            Event(
                "packet.submitted",
                actor.member_id,
                actor.agency_id,
                packet=packet.id,
                manifest_digest=checked.digest,
                details=_manifest_summary(manifest)
                | {"approval": _approval_summary(checked.approval), "status": state.value},
            )
        )
        for recipient in manifest["recipients"]:
            member = recipient["member"]
            await change.tx.insert_delivery(
                DeliveryRecord(
                    packet_id=packet.id,
                    recipient_member=member,
                    recipient_agency=checked.recipient_agencies[member].id,
                    encryption_key=recipient["encryption_key"],
                    sealed_key=checked.sealed_keys[member],
                    state=DeliveryState.PENDING,
                    delivered_at=None,
                    opened_at=None,
                    acknowledged_at=None,
                    ack_signature=None,
                    updated=now,
                )
            )
        await steps.open_approval_obligation(change, packet)
        await steps.add_retention(change, packet)
        if hold:
            await change.record(
                Event(
                    "packet.awaiting_approval",
                    actor.member_id,
                    actor.agency_id,
                    packet=packet.id,
                    manifest_digest=checked.digest,
                )
            )
        else:
            await release_all(ctx, change, packet, (actor.member_id, actor.agency_id))
    return SubmissionReceipt(packet.id, checked.digest, state, submitted, packet.ack_due, packet.approval_due)


async def release_all(
    ctx: ServiceContext, change: Change, packet: PacketRecord, actor: tuple[str | None, str | None]
) -> None:
    """Deliver every held copy of ``packet`` (one ``packet.delivered`` each) and start its deadlines."""
    dues = steps.dues_from(
        ctx.catalogue,
        packet.purpose,
        packet.urgency,
        change.now,
        timedelta(days=ctx.config.undelivered_after_days),
    )
    if packet.state is PacketState.AWAITING_APPROVAL:
        # Held for approval: its deadlines run from delivery, not from submission.
        await change.tx.set_packet_dues(packet.id, dues.ack, dues.action)
    for delivery in await change.tx.deliveries_for_packet(packet.id):
        await steps.release(change, packet, delivery, actor, dues)
    # A correction replaces the packet it corrects once it is delivered, not while it is held.
    await corrections.supersede(change, packet)
    if packet.in_reply_to is not None:
        # Delivering an answer answers its request, in this same change (a request that moved on is a 409).
        await info_requests.mark_answered(change, packet)


def _manifest_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a manifest: codes and ids, never values or free text."""
    consent = manifest.get("consent") or {}
    without = manifest.get("without_consent") or {}
    return {
        "kind": manifest.get("kind"),
        "purpose": manifest.get("purpose"),
        "urgency": manifest.get("urgency"),
        "recipients": [{"member": r["member"], "agency": r["agency"]} for r in manifest.get("recipients", [])],
        "fields": [f["name"] for f in manifest.get("fields", [])],
        "lawful_basis": manifest.get("lawful_basis"),
        "consent_status": consent.get("status"),
        "without_consent_reason": without.get("reason"),
        "subject": (manifest.get("subject") or {}).get("pseudonym"),
        # The request a response answers (the ledger index finds it under the request's id).
        "in_reply_to": manifest.get("in_reply_to"),
    } | ({"identifier_check": manifest["identifier_check"]} if "identifier_check" in manifest else {})


def _approval_summary(approval: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if approval is None:
        return None
    return {"approver": approval["approver"], "key_id": approval["key_id"], "decision": approval["decision"]}


def delivery_json(delivery: DeliveryRecord) -> dict[str, Any]:
    return {
        "member": delivery.recipient_member,
        "agency": delivery.recipient_agency,
        "status": delivery.state.value,
        "loop": lifecycle.describe(delivery.state),
        "delivered_at": delivery.delivered_at,
        "opened_at": delivery.opened_at,
        "acknowledged_at": delivery.acknowledged_at,
        "reported_at": delivery.reported_at,
        "confirmed_at": delivery.confirmed_at,
    }


def packet_summary(packet: PacketRecord) -> dict[str, Any]:
    return {
        "packet_id": packet.id,
        "from": {"member": packet.sender_member, "agency": packet.sender_agency},
        "purpose": packet.purpose,
        "kind": packet.kind,
        "urgency": packet.urgency,
        "status": packet.state.value,
        "state_words": lifecycle.describe(packet.state),
        "approval": packet.approval_state.value,
        "created": packet.created,
        "manifest_digest": packet.manifest_digest,
        "ack_due": packet.ack_due,
        "action_due": packet.action_due,
        "approval_due": packet.approval_due,
        "supersedes": packet.supersedes,
        "superseded_by": packet.superseded_by,
        "corrected_fields": list(packet.corrected_fields),
        "in_reply_to": packet.in_reply_to,
        "content_removed_at": packet.content_removed_at,
    }


async def inbox(
    ctx: ServiceContext, actor: Actor, limit: int = 100, cursor: str | None = None, states: str | None = None
) -> dict[str, Any]:
    """Copies delivered to the member, newest first, with their loop state; paged by an opaque cursor."""
    wanted = paging.states(states, DeliveryState)
    shown = lifecycle.RECIPIENT_SEES & wanted if wanted else lifecycle.RECIPIENT_SEES
    rows = await ctx.store.inbox(actor.member_id, limit + 1, paging.decode(cursor), shown)
    items = [packet_summary(packet) | {"delivery": delivery_json(delivery)} for packet, delivery in rows[:limit]]
    return paging.page(items, rows, limit, lambda row: (row[0].created, row[0].id), key="packets")


async def outbox(
    ctx: ServiceContext, actor: Actor, limit: int = 100, cursor: str | None = None, states: str | None = None
) -> dict[str, Any]:
    """Packets the member sent, each with every recipient's loop state in words and their latest
    reported action code; paged."""
    wanted = paging.states(states, PacketState)
    rows = await ctx.store.outbox(actor.member_id, limit + 1, paging.decode(cursor), wanted)
    items = []
    for packet in rows[:limit]:
        deliveries = await ctx.store.deliveries_for_packet(packet.id)
        actions = await loop.latest_actions(ctx, packet.id)
        recipients = [delivery_json(d) | {"action": actions.get(d.recipient_member)} for d in deliveries]
        items.append(packet_summary(packet) | {"recipients": recipients})
    return paging.page(items, rows, limit, lambda row: (row.created, row.id), key="packets")


async def fetch(ctx: ServiceContext, actor: Actor, packet_id: str) -> dict[str, Any]:
    """The manifest, body and *this recipient's* sealed key; anyone else gets 404.

    The first fetch opens the copy (``delivered`` → ``opened``, recorded once, however many fetches
    race: the state is read and moved in one transaction). A recalled or undelivered copy, or one
    whose content was removed at the end of retention, is gone (410).
    """
    copies = await ctx.store.deliveries_for_packet(packet_id)
    delivery = steps.visible_copy(next((d for d in copies if d.recipient_member == actor.member_id), None))
    packet = await steps.packet_in_store(ctx, packet_id)
    if delivery.state is DeliveryState.DELIVERED:
        # Only a first fetch writes; it re-reads and moves the state inside the write transaction.
        async with ctx.change() as change:
            delivery = await steps.delivery_in(change, packet_id, actor.member_id)
            packet = await steps.packet_in(change, packet_id)
            _check_openable(packet, delivery)
            if delivery.state is DeliveryState.DELIVERED:
                await steps.step_delivery(
                    change,
                    packet,
                    delivery,
                    Step.OPEN,
                    Party.RECIPIENT,
                    actor=(actor.member_id, actor.agency_id),
                    times={"opened_at": iso(change.now)},
                )
                await steps.settle(change, packet.id, ("expiry",), actor.member_id, met=True)
    _check_openable(packet, delivery)
    manifest = json.loads(packet.manifest)
    sender_key = await ctx.store.get_key(manifest["sender"]["signing_key"])
    if sender_key is None:
        raise NotFound("The sender's key is no longer in the directory.")
    return {
        "packet_id": packet.id,
        "manifest": manifest,
        "manifest_digest": packet.manifest_digest,
        "signature": crypto.b64encode(packet.signature),
        "sender_signing_key": crypto.b64encode(sender_key.public_bytes),
        "body": crypto.b64encode(packet.body),
        "sealed_key": crypto.b64encode(delivery.sealed_key),
        "approval": packet.approval,
        "status": packet.state.value,
        "superseded_by": packet.superseded_by,
        "supersedes": packet.supersedes,
        "corrected_fields": list(packet.corrected_fields),
    }


def _check_openable(packet: PacketRecord, delivery: DeliveryRecord) -> None:
    if delivery.state not in lifecycle.OPENABLE or packet.content_removed_at is not None:
        raise Gone(_gone_reason(packet, delivery))


def _gone_reason(packet: PacketRecord, delivery: DeliveryRecord) -> str:
    if packet.content_removed_at is not None:
        return "This packet's sealed content was deleted at the end of its retention period; the record remains."
    return f"This packet can no longer be opened: it is {lifecycle.describe(delivery.state)}."


async def acknowledge(ctx: ServiceContext, actor: Actor, packet_id: str, document: Any) -> dict[str, Any]:
    """A recipient's signed receipt over the manifest digest; exactly one per copy, however many race."""
    schemas.check(document, "acknowledgement.v1", what="acknowledgement")
    # The caller's copy before their signature: to a non-recipient a real packet and none answer alike,
    # whatever they signed (else a bad signature's 422 would confirm that the packet exists).
    copies = await ctx.store.deliveries_for_packet(packet_id)
    steps.visible_copy(next((d for d in copies if d.recipient_member == actor.member_id), None))
    packet = await steps.packet_in_store(ctx, packet_id)
    statement = statements.acknowledgement_statement(packet_id, packet.manifest_digest, actor.member_id)
    key, signature = await verify_signed(
        ctx, document, member_id=actor.member_id, statement=statement, what="The acknowledgement"
    )
    async with ctx.change() as change:
        delivery = await steps.delivery_in(change, packet_id, actor.member_id)
        when = iso(change.now)
        receipt = await steps.step_delivery(
            change,
            packet,
            delivery,
            Step.ACKNOWLEDGE,
            Party.RECIPIENT,
            actor=(actor.member_id, actor.agency_id),
            times={"opened_at": when, "acknowledged_at": when},
            ack_signature=signature,
            ack_key=key.key_id,
            details={"key_id": key.key_id, "on_time": _on_time(packet.ack_due, change.now)},
        )
        await steps.settle(change, packet.id, ("ack", "expiry"), actor.member_id, met=True)
    assert receipt is not None  # the table records every acknowledgement
    return {
        "packet_id": packet_id,
        "acknowledged_at": when,
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }


def _on_time(due: str | None, now: datetime) -> bool | None:
    if due is None:
        return None
    return now <= parse_iso(due)
