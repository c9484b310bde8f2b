"""The lifecycle tables: pure, total, and closed under every step a party may try."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange import lifecycle
from exchange.lifecycle import (
    APPROVAL_TRANSITIONS,
    DELIVERY_TRANSITIONS,
    PACKET_TRANSITIONS,
    ApprovalState,
    DeliveryState,
    NotYourStep,
    PacketState,
    Party,
    Step,
    Transition,
    TransitionNotAllowed,
)


def _reachable(
    table: Mapping[tuple[lifecycle.S, Step], Transition[lifecycle.S]], start: lifecycle.S
) -> set[lifecycle.S]:
    seen, queue = {start}, deque([start])
    while queue:
        state = queue.popleft()
        for (source, _), transition in table.items():
            if source == state and transition.next not in seen:
                seen.add(transition.next)
                queue.append(transition.next)
    return seen


def test_every_delivery_state_is_reachable_from_pending() -> None:
    """No copy state is dead code: each can be reached from a freshly submitted copy."""
    assert _reachable(DELIVERY_TRANSITIONS, DeliveryState.PENDING) == set(DeliveryState)


def test_every_packet_state_is_reachable_from_submission() -> None:
    """Held or delivered at once, every packet state can be reached."""
    reached = _reachable(PACKET_TRANSITIONS, PacketState.AWAITING_APPROVAL)
    assert reached | _reachable(PACKET_TRANSITIONS, PacketState.DELIVERED) == set(PacketState)


def test_the_approval_is_decided_once() -> None:
    """After approval or refusal nothing can change the decision again."""
    for decided in (ApprovalState.APPROVED, ApprovalState.REFUSED, ApprovalState.CANCELLED):
        assert not [key for key in APPROVAL_TRANSITIONS if key[0] is decided]


def test_final_copy_states_have_no_way_out() -> None:
    """A confirmed, recalled, withdrawn or undelivered copy never moves again."""
    for state in lifecycle.FINAL:
        assert not [key for key in DELIVERY_TRANSITIONS if key[0] is state]


def test_the_loop_closes_only_through_a_report_and_a_confirmation() -> None:
    """Confirmed is reached only from action reported, and action reported only by a report."""
    into_confirmed = [key for key, t in DELIVERY_TRANSITIONS.items() if t.next is DeliveryState.CONFIRMED]
    assert into_confirmed == [(DeliveryState.ACTION_REPORTED, Step.CONFIRM)]
    into_reported = {key[1] for key, t in DELIVERY_TRANSITIONS.items() if t.next is DeliveryState.ACTION_REPORTED}
    assert into_reported == {Step.REPORT}


def test_every_recipient_and_sender_step_is_recorded() -> None:
    """Each step a member takes on a copy writes a ledger entry (the service writes exactly that one)."""
    for (_, _), transition in DELIVERY_TRANSITIONS.items():
        if transition.party in (Party.RECIPIENT,) or transition.next is DeliveryState.CONFIRMED:
            assert transition.ledger_type is not None


def test_every_state_has_words() -> None:
    """The outbox can say every state in words."""
    for enum in (PacketState, ApprovalState, DeliveryState):
        for state in enum:
            assert lifecycle.describe(state)


def test_a_step_by_the_wrong_party_is_forbidden_not_a_conflict() -> None:
    """The sender cannot acknowledge for the recipient: 403, with the lifecycle's code."""
    with pytest.raises(NotYourStep) as refused:
        lifecycle.next_delivery_state(DeliveryState.OPENED, Step.ACKNOWLEDGE, Party.SENDER)
    assert refused.value.status == 403
    assert refused.value.code == "lifecycle.not_your_step"


def test_acknowledging_twice_is_a_conflict() -> None:
    """A second acknowledgement is a 409 naming the state and the step."""
    with pytest.raises(TransitionNotAllowed) as refused:
        lifecycle.next_delivery_state(DeliveryState.ACKNOWLEDGED, Step.ACKNOWLEDGE, Party.RECIPIENT)
    assert refused.value.status == 409
    assert refused.value.extras == {"state": "acknowledged", "event": "acknowledge"}


@given(st.sampled_from(list(DeliveryState)), st.sampled_from(list(Step)), st.sampled_from(list(Party)))
def test_a_copy_step_moves_by_the_table_or_is_refused(state: DeliveryState, step: Step, party: Party) -> None:
    """For any state, step and party: the table's transition, or a refusal — never anything else."""
    transition = DELIVERY_TRANSITIONS.get((state, step))
    if transition is None:
        with pytest.raises(TransitionNotAllowed):
            lifecycle.next_delivery_state(state, step, party)
    elif transition.party is not party and party is not Party.SYSTEM:
        with pytest.raises(NotYourStep):
            lifecycle.next_delivery_state(state, step, party)
    else:
        assert lifecycle.next_delivery_state(state, step, party) == transition


@given(st.lists(st.tuples(st.sampled_from(list(Step)), st.sampled_from(list(Party))), max_size=30))
def test_any_walk_stays_inside_the_machine(walk: list[tuple[Step, Party]]) -> None:
    """Whatever members try, in any order, a copy is always in a known state, and final states stick."""
    state = DeliveryState.PENDING
    for step, party in walk:
        try:
            moved = lifecycle.next_delivery_state(state, step, party).next
        except TransitionNotAllowed:
            continue
        assert state not in lifecycle.FINAL
        state = moved
    assert state in set(DeliveryState)


@given(st.lists(st.sampled_from([DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.OPENED]), max_size=6))
def test_a_packet_is_recallable_only_while_nobody_opened_it(copies: list[DeliveryState]) -> None:
    """Recall is allowed exactly when every copy is still pending or unopened."""
    expected = DeliveryState.OPENED not in copies
    assert lifecycle.recallable(PacketState.DELIVERED, copies) is expected
    assert not lifecycle.recallable(PacketState.RECALLED, copies)


def test_obligations_lapse_once_the_packet_is_no_longer_live() -> None:
    """A recalled or superseded packet owes nothing more; a delivered one owes its acknowledgement."""
    assert lifecycle.obligation_stands("ack", PacketState.DELIVERED, DeliveryState.OPENED)
    assert not lifecycle.obligation_stands("ack", PacketState.SUPERSEDED, DeliveryState.OPENED)
    assert not lifecycle.obligation_stands("ack", PacketState.DELIVERED, DeliveryState.ACKNOWLEDGED)
    assert lifecycle.obligation_stands("action", PacketState.DELIVERED, DeliveryState.ACKNOWLEDGED)
    assert lifecycle.obligation_stands("query_answer", PacketState.DELIVERED, DeliveryState.QUERIED)
    assert lifecycle.obligation_stands("expiry", PacketState.DELIVERED, DeliveryState.DELIVERED)
    assert not lifecycle.obligation_stands("expiry", PacketState.DELIVERED, DeliveryState.OPENED)
