"""Decisions not to share: recorded with their reasons, whether or not a request asked (nothing is sent).

Golden rule 7 and practice tip 8: keep a record of the decision and the reasons for it, whether
it is to share or not. The practitioner signs what they considered (purpose, fields, optionally
the child's pseudonym and the request) and why (reason codes); the reasons in words are sealed
to their own encryption key, so they can read them later and the server never can. Each
decision is one ``decision.not_to_share`` ledger entry. A member lists their own decisions;
a manager or safeguarding lead also lists their agency's (its codes, not its sealed reasons).
"""

from __future__ import annotations

import json
from typing import Any

from exchange import crypto, schemas, statements
from exchange.domain import APPROVER_ROLES, SHARING_ROLES, Actor, Event, KeyUse, SealedNote, ShareDecision, iso
from exchange.errors import CryptoError, Forbidden, InvalidRequest, PolicyViolation, SchemaViolation
from exchange.policy import requests as rules
from exchange.service import paging
from exchange.service.context import ServiceContext
from exchange.service.keys import current_key, verify_signed
from exchange.service.requests import record_rejection


async def record(ctx: ServiceContext, actor: Actor, document: Any) -> dict[str, Any]:
    """Check and record a decision not to share; a refused one is recorded as ``decision.rejected`` and raised."""
    if not actor.member.has_any(*SHARING_ROLES):
        raise Forbidden("Only practitioners, managers and safeguarding leads record sharing decisions.")
    try:
        decision, signature, key_id, note = await _check(ctx, actor, document)
    except (SchemaViolation, CryptoError, PolicyViolation, InvalidRequest) as error:
        await record_rejection(ctx, actor, "decision.rejected", document, "decision", error)
        raise
    async with ctx.change() as change:
        stored = ShareDecision(
            id=decision["decision_id"],
            member=actor.member_id,
            agency=actor.agency_id,
            document=crypto.canonical_json({"decision": decision}),
            key_id=key_id,
            signature=signature,
            note=note,
            subject=(decision.get("subject") or {}).get("pseudonym"),
            request_id=decision.get("request_id"),
            created=iso(change.now),
        )
        await change.tx.insert_share_decision(stored)
        receipt = await change.record(
            Event(
                "decision.not_to_share",
                actor.member_id,
                actor.agency_id,
                details={
                    "decision": stored.id,
                    "purpose": decision["purpose"],
                    "fields_considered": list(decision["fields_considered"]),
                    "reason_codes": list(decision["reason_codes"]),
                    "request": stored.request_id,
                    "subject": stored.subject,
                    "key_id": key_id,
                },
            )
        )
    return {
        "decision_id": stored.id,
        "created": stored.created,
        "delivered_to": [],
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()},
    }


async def _check(ctx: ServiceContext, actor: Actor, document: Any) -> tuple[dict[str, Any], bytes, str, SealedNote]:
    schemas.check(document, "share-decision.v1", what="decision")
    decision = document["decision"]
    if decision["member"] != actor.member_id or decision["agency"] != actor.agency_id:
        raise Forbidden("A decision is recorded only in your own name, for the agency you belong to.")
    note_key = decision["note"]["encryption_key"]
    await current_key(ctx, note_key, member_id=actor.member_id, use=KeyUse.ENCRYPTION, what="The sealed reasons")
    sealed = crypto.b64decode(document["sealed_note"], what="sealed reasons")
    if crypto.digest_text(sealed) != decision["note"]["digest"]:
        raise CryptoError("The sealed reasons do not match the digest the decision's signature covers.")
    key, signature = await verify_signed(
        ctx,
        document,
        member_id=actor.member_id,
        statement=statements.share_decision_statement(decision),
        what="The decision",
        key_id=decision["signing_key"],
    )
    violations = rules.check_decision(decision, ctx.catalogue, ctx.clock())
    request_id = decision.get("request_id")
    if request_id is not None:
        request = await ctx.store.get_request(request_id)
        if request is None or actor.member_id not in request.holders:
            violations.append(
                rules.violation(
                    "decision.request_not_found",
                    "/request_id",
                    "This is not a request made to you; leave it out, or name the request you were asked.",
                )
            )
    if violations:
        raise rules.RequestRefused(violations, what="decision")
    return decision, signature, key.key_id, SealedNote(actor.member_id, note_key, sealed)


def _item(decision: ShareDecision, actor: Actor) -> dict[str, Any]:
    document = json.loads(decision.document)["decision"]
    out = {
        "decision_id": decision.id,
        "member": decision.member,
        "agency": decision.agency,
        "purpose": document["purpose"],
        "fields_considered": document["fields_considered"],
        "reason_codes": document["reason_codes"],
        "reasons": [rules.REASONS.get(code, code) for code in document["reason_codes"]],
        "request_id": decision.request_id,
        "subject": decision.subject,
        "created": decision.created,
        "decision": document,
        "signature": crypto.b64encode(decision.signature),
        "sealed_note": None,
    }
    if decision.member == actor.member_id:
        # Only the author can open the reasons in words: they are sealed to the author's own key.
        out["sealed_note"] = {"encryption_key": decision.note.key_id, "sealed": crypto.b64encode(decision.note.sealed)}
    return out


async def listing(
    ctx: ServiceContext, actor: Actor, scope: str | None = None, limit: int = 100, cursor: str | None = None
) -> dict[str, Any]:
    """The member's own decisions (``scope=mine``, default) or, for a manager or lead, their agency's; paged."""
    if scope not in (None, "mine", "agency"):
        raise InvalidRequest("The scope must be mine or agency.")
    if scope == "agency":
        if not actor.member.has_any(*APPROVER_ROLES):
            raise Forbidden("Only a manager or safeguarding lead lists their agency's decisions.")
        rows = await ctx.store.share_decisions(
            member_id=None, agency_id=actor.agency_id, limit=limit + 1, after=paging.decode(cursor)
        )
    else:
        rows = await ctx.store.share_decisions(
            member_id=actor.member_id, agency_id=None, limit=limit + 1, after=paging.decode(cursor)
        )
    items = [_item(d, actor) for d in rows[:limit]]
    return paging.page(items, rows, limit, lambda row: (row.created, row.id), key="decisions")
