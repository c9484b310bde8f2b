"""The packet lifecycle as data: states, the transition table, and the predicates built on them.

DESIGN.md section 5: submitted → (awaiting approval → approved | refused) → delivered → opened →
acknowledged → action reported → confirmed by the sender (the loop closed); also recalled (before
any recipient opened it), superseded (by a correction) and undelivered (never opened in time).

Small machines, each a table ``(state, event) -> Transition``:

* :data:`PACKET_TRANSITIONS`: the packet as a whole (held, delivered, refused, recalled, superseded);
* :data:`APPROVAL_TRANSITIONS`: the manager's decision on sharing without consent (exactly one);
* :data:`DELIVERY_TRANSITIONS`: each recipient's copy, which carries the feedback loop;
* :data:`REQUEST_TRANSITIONS`: an information request, answered by a packet or declined (exactly one).

Pure: no I/O, no clock. The service reads the current state inside its write transaction, asks
:func:`next_delivery_state` (or its siblings) what the event leads to and whether this party may
cause it, and writes the new state with a compare-and-set on the state it read. A refused
transition raises :class:`TransitionNotAllowed` (409, a stable code), never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from exchange.errors import Conflict


class PacketState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    REFUSED = "refused"
    DELIVERED = "delivered"
    RECALLED = "recalled"
    SUPERSEDED = "superseded"


class ApprovalState(StrEnum):
    NOT_NEEDED = "not_needed"
    #: Held until a manager decides.
    AWAITING = "awaiting"
    #: Imminent harm: delivered first, the decision owed by ``approval_due``.
    OWED = "owed"
    APPROVED = "approved"
    REFUSED = "refused"
    #: The sender recalled the packet before anyone decided.
    CANCELLED = "cancelled"


class DeliveryState(StrEnum):
    #: Held for approval; the recipient cannot see it.
    PENDING = "pending"
    #: Approval refused before delivery: the recipient never sees it.
    WITHDRAWN = "withdrawn"
    DELIVERED = "delivered"
    OPENED = "opened"
    ACKNOWLEDGED = "acknowledged"
    #: The recipient said what they did or will do; the sender is to confirm or query it.
    ACTION_REPORTED = "action_reported"
    #: The sender queried the report; the recipient must answer with another report.
    QUERIED = "queried"
    #: The sender confirmed the report: the loop is closed.
    CONFIRMED = "confirmed"
    RECALLED = "recalled"
    #: Never opened within its window: reported back to the sender, not dropped (as MESH does).
    UNDELIVERED = "undelivered"


#: What a recipient's inbox can show: every state of a copy that has reached them. A pending copy is
#: held for approval and a withdrawn one was refused before delivery: neither ever reaches them.
RECIPIENT_SEES = frozenset(DeliveryState) - {DeliveryState.PENDING, DeliveryState.WITHDRAWN}

#: What a manager's approval queue shows: packets held for a decision, or delivered with it owed.
AWAITING_DECISION = frozenset({ApprovalState.AWAITING, ApprovalState.OWED})


class RequestState(StrEnum):
    """An information request: open until a holder answers it with a packet or declines it."""

    OPEN = "open"
    ANSWERED = "answered"
    DECLINED = "declined"


class Party(StrEnum):
    """Who may cause a transition: a relationship to the packet, not just a role."""

    #: For a request: the requester.
    SENDER = "sender"
    #: For a request: a holder (a member the request's details were sealed to).
    RECIPIENT = "recipient"
    #: A manager or safeguarding lead of the sender's agency who is not the sender.
    APPROVER = "approver"
    #: The exchange itself: the deadline worker or the service acting on another transition.
    SYSTEM = "system"


class Step(StrEnum):
    """What happens to a packet or a copy (the "event" of state × event → next state)."""

    APPROVE = "approve"
    REFUSE = "refuse"
    RELEASE = "release"
    WITHDRAW = "withdraw"
    OPEN = "open"
    ACKNOWLEDGE = "acknowledge"
    REPORT = "report"
    QUERY = "query"
    CONFIRM = "confirm"
    RECALL = "recall"
    SUPERSEDE = "supersede"
    EXPIRE = "expire"
    #: A holder answers an information request with a packet (``in_reply_to``).
    ANSWER = "answer"
    #: A holder declines an information request, with reasons.
    DECLINE = "decline"


S = TypeVar("S", PacketState, ApprovalState, DeliveryState, RequestState)


@dataclass(frozen=True)
class Transition(Generic[S]):
    """Where ``event`` leads from a state, who may cause it, and the ledger event that records it."""

    next: S
    party: Party
    #: The ledger event type; None when another transition of the same change records it.
    ledger_type: str | None


_P, _A, _D = PacketState, ApprovalState, DeliveryState
_E = Step

PACKET_TRANSITIONS: Mapping[tuple[PacketState, Step], Transition[PacketState]] = {
    (_P.AWAITING_APPROVAL, _E.APPROVE): Transition(_P.DELIVERED, Party.APPROVER, "packet.approved"),
    (_P.AWAITING_APPROVAL, _E.REFUSE): Transition(_P.REFUSED, Party.APPROVER, "packet.approval_refused"),
    (_P.AWAITING_APPROVAL, _E.RECALL): Transition(_P.RECALLED, Party.SENDER, "packet.recalled"),
    (_P.DELIVERED, _E.RECALL): Transition(_P.RECALLED, Party.SENDER, "packet.recalled"),
    (_P.DELIVERED, _E.SUPERSEDE): Transition(_P.SUPERSEDED, Party.SENDER, "packet.superseded"),
}

APPROVAL_TRANSITIONS: Mapping[tuple[ApprovalState, Step], Transition[ApprovalState]] = {
    # The packet's own transition records a held packet's decision; an owed one is recorded here.
    (_A.AWAITING, _E.APPROVE): Transition(_A.APPROVED, Party.APPROVER, None),
    (_A.AWAITING, _E.REFUSE): Transition(_A.REFUSED, Party.APPROVER, None),
    (_A.AWAITING, _E.RECALL): Transition(_A.CANCELLED, Party.SENDER, None),
    (_A.OWED, _E.APPROVE): Transition(_A.APPROVED, Party.APPROVER, "packet.approved"),
    (_A.OWED, _E.REFUSE): Transition(_A.REFUSED, Party.APPROVER, "packet.approval_refused"),
    # Imminent harm sent first, then recalled before anyone opened it: nothing was disclosed, so
    # there is nothing left for a manager to approve after the event.
    (_A.OWED, _E.RECALL): Transition(_A.CANCELLED, Party.SENDER, None),
}

DELIVERY_TRANSITIONS: Mapping[tuple[DeliveryState, Step], Transition[DeliveryState]] = {
    (_D.PENDING, _E.RELEASE): Transition(_D.DELIVERED, Party.SYSTEM, "packet.delivered"),
    (_D.PENDING, _E.WITHDRAW): Transition(_D.WITHDRAWN, Party.SYSTEM, None),
    (_D.PENDING, _E.RECALL): Transition(_D.RECALLED, Party.SENDER, None),
    (_D.DELIVERED, _E.OPEN): Transition(_D.OPENED, Party.RECIPIENT, "packet.opened"),
    # Acknowledging implies the copy was fetched; a client that skipped the fetch still acknowledges.
    (_D.DELIVERED, _E.ACKNOWLEDGE): Transition(_D.ACKNOWLEDGED, Party.RECIPIENT, "packet.acknowledged"),
    (_D.OPENED, _E.ACKNOWLEDGE): Transition(_D.ACKNOWLEDGED, Party.RECIPIENT, "packet.acknowledged"),
    (_D.ACKNOWLEDGED, _E.REPORT): Transition(_D.ACTION_REPORTED, Party.RECIPIENT, "packet.action_reported"),
    # An answer to a query is another report.
    (_D.QUERIED, _E.REPORT): Transition(_D.ACTION_REPORTED, Party.RECIPIENT, "packet.action_reported"),
    (_D.ACTION_REPORTED, _E.CONFIRM): Transition(_D.CONFIRMED, Party.SENDER, "packet.action_confirmed"),
    (_D.ACTION_REPORTED, _E.QUERY): Transition(_D.QUERIED, Party.SENDER, "packet.action_queried"),
    (_D.DELIVERED, _E.RECALL): Transition(_D.RECALLED, Party.SENDER, None),
    (_D.DELIVERED, _E.EXPIRE): Transition(_D.UNDELIVERED, Party.SYSTEM, "packet.undelivered"),
}


_R = RequestState

REQUEST_TRANSITIONS: Mapping[tuple[RequestState, Step], Transition[RequestState]] = {
    # The answer's packet.submitted records the packet; request.answered records the request's step.
    (_R.OPEN, _E.ANSWER): Transition(_R.ANSWERED, Party.RECIPIENT, "request.answered"),
    (_R.OPEN, _E.DECLINE): Transition(_R.DECLINED, Party.RECIPIENT, "request.declined"),
    # A correction of the answering packet answers the request in its place (packet.superseded records it).
    (_R.ANSWERED, _E.SUPERSEDE): Transition(_R.ANSWERED, Party.RECIPIENT, None),
}


class TransitionNotAllowed(Conflict):
    """The event cannot happen in the current state (or not by this party): 409 with a stable code."""

    code = "lifecycle.transition_not_allowed"
    title = "That step does not fit where this packet is in its lifecycle"


class NotYourStep(TransitionNotAllowed):
    """The event exists in this state, but belongs to another party."""

    code = "lifecycle.not_your_step"
    status = 403
    title = "This step belongs to someone else"


_WORDS: Mapping[Step, str] = {
    Step.APPROVE: "approve it",
    Step.REFUSE: "refuse it",
    Step.RELEASE: "deliver it",
    Step.WITHDRAW: "withdraw it",
    Step.OPEN: "open it",
    Step.ACKNOWLEDGE: "acknowledge it",
    Step.REPORT: "report the action taken",
    Step.QUERY: "query the action report",
    Step.CONFIRM: "confirm the action report",
    Step.RECALL: "recall it",
    Step.SUPERSEDE: "correct it",
    Step.EXPIRE: "mark it undelivered",
    Step.ANSWER: "answer it",
    Step.DECLINE: "decline it",
}


def _next(
    table: Mapping[tuple[S, Step], Transition[S]], what: str, state: S, event: Step, party: Party
) -> Transition[S]:
    transition = table.get((state, event))
    if transition is None:
        raise TransitionNotAllowed(
            f"You cannot {_WORDS[event]}: the {what} is {describe(state)}.",
            extras={"state": state.value, "event": event.value},
        )
    if transition.party is not party and party is not Party.SYSTEM:
        raise NotYourStep(
            f"Only the {transition.party.value} can {_WORDS[event]} at this point.",
            extras={"state": state.value, "event": event.value},
        )
    return transition


def next_packet_state(state: PacketState, event: Step, party: Party) -> Transition[PacketState]:
    """The packet's transition for ``event``; raises :class:`TransitionNotAllowed` if there is none."""
    return _next(PACKET_TRANSITIONS, "packet", state, event, party)


