"""Escalations: who sees what has fallen overdue, in words, and the record of acknowledging it.

DESIGN.md section 5: an overdue acknowledgement or action report is "an escalation visible to the
sender, the sender's manager and the receiving agency's safeguarding lead". Precisely, a member
sees an escalation when they

* are the member waiting for it (``owed_to_member``: the sender or requester) or the member who
  owes it (``owed_by_member``: the recipient);
* are a manager or safeguarding lead of the agency waiting for it (the sender's agency);
* are a safeguarding lead of the agency that owes it (the receiving agency).

Nobody else does: not an auditor (who reads the ledger, where ``escalation.raised`` is recorded),
not an agency admin, not an unrelated practitioner. An escalation someone cannot see is a 404, the
same answer as for one that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from exchange.domain import Actor, Escalation, Event, Role, iso, parse_iso
from exchange.errors import Conflict, NotFound
from exchange.service import paging
from exchange.service.context import ServiceContext


class EscalationFilter(StrEnum):
    #: Neither acknowledged by anyone nor resolved by the obligation being met.
    OPEN = "open"


class AlreadyAcknowledged(Conflict):
    code = "escalation.already_acknowledged"
    title = "This escalation has already been acknowledged"


#: What each kind of escalation says is overdue.
_OVERDUE: Mapping[str, str] = {
    "ack": "acknowledgement of packet {packet}",
    "action": "action report on packet {packet}",
    "approval": "a manager's decision on sharing packet {packet} without consent",
    "query_answer": "answer to the sender's query about the action report on packet {packet}",
    "request_answer": "answer to information request {request}",
    "undelivered": "opening of packet {packet}: it was never opened in time and is now undelivered",
}


@dataclass(frozen=True)
class _Scope:
    """The escalations a member may see, as the store's listing takes them."""

    members: tuple[str, ...]
    agencies_as_sender: tuple[str, ...]
    agencies_as_owing: tuple[str, ...]

    @classmethod
    def of(cls, actor: Actor) -> _Scope:
        roles = actor.member.roles
        sender_side = roles & {Role.MANAGER, Role.SAFEGUARDING_LEAD}
        return cls(
            members=(actor.member_id,),
            agencies_as_sender=(actor.agency_id,) if sender_side else (),
            agencies_as_owing=(actor.agency_id,) if Role.SAFEGUARDING_LEAD in roles else (),
        )

    def sees(self, escalation: Escalation) -> bool:
        return (
            escalation.owed_to_member in self.members
            or escalation.owed_by_member in self.members
            or escalation.owed_to_agency in self.agencies_as_sender
            or escalation.owed_by_agency in self.agencies_as_owing
        )


async def listing(
    ctx: ServiceContext, actor: Actor, limit: int = 100, cursor: str | None = None, states: str | None = None
) -> dict[str, Any]:
    """The escalations this member may see, newest first, paged; ``state=open`` for those still open."""
    scope = _Scope.of(actor)
    wanted = paging.states(states, EscalationFilter)
    rows = await ctx.store.escalations(
        members=scope.members,
        agencies_as_sender=scope.agencies_as_sender,
        agencies_as_owing=scope.agencies_as_owing,
        limit=limit + 1,
        after=paging.decode(cursor),
        open_only=EscalationFilter.OPEN in (wanted or ()),
    )
    names = _Names(ctx)
    items = [await describe(names, e) for e in rows[:limit]]
    return paging.page(items, rows, limit, lambda row: (row.raised_at, row.id), key="escalations")


