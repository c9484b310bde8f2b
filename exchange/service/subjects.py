"""The subject view for auditors: every ledger event about one child, by pseudonym, and its export.

For subject access requests and case reviews (issue 7, item 11). A subject is only ever named by
its pseudonym (HMAC of the identifier under the deployment's linkage key, which the server does
not hold): the auditor's client computes it locally and never sends the identifier. The events
about it are those indexed under the pseudonym, every event of a packet whose manifest names it,
and every event of an information request recorded for it.

The read is itself recorded (``ledger.read``, ``what`` ``subject`` or ``subject_export``), with the
pseudonym under ``details.subject``: so the subject view also shows who looked the subject up and
when, which is what a subject access request asks too.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from exchange.domain import Actor, Event, PacketRecord, Role, iso
from exchange.errors import Forbidden, InvalidRequest, NotFound
from exchange.ledger import subject_export as export
from exchange.ledger import tree
from exchange.service.context import ServiceContext

_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
#: Entries read from the store at a time while exporting.
_BATCH = 500


def _require_auditor(actor: Actor) -> None:
    if Role.AUDITOR not in actor.member.roles:
        raise Forbidden("Only an auditor can look up the events about a subject.")


def _check_pseudonym(pseudonym: str) -> None:
    if not _PSEUDONYM.fullmatch(pseudonym):
        raise InvalidRequest(
            "A subject is named by its pseudonym (64 lowercase hexadecimal characters), never by its"
            " identifier: compute it on your own computer with the linkage key"
            " (exchange subject --identifier ... --linkage-key ...)."
        )


async def _record_read(ctx: ServiceContext, actor: Actor, what: str, pseudonym: str, params: Mapping[str, Any]) -> None:
    """The auditor's query is recorded like every ledger read, and indexed under the subject it was about."""
    async with ctx.change() as change:
        await change.record(
            Event(
                "ledger.read",
                actor.member_id,
                actor.agency_id,
                details={"what": what, "params": {"pseudonym": pseudonym, **params}, "subject": pseudonym},
            )
        )


def _packet(packet: PacketRecord) -> dict[str, Any]:
    """What the auditor sees of a packet about the subject: its record, never its content."""
    return {
        "packet_id": packet.id,
        "from": {"member": packet.sender_member, "agency": packet.sender_agency},
        "purpose": packet.purpose,
        "kind": packet.kind,
        "urgency": packet.urgency,
        "status": packet.state.value,
        "created": packet.created,
        "manifest_digest": packet.manifest_digest,
        "supersedes": packet.supersedes,
        "superseded_by": packet.superseded_by,
        "corrected_fields": list(packet.corrected_fields),
        "content_removed_at": packet.content_removed_at,
    }


async def subject_view(ctx: ServiceContext, actor: Actor, pseudonym: str, start: int, limit: int) -> dict[str, Any]:
    """Entries about the subject from ``seq >= start``, in seq order, at most ``limit``; auditors only (403).

    Also lists the packets whose manifests name the subject. Raises :class:`InvalidRequest` (400)
    for anything that is not a pseudonym.
    """
    _require_auditor(actor)
    _check_pseudonym(pseudonym)
    await _record_read(ctx, actor, "subject", pseudonym, {"start": start, "limit": limit})
    rows = await ctx.store.subject_ledger(pseudonym, start, limit + 1)
    found = [{"seq": seq, "leaf_hash": leaf.hex(), "entry": json.loads(entry)} for seq, entry, leaf in rows[:limit]]
    return {
        "subject": pseudonym,
        "packets": [_packet(p) for p in await ctx.store.packets_for_subject(pseudonym)],
        "entries": found,
        "next_start": rows[limit][0] if len(rows) > limit else None,
    }


async def subject_export_stream(ctx: ServiceContext, actor: Actor, pseudonym: str) -> AsyncGenerator[bytes, None]:
    """The subject's entries with inclusion proofs in one signed head, as export lines (see
    :mod:`exchange.ledger.subject_export`), read in batches.

    A head covering everything up to this read is signed first (one signature for the export, off
    the exchange's own request path), so every entry normally comes with its proof.
    """
    _require_auditor(actor)
    _check_pseudonym(pseudonym)
    await _record_read(ctx, actor, "subject_export", pseudonym, {})
    if ctx.head_signer is not None:
        await ctx.head_signer.sign_now()
    head = await ctx.store.latest_tree_head()
    if head is None:
        raise NotFound("The ledger has no signed tree head yet; retry shortly.")
    yield export.header_line(ctx.server_key.key_id, iso(ctx.clock()), pseudonym)
    yield export.head_line(head)
    count = unproven = 0
    start = 0
    while rows := await ctx.store.subject_ledger(pseudonym, start, _BATCH):
        for seq, entry, leaf in rows:
            proof = None
            if seq < head.size:
                nodes = await ctx.store.ledger_nodes(tree.needed_nodes_for_inclusion(seq, head.size))
                proof = tree.compute_inclusion_proof(seq, head.size, nodes)
            else:
                unproven += 1
            yield export.entry_line(seq, entry, leaf, proof)
            count += 1
        start = rows[-1][0] + 1
    yield export.end_line(count, head.size, unproven)