def next_approval_state(state: ApprovalState, event: Step, party: Party) -> Transition[ApprovalState]:
    """The approval's transition: exactly one decision, only while it is awaited or owed."""
    return _next(APPROVAL_TRANSITIONS, "approval", state, event, party)


def next_delivery_state(state: DeliveryState, event: Step, party: Party) -> Transition[DeliveryState]:
    """A recipient's copy's transition for ``event``; raises :class:`TransitionNotAllowed` if there is none."""
    return _next(DELIVERY_TRANSITIONS, "packet", state, event, party)


def next_request_state(state: RequestState, event: Step, party: Party) -> Transition[RequestState]:
    """An information request's transition: one answer or one decline, only while it is open."""
    return _next(REQUEST_TRANSITIONS, "request", state, event, party)


# ------------------------------------------------------------------------------ predicates

#: States in which the recipient sees the packet in their inbox.
VISIBLE = frozenset(set(DeliveryState) - {DeliveryState.PENDING, DeliveryState.WITHDRAWN})
#: States in which the recipient may fetch the sealed copy (content not yet removed).
OPENABLE = frozenset(
    {
        DeliveryState.DELIVERED,
        DeliveryState.OPENED,
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.ACTION_REPORTED,
        DeliveryState.QUERIED,
        DeliveryState.CONFIRMED,
    }
)
#: The recipient still owes an acknowledgement.
ACK_OWED = frozenset({DeliveryState.DELIVERED, DeliveryState.OPENED})
#: The recipient still owes an action report (the decision, for a referral).
ACTION_OWED = frozenset({DeliveryState.DELIVERED, DeliveryState.OPENED, DeliveryState.ACKNOWLEDGED})
#: The sender owes a confirmation or a query.
REVIEW_OWED = frozenset({DeliveryState.ACTION_REPORTED})
#: Nothing more can happen to the copy.
FINAL = frozenset({DeliveryState.WITHDRAWN, DeliveryState.CONFIRMED, DeliveryState.RECALLED, DeliveryState.UNDELIVERED})
#: A packet in these states is still live: its recipients' obligations stand.
LIVE_PACKET = frozenset({PacketState.DELIVERED})