async def acknowledge(ctx: ServiceContext, actor: Actor, escalation_id: str) -> dict[str, Any]:
    """Record that a member who can see an escalation has taken it in hand; once only (409 after)."""
    scope = _Scope.of(actor)
    async with ctx.change() as change:
        escalation = await change.tx.get_escalation(escalation_id)
        if escalation is None or not scope.sees(escalation):
            raise NotFound("No such escalation among those you can see.")
        if not await change.tx.acknowledge_escalation(escalation.id, actor.member_id, iso(change.now)):
            raise AlreadyAcknowledged(
                f"{escalation.acknowledged_by} acknowledged this escalation at {escalation.acknowledged_at}.",
                extras={"acknowledged_by": escalation.acknowledged_by, "acknowledged_at": escalation.acknowledged_at},
            )
        receipt = await change.record(
            Event(
                "escalation.acknowledged",
                actor.member_id,
                actor.agency_id,
                packet=escalation.packet_id,
                details={
                    key: value
                    for key, value in {
                        "escalation": escalation.id,
                        "obligation": escalation.obligation_id,
                        "kind": escalation.kind,
                        "request": escalation.request_id,
                    }.items()
                    if value is not None
                },
            )
        )
        acknowledged = await change.tx.get_escalation(escalation.id)
    assert acknowledged is not None
    return await describe(_Names(ctx), acknowledged) | {
        "ledger": {"seq": receipt.seq, "leaf_hash": receipt.leaf_hash.hex()}
    }


class _Names:
    """Display names of members and agencies, looked up once per listing."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._members: dict[str, str | None] = {}
        self._agencies: dict[str, str | None] = {}

    async def member(self, member_id: str | None) -> str | None:
        if member_id is None:
            return None
        if member_id not in self._members:
            member = await self._ctx.store.get_member(member_id)
            self._members[member_id] = member.display_name if member else None
        return self._members[member_id]

    async def agency(self, agency_id: str | None) -> str | None:
        if agency_id is None:
            return None
        if agency_id not in self._agencies:
            agency = await self._ctx.store.get_agency(agency_id)
            self._agencies[agency_id] = agency.name if agency else None
        return self._agencies[agency_id]


async def _party(names: _Names, member: str | None, agency: str | None) -> dict[str, Any]:
    return {
        "member": member,
        "member_name": await names.member(member),
        "agency": agency,
        "agency_name": await names.agency(agency),
    }


def _who(party: Mapping[str, Any]) -> str:
    person = party["member_name"] or party["member"]
    place = party["agency_name"] or party["agency"]
    if person and place:
        return f"{person} of {place}"
    return str(person or place or "nobody named")


def state_of(escalation: Escalation) -> str:
    if escalation.resolved_at is not None:
        return "resolved"
    if escalation.acknowledged_at is not None:
        return "acknowledged"
    return "open"


async def describe(names: _Names, escalation: Escalation) -> dict[str, Any]:
    """An escalation as its readers see it: what is overdue, since when, owed by whom, and how it ended."""
    owed_by = await _party(names, escalation.owed_by_member, escalation.owed_by_agency)
    owed_to = await _party(names, escalation.owed_to_member, escalation.owed_to_agency)
    template = _OVERDUE.get(escalation.kind, escalation.kind + " owed on {packet}{request}")
    what = template.format(packet=escalation.packet_id or "", request=escalation.request_id or "")
    resolved_late = (
        parse_iso(escalation.resolved_at) > parse_iso(escalation.due) if escalation.resolved_at is not None else None
    )
    words = f"Overdue since {escalation.due}: {what}, owed by {_who(owed_by)} to {_who(owed_to)}."
    if escalation.resolved_at is not None:
        words += f" Resolved {'late, ' if resolved_late else ''}at {escalation.resolved_at}."
    elif escalation.acknowledged_at is not None:
        who = await names.member(escalation.acknowledged_by) or escalation.acknowledged_by
        words += f" Acknowledged by {who} at {escalation.acknowledged_at}; still owed."
    else:
        words += " Still owed."
    return {
        "escalation_id": escalation.id,
        "kind": escalation.kind,
        "state": state_of(escalation),
        "overdue": what,
        "words": words,
        "due": escalation.due,
        "raised_at": escalation.raised_at,
        "packet_id": escalation.packet_id,
        "request_id": escalation.request_id,
        "owed_by": owed_by,
        "owed_to": owed_to,
        "acknowledged_at": escalation.acknowledged_at,
        "acknowledged_by": escalation.acknowledged_by,
        "resolved_at": escalation.resolved_at,
        "resolved_late": resolved_late,
    }
