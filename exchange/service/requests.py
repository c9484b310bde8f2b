"""Information requests: ask, list, show, decline; and marking a request answered by a packet.

A request is signed and holds no personal data; what identifies the child is sealed to each
holder (the named member, or every duty member of the holder agency), so the server knows who
asked whom for which fields under which basis, but never about whom. Only the requester and
the holders know a request exists: anyone else gets 404. The request's lifecycle is
:data:`exchange.lifecycle.REQUEST_TRANSITIONS`: open until one holder answers it with a packet
(``in_reply_to``, marked answered in the same change that delivers the packet) or declines it
with signed reasons and an explanation sealed to the requester. Of two racing answers or
declines, one wins and the other gets 409.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exchange import crypto, lifecycle, schemas, statements
from exchange.domain import (
    SHARING_ROLES,
    Actor,
    Agency,
    Event,
    InfoRequest,
    KeyUse,
    Obligation,
    PacketRecord,
    RequestDecline,
    SealedNote,
    iso,
)
from exchange.errors import (
    CryptoError,
    ExchangeError,
    Forbidden,
    InvalidRequest,
    NoCurrentKey,
    NotFound,
    PolicyViolation,
    SchemaViolation,
    Violation,
)
from exchange.lifecycle import Party, RequestState, Step
from exchange.policy import requests as rules
from exchange.service import directory, paging, steps
from exchange.service.context import Change, ServiceContext
from exchange.service.keys import current_key, verify_signed, verify_statement
from exchange.store.base import RequestRole

#: The obligation a request opens: the holders owe an answer (a packet or a decline).
OBLIGATION = "request_answer"

_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REQUEST_ID = re.compile(r"req_[0-9a-f]{16,64}")
_ROLES: Mapping[str, RequestRole] = {"sent": "sent", "received": "received", "all": "all"}


@dataclass(frozen=True)
class _Checked:
    request: dict[str, Any]
    signature: bytes
    key_id: str
    holder_agency: Agency
    details: tuple[SealedNote, ...]


async def submit(ctx: ServiceContext, actor: Actor, document: Any) -> dict[str, Any]:
    """Check a request (schema, signature, holders' sealed details, the request rules) and open it.

    A rejection is recorded in the ledger (``request.rejected``, rule ids only) and raised; nothing
    of a rejected request is stored.
    """
    if not actor.member.has_any(*SHARING_ROLES):
        raise Forbidden("Only practitioners, managers and safeguarding leads ask for information.")
    try:
        checked = await _check(ctx, actor, document)
    except (SchemaViolation, CryptoError, PolicyViolation, InvalidRequest) as error:
        await record_rejection(ctx, actor, "request.rejected", document, "request", error)
        raise
    return await _open(ctx, actor, checked)


async def _check(ctx: ServiceContext, actor: Actor, document: Any) -> _Checked:
    schemas.check(document, "request-submission.v1", what="request")
    request = document["request"]
    requester = request["requester"]
    if requester["member"] != actor.member_id or requester["agency"] != actor.agency_id:
        raise Forbidden("A request is made only in your own name, for the agency you belong to.")
    key, signature = await verify_signed(
        ctx,
        document,
        member_id=actor.member_id,
        statement=statements.request_statement(request),
        what="The request",
        key_id=requester["signing_key"],
    )
    holder_agency = await ctx.store.get_agency(request["holder"]["agency"])
    if holder_agency is None:
        raise InvalidRequest("The agency asked is not in the directory.")
    holders = await _holders(ctx, actor, holder_agency, request["holder"].get("member"))
    details = await _sealed_details(ctx, request, document["sealed_details"], holders)
    parties = rules.RequestParties(
        requester_agency_kind=actor.agency.kind.value,
        holder_agency_kind=holder_agency.kind.value,
        requester_receive_purposes=actor.agency.receive_purposes,
        holder_send_purposes=holder_agency.send_purposes,
    )
    violations = rules.check_request(request, parties, ctx.catalogue, ctx.clock())
    if violations:
        raise rules.RequestRefused(violations)
    return _Checked(request, signature, key.key_id, holder_agency, details)


async def _holders(ctx: ServiceContext, actor: Actor, agency: Agency, member_id: str | None) -> frozenset[str]:
    """Who the request goes to: the named member, or every duty member of the agency but the requester."""
    if member_id is not None:
        member = await ctx.store.get_member(member_id)
        if member is None or not member.active or member.agency_id != agency.id or not member.has_any(*SHARING_ROLES):
            raise InvalidRequest("The member asked is not an active practitioner, manager or lead of that agency.")
        if member.id == actor.member_id:
            raise InvalidRequest("You cannot ask yourself for information.")
        return frozenset({member.id})
    duty = [
        m
        for m in await ctx.store.list_members(agency.id)
        if m.active and m.has_any(*SHARING_ROLES) and m.id != actor.member_id
    ]
    if not duty:
        raise InvalidRequest("No member of that agency can receive requests.")
    # A duty member who has revoked their encryption key (or whose key expired) could not open the
    # details: they are left out, as the sender's client leaves them out, rather than failing the request.
    reachable = frozenset(m.id for m in await directory.with_current_key(ctx, duty, KeyUse.ENCRYPTION))
    if not reachable:
        raise NoCurrentKey(
            "No duty member of that agency has a current encryption key, so nobody there could open the request."
            " Its members must add new keys themselves ('exchange keys rotate'); tell that agency, or ask another."
        )
    return reachable


async def _sealed_details(
    ctx: ServiceContext, request: Mapping[str, Any], sealed: Mapping[str, str], holders: frozenset[str]
) -> tuple[SealedNote, ...]:
    """The details must be sealed exactly once to each holder's current encryption key, as the request says."""
    listed = [d["member"] for d in request["details"]]
    if len(set(listed)) != len(listed) or set(listed) != holders or set(sealed) != holders:
        raise CryptoError(
            "The request's details must be sealed exactly once to each holder: the member asked, or every duty"
            " member of the agency asked."
        )
    notes = []
    for entry in request["details"]:
        member = entry["member"]
        await current_key(
            ctx, entry["encryption_key"], member_id=member, use=KeyUse.ENCRYPTION, what="The request's sealed details"
        )
        note = crypto.b64decode(sealed[member], what="sealed details")
        if crypto.digest_text(note) != entry["digest"]:
            raise CryptoError("The sealed details do not match the digest the request's signature covers.")
        notes.append(SealedNote(member, entry["encryption_key"], note))
    return tuple(notes)


async def _open(ctx: ServiceContext, actor: Actor, checked: _Checked) -> dict[str, Any]:
    request = checked.request
    async with ctx.change() as change:
        record = InfoRequest(
            id=request["request_id"],
            requester_member=actor.member_id,
            requester_agency=actor.agency_id,
            holder_agency=checked.holder_agency.id,
            holder_member=request["holder"].get("member"),
            document=crypto.canonical_json(request),
            digest=statements.request_digest(request),
            key_id=checked.key_id,
            signature=checked.signature,
            details=checked.details,
            purpose=request["purpose"],
            urgency=request["urgency"],
            subject=(request.get("subject") or {}).get("pseudonym"),
            state=RequestState.OPEN,
            created=iso(change.now),
            answer_due=_answer_due(ctx, request, change),
        )
        await change.tx.insert_request(record)
        receipt = await change.record(
            Event(
                "request.submitted",
                actor.member_id,
                actor.agency_id,
                details={
                    "request": record.id,
                    "purpose": record.purpose,
                    "urgency": record.urgency,
                    "fields": list(request["fields"]),
                    "lawful_basis": request["lawful_basis"],
                    "holder_agency": record.holder_agency,
                    "holder_member": record.holder_member,
                    "holders": sorted(record.holders),
                    "subject": record.subject,
                    "key_id": record.key_id,
                    "answer_due": record.answer_due,
                },
            )
        )
        if record.answer_due is not None:
            await change.tx.add_obligation(
                Obligation(
                    id=steps.obligation_id(OBLIGATION, record.id),
                    kind=OBLIGATION,
                    due=record.answer_due,
                    created=record.created,
                    request_id=record.id,
                    owed_by_member=record.holder_member,
                    owed_by_agency=record.holder_agency,
                    owed_to_member=record.requester_member,
                    owed_to_agency=record.requester_agency,
                )
            )
    return {
        "request_id": record.id,
        "state": record.state.value,
        "holder": {"agency": record.holder_agency, "member": record.holder_member},
        "holders": sorted(record.holders),
        "answer_due": record.answer_due,
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }


def _answer_due(ctx: ServiceContext, request: Mapping[str, Any], change: Change) -> str | None:
    """The answer is owed by the purpose's action span at the request's urgency (as a referral's decision is)."""
    purpose = ctx.catalogue.purpose(request["purpose"])
    spans = purpose.deadlines_for(request["urgency"]) if purpose is not None else None
    return iso(spans.action.due_from(change.now, ctx.catalogue.calendar)) if spans is not None else None


async def record_rejection(
    ctx: ServiceContext, actor: Actor, event_type: str, document: Any, key: str, error: ExchangeError
) -> None:
    """Record a refused request or decision: codes and rule ids only, never a value from the document."""
    details: dict[str, Any] = {"code": error.code}
    inner = document.get(key) if isinstance(document, Mapping) else None
    if isinstance(inner, Mapping):
        # An untrusted document: only values shaped like our own codes are kept, as for a rejected packet.
        purpose = inner.get("purpose")
        if isinstance(purpose, str) and _CODE.fullmatch(purpose):
            details["purpose"] = purpose
        candidate = inner.get("request_id")
        if isinstance(candidate, str) and _REQUEST_ID.fullmatch(candidate):
            details["request"] = candidate
    if isinstance(error, PolicyViolation):
        details["rules"] = sorted({v.rule for v in error.violations})
    async with ctx.change() as change:
        await change.record(Event(event_type, actor.member_id, actor.agency_id, details=details))


# ------------------------------------------------------------------------------ reading


def _summary(request: InfoRequest, actor: Actor) -> dict[str, Any]:
    document = json.loads(request.document)
    decline = request.decline
    return {
        "request_id": request.id,
        "role": "sent" if actor.member_id == request.requester_member else "received",
        "from": {"member": request.requester_member, "agency": request.requester_agency},
        "holder": {"agency": request.holder_agency, "member": request.holder_member},
        "holders": sorted(request.holders),
        "purpose": request.purpose,
        "urgency": request.urgency,
        "fields": document["fields"],
        "lawful_basis": document["lawful_basis"],
        "subject": request.subject,
        "state": request.state.value,
        "state_words": lifecycle.describe(request.state),
        "created": request.created,
        "answer_due": request.answer_due,
        "answered_by": request.answered_by,
        "answered_at": request.answered_at,
        "declined": None
        if decline is None
        else {
            "declined_by": decline.declined_by,
            "agency": decline.declined_by_agency,
            "reason_codes": list(decline.reason_codes),
            "reasons": [rules.REASONS.get(code, code) for code in decline.reason_codes],
            "declined_at": decline.declined_at,
        },
    }


async def listing(
    ctx: ServiceContext,
    actor: Actor,
    role: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    states: str | None = None,
) -> dict[str, Any]:
    """Requests the member made (``role=sent``), holds (``received``) or both (default); newest first, paged."""
    chosen = _ROLES.get(role or "all")
    if chosen is None:
        raise InvalidRequest("The role must be sent, received or all.")
    rows = await ctx.store.requests_for(
        actor.member_id,
        actor.agency_id,
        role=chosen,
        limit=limit + 1,
        after=paging.decode(cursor),
        states=paging.states(states, RequestState),
    )
    items = [_summary(r, actor) for r in rows[:limit]]
    return paging.page(items, rows, limit, lambda row: (row.created, row.id), key="requests")


async def _visible(ctx: ServiceContext, actor: Actor, request_id: str) -> InfoRequest:
    request = await ctx.store.get_request(request_id)
    if request is None or not request.visible_to(actor.member_id):
        # The same answer whether it does not exist or is someone else's.
        raise NotFound("No such request of yours.")
    return request


async def show(ctx: ServiceContext, actor: Actor, request_id: str) -> dict[str, Any]:
    """One request, signed as the requester made it, with what is sealed to this member (404 to anyone else).

    A holder gets the details sealed to them; the requester gets a decline's explanation sealed to them.
    Each signer's public key comes along so the client verifies the signatures itself.
    """
    request = await _visible(ctx, actor, request_id)
    requester_key = await ctx.store.get_key(request.key_id)
    out = _summary(request, actor) | {
        "request": json.loads(request.document),
        "request_digest": request.digest,
        "signature": crypto.b64encode(request.signature),
        "requester_signing_key": crypto.b64encode(requester_key.public_bytes) if requester_key else None,
        "sealed_details": None,
    }
    mine = next((n for n in request.details if n.member == actor.member_id), None)
    if mine is not None:
        out["sealed_details"] = {"encryption_key": mine.key_id, "sealed": crypto.b64encode(mine.sealed)}
    decline = request.decline
    if decline is not None:
        decliner_key = await ctx.store.get_key(decline.key_id)
        out["declined"] |= {
            "key_id": decline.key_id,
            "signature": crypto.b64encode(decline.signature),
            "decliner_signing_key": crypto.b64encode(decliner_key.public_bytes) if decliner_key else None,
            "explanation_key": decline.explanation.key_id,
            "note_digest": crypto.digest_text(decline.explanation.sealed),
        }
        if actor.member_id == request.requester_member:
            out["declined"]["explanation"] = crypto.b64encode(decline.explanation.sealed)
    return out


# ------------------------------------------------------------------------------ declining


async def decline(ctx: ServiceContext, actor: Actor, request_id: str, document: Any) -> dict[str, Any]:
    """A holder's signed decline with reasons; the explanation is sealed to the requester. One per request."""
    schemas.check(document, "request-decline.v1", what="decline")
    request = await _visible(ctx, actor, request_id)
    if actor.member_id not in request.holders:
        raise Forbidden("Only a member the request was made to can decline it.")
    reason_codes = tuple(document["reason_codes"])
    violations = rules.check_decline(reason_codes)
    if violations:
        raise rules.RequestRefused(violations, what="decline")
    explanation = document["explanation"]
    await current_key(
        ctx,
        explanation["encryption_key"],
        member_id=request.requester_member,
        use=KeyUse.ENCRYPTION,
        what="The decline's explanation",
    )
    sealed = crypto.b64decode(explanation["sealed"], what="sealed explanation")
    signature = crypto.b64decode(document["signature"], what="decline signature")
    statement = statements.decline_statement(
        request.id,
        request.digest,
        actor.member_id,
        reason_codes,
        note_digest=crypto.digest_text(sealed),
        note_key=explanation["encryption_key"],
    )
    key = await verify_statement(
        ctx,
        key_id=document["key_id"],
        member_id=actor.member_id,
        statement=statement,
        signature=signature,
        what="The decline",
    )
    async with ctx.change() as change:
        current = await change.tx.get_request(request.id)
        assert current is not None  # requests are never deleted
        transition = lifecycle.next_request_state(current.state, Step.DECLINE, Party.RECIPIENT)
        when = iso(change.now)
        await change.tx.set_request_state(
            current.id,
            current.state,
            transition.next,
            when=when,
            decline=RequestDecline(
                declined_by=actor.member_id,
                declined_by_agency=actor.agency_id,
                key_id=key.key_id,
                reason_codes=reason_codes,
                signature=signature,
                explanation=SealedNote(current.requester_member, explanation["encryption_key"], sealed),
                declined_at=when,
            ),
        )
        assert transition.ledger_type is not None
        receipt = await change.record(
            Event(
                transition.ledger_type,
                actor.member_id,
                actor.agency_id,
                details={
                    "request": current.id,
                    "reason_codes": list(reason_codes),
                    "key_id": key.key_id,
                    "requester": current.requester_member,
                    "subject": current.subject,
                    "on_time": None if current.answer_due is None else when <= current.answer_due,
                },
            )
        )
        await _settle(change, current.id)
    return {
        "request_id": request.id,
        "state": transition.next.value,
        "reason_codes": list(reason_codes),
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }


async def _settle(change: Change, request_id: str) -> None:
    await change.tx.settle_obligations((OBLIGATION,), request_id=request_id, state="met", when=iso(change.now))


# ------------------------------------------------------------------------------ answering (packets call these)


def corrected_packet(manifest: Mapping[str, Any]) -> str | None:
    """The packet a manifest says it corrects (``corrects.packet_id``), if any."""
    corrects = manifest.get("corrects")
    packet_id = corrects.get("packet_id") if isinstance(corrects, Mapping) else None
    return packet_id if isinstance(packet_id, str) else None


def _step_for(request: InfoRequest, correcting: str | None) -> Step:
    """Answering, or (for a correction of the packet that answered it) replacing the answer."""
    if request.state is RequestState.ANSWERED and correcting is not None and correcting == request.answered_by:
        return Step.SUPERSEDE
    return Step.ANSWER


async def answerable(
    ctx: ServiceContext, actor: Actor, request_id: str, manifest: Mapping[str, Any] | None = None
) -> InfoRequest | None:
    """The request ``actor`` may answer, or None if it is unknown or not theirs (the rules then say
    ``request.not_found``, failing closed). A request no longer open is a 409 (its answer came already),
    unless ``manifest`` corrects the packet that answered it."""
    request = await ctx.store.get_request(request_id)
    if request is None or actor.member_id not in request.holders:
        return None
    step = _step_for(request, corrected_packet(manifest or {}))
    lifecycle.next_request_state(request.state, step, Party.RECIPIENT)
    return request


async def reply_violations(ctx: ServiceContext, actor: Actor, manifest: Mapping[str, Any]) -> list[Violation]:
    """A packet answering a request goes to the requester only, for the request's purpose (or as a response)."""
    request_id = manifest.get("in_reply_to")
    if not isinstance(request_id, str):
        return []
    request = await answerable(ctx, actor, request_id, manifest)
    if request is None:
        return []
    return rules.check_reply(manifest, request.requester_member, request.purpose)


async def mark_answered(change: Change, packet: PacketRecord) -> None:
    """In the change that delivers ``packet``: its request moves ``open`` → ``answered`` (compare-and-set),
    recorded once, and the answer obligation is met. A request that moved on first makes it all a 409.
    A correction of the answering packet becomes the answer instead (``answered_by``), recorded by its own
    ``packet.submitted`` and ``packet.superseded``."""
    assert packet.in_reply_to is not None
    request = await change.tx.get_request(packet.in_reply_to)
    if request is None:
        raise NotFound("The request this packet answers is not known to the exchange.")
    transition = lifecycle.next_request_state(request.state, _step_for(request, packet.supersedes), Party.RECIPIENT)
    when = iso(change.now)
    await change.tx.set_request_state(request.id, request.state, transition.next, when=when, answered_by=packet.id)
    if transition.ledger_type is None:
        return  # a correction replaced the answer: its own events record that
    await change.record(
        Event(
            transition.ledger_type,
            packet.sender_member,
            packet.sender_agency,
            packet=packet.id,
            manifest_digest=packet.manifest_digest,
            details={
                "request": request.id,
                "requester": request.requester_member,
                "subject": request.subject,
                "on_time": None if request.answer_due is None else when <= request.answer_due,
            },
        )
    )
    await _settle(change, request.id)
