"""Corrections: a new packet that supersedes an earlier one, to the same recipients, naming what was wrong.

A correction is an ordinary submission whose manifest carries ``corrects: {"packet_id", "fields"}``
(field names only). :func:`violations` checks it against the earlier packet when it is submitted
(the rules of :mod:`exchange.policy.rules_corrections`, refused with 422 like every sharing rule,
and the rejection recorded); :func:`supersede` runs inside the change that *delivers* the
correction and steps the earlier packet ``delivered`` → ``superseded`` (compare-and-set), cancels
what its recipients still owed on it (the correction carries its own deadlines) and records
``packet.superseded`` once.

A correction held for a manager's approval (sharing without consent) supersedes nothing until it
is approved and delivered: until then the earlier packet is all its recipients have, so it stays
live with its deadlines. If by then the earlier packet was recalled or superseded by another
correction, the approval is refused with 409 (the manager may refuse the correction, or the
sender recall it), so a correction is never delivered for a packet it can no longer replace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from exchange.domain import Actor, DeliveryRecord, Event, PacketRecord
from exchange.errors import Forbidden, Violation
from exchange.lifecycle import PacketState, Party, Step, describe
from exchange.policy.rules_corrections import SERVICE_RULES
from exchange.service import steps
from exchange.service.context import Change, ServiceContext

_SOURCES = {rule.id: rule.source for rule in SERVICE_RULES}


def corrects(manifest: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """The packet a manifest corrects and the names of its fields that were wrong (``None, ()`` if none)."""
    section = manifest.get("corrects")
    if not isinstance(section, Mapping):
        return None, ()
    return str(section["packet_id"]), tuple(str(name) for name in section["fields"])


def _violation(rule: str, path: str, message: str) -> Violation:
    return Violation(rule, path, message, _SOURCES[rule])


def check_against(
    sender: str, manifest: Mapping[str, Any], earlier: PacketRecord | None, deliveries: Sequence[DeliveryRecord]
) -> list[Violation]:
    """Pure: the correction rules ``manifest`` breaks, given the earlier packet and its copies."""
    earlier_id, fields = corrects(manifest)
    if earlier_id is None:
        return []
    if earlier is None or earlier.sender_member != sender:
        # The same answer whether it does not exist or is another member's.
        return [
            _violation(
                "correction.unknown_packet",
                "/corrects/packet_id",
                "You can only correct a packet you sent yourself; this id is not among them.",
            )
        ]
    found: list[Violation] = []
    if earlier.state is not PacketState.DELIVERED:
        found.append(
            _violation(
                "correction.not_delivered",
                "/corrects/packet_id",
                f"Only a delivered packet can be corrected; {earlier.id} is {describe(earlier.state)}.",
            )
        )
    before = {d.recipient_member for d in deliveries}
    now = {r["member"] for r in manifest.get("recipients", [])}
    if before != now:
        missing, extra = sorted(before - now), sorted(now - before)
        parts = ([f"it leaves out {', '.join(missing)}"] if missing else []) + (
            [f"it adds {', '.join(extra)}"] if extra else []
        )
        found.append(
            _violation(
                "correction.recipients_differ",
                "/recipients",
                "A correction goes to exactly the recipients of the packet it corrects, but "
                + " and ".join(parts)
                + ". To reach someone else, send them a packet of its own.",
            )
        )
    shared = {str(f.get("name")) for f in manifest_fields(earlier)}
    for index, name in enumerate(fields):
        if name not in shared:
            found.append(
                _violation(
                    "correction.field_not_in_original",
                    f"/corrects/fields/{index}",
                    f"The packet you are correcting has no field {name}; name only fields it shared"
                    f" ({', '.join(sorted(shared))}).",
                )
            )
    return found


def manifest_fields(packet: PacketRecord) -> list[Mapping[str, Any]]:
    """The field entries (names and labels, never values) of a stored packet's manifest."""
    fields = json.loads(packet.manifest).get("fields", [])
    return [f for f in fields if isinstance(f, Mapping)]


async def violations(ctx: ServiceContext, actor: Actor, manifest: Mapping[str, Any]) -> list[Violation]:
    """The correction rules a submission breaks; empty when it corrects nothing (checked before the change)."""
    earlier_id, _ = corrects(manifest)
    if earlier_id is None:
        return []
    earlier = await ctx.store.get_packet(earlier_id)
    deliveries = await ctx.store.deliveries_for_packet(earlier_id) if earlier is not None else []
    return check_against(actor.member_id, manifest, earlier, deliveries)


async def supersede(change: Change, correction: PacketRecord) -> None:
    """Inside the change that delivers ``correction``: the earlier packet becomes superseded by it.

    Raises :class:`exchange.lifecycle.TransitionNotAllowed` (409) if the earlier packet is no
    longer delivered (recalled or superseded meanwhile); the whole change then rolls back.
    """
    if correction.supersedes is None:
        return
    earlier = await steps.packet_in(change, correction.supersedes)
    if earlier.sender_member != correction.sender_member:  # checked at submission; never trust it twice
        raise Forbidden("Only the sender of a packet can correct it.")
    transition = await steps.step_packet(
        change,
        earlier,
        Step.SUPERSEDE,
        Party.SENDER,
        superseded_by=correction.id,
        corrected_fields=correction.corrected_fields,
    )
    # What the recipients owed on the earlier packet they now owe on the correction, by its deadlines.
    await steps.settle(change, earlier.id, steps.DELIVERY_OBLIGATIONS, None, met=False)
    assert transition.ledger_type is not None
    await change.record(
        Event(
            transition.ledger_type,
            correction.sender_member,
            correction.sender_agency,
            packet=earlier.id,
            manifest_digest=earlier.manifest_digest,
            details={"superseded_by": correction.id, "fields": list(correction.corrected_fields)},
        )
    )