def visible_to_recipient(state: DeliveryState) -> bool:
    return state in VISIBLE


def approval_owed(state: ApprovalState) -> bool:
    """A manager's decision is awaited (held) or owed (imminent harm delivered first)."""
    return state in (ApprovalState.AWAITING, ApprovalState.OWED)


#: Copies in these states have not been opened: the packet may still be recalled. An undelivered
#: copy (never opened in time) stays undelivered, since that is final; the others become recalled.
NOT_OPENED = frozenset({DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.UNDELIVERED})


def recallable(packet: PacketState, deliveries: Iterable[DeliveryState]) -> bool:
    """A sender may recall a packet only while no recipient has opened it."""
    return packet in (PacketState.AWAITING_APPROVAL, PacketState.DELIVERED) and all(
        d in NOT_OPENED for d in deliveries
    )


def obligation_stands(kind: str, packet: PacketState, delivery: DeliveryState) -> bool:
    """Whether an obligation of ``kind`` (``ack``, ``action``, ``query_answer``, ``expiry``) is still owed."""
    if packet not in LIVE_PACKET:
        return False
    if kind == "ack":
        return delivery in ACK_OWED
    if kind == "action":
        return delivery in ACTION_OWED
    if kind == "query_answer":
        return delivery is DeliveryState.QUERIED
    if kind == "expiry":
        return delivery is DeliveryState.DELIVERED
    return False


# Keyed by type and value: the three machines share some state names ("delivered", "refused").
_STATE_WORDS: Mapping[type, Mapping[str, str]] = {
    PacketState: {
        PacketState.AWAITING_APPROVAL: "waiting for a manager's approval",
        PacketState.REFUSED: "refused by a manager and never delivered",
        PacketState.DELIVERED: "delivered",
        PacketState.RECALLED: "recalled by its sender",
        PacketState.SUPERSEDED: "superseded by a correction",
    },
    ApprovalState: {
        ApprovalState.NOT_NEEDED: "not needed",
        ApprovalState.AWAITING: "awaited",
        ApprovalState.OWED: "owed (the packet went first)",
        ApprovalState.APPROVED: "already given",
        ApprovalState.REFUSED: "already refused",
        ApprovalState.CANCELLED: "cancelled (the packet was recalled)",
    },
    DeliveryState: {
        DeliveryState.PENDING: "held for approval",
        DeliveryState.WITHDRAWN: "withdrawn (approval refused)",
        DeliveryState.DELIVERED: "delivered, not yet opened",
        DeliveryState.OPENED: "opened, not yet acknowledged",
        DeliveryState.ACKNOWLEDGED: "acknowledged, action report owed",
        DeliveryState.ACTION_REPORTED: "action reported, waiting for the sender to confirm or query",
        DeliveryState.QUERIED: "queried by the sender, an answer owed",
        DeliveryState.CONFIRMED: "loop closed: the action was confirmed by the sender",
        DeliveryState.RECALLED: "recalled by the sender before it was opened",
        DeliveryState.UNDELIVERED: "undelivered: never opened in time",
    },
    RequestState: {
        RequestState.OPEN: "open, waiting for the holder's answer",
        RequestState.ANSWERED: "answered with a packet",
        RequestState.DECLINED: "declined by the holder, with reasons",
    },
}


def describe(state: PacketState | ApprovalState | DeliveryState | RequestState) -> str:
    """A state in words a practitioner reads (the outbox's loop state)."""
    return _STATE_WORDS[type(state)][state.value]


def markdown_table() -> str:
    """Every transition as a Markdown table (the README's, checked by a test so the two never drift)."""
    lines = ["| machine | from | step | who | to | ledger entry |", "|---|---|---|---|---|---|"]
    tables: tuple[tuple[str, Mapping[tuple[Any, Step], Transition[Any]]], ...] = (
        ("packet", PACKET_TRANSITIONS),
        ("approval", APPROVAL_TRANSITIONS),
        ("copy", DELIVERY_TRANSITIONS),
        ("request", REQUEST_TRANSITIONS),
    )
    for machine, table in tables:
        for (state, step), transition in table.items():
            entry = f"`{transition.ledger_type}`" if transition.ledger_type else "(in the step it belongs to)"
            lines.append(
                f"| {machine} | `{state.value}` | {step.value} | {transition.party.value}"
                f" | `{transition.next.value}` | {entry} |"
            )
    return "\n".join(lines)
