"""The feedback loop on a real server: report, confirm, query and answer, reply to a consultation."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import crypto, feedback, statements
from exchange.client import ApiError, ExchangeClient
from exchange.errors import CryptoError, InvalidRequest
from exchange.examples import referral
from tests.conftest import Deployment, beside, ledger_entries, store_of

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines

NARRATIVE = "Strategy discussion held with police and health; s.47 enquiry opened."


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


async def ledger_types(deployment: Deployment, packet_id: str) -> Counter[str]:
    """How many entries of each type the ledger holds about one packet."""
    return Counter(entry["type"] for entry in await ledger_entries(deployment, packet=packet_id))


async def ledger_details(deployment: Deployment, packet_id: str, event_type: str) -> list[dict[str, Any]]:
    return [entry["details"] for entry in await ledger_entries(deployment, packet=packet_id, type=event_type)]


async def obligations(deployment: Deployment, packet_id: str) -> dict[str, str]:
    """Each of the packet's obligations by kind and state (``kind`` → ``state``; kinds once each here)."""
    return {o.kind: o.state for o in await store_of(deployment).obligations_for(packet_id)}


async def _referred_and_acknowledged(deployment: Deployment, to: str = "csc-duty") -> str:
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([_id(deployment, to)]))
    async with deployment.client(to) as recipient:
        await recipient.acknowledge(sent["packet_id"])
    return str(sent["packet_id"])


def consultation(to: list[str]) -> dict[str, Any]:
    """An anonymous consultation packet file: a situation and a question, nothing that identifies anyone."""
    as_of = "2026-11-20"
    return {
        "purpose": "anonymous_consultation",
        "kind": "consultation",
        "urgency": "routine",
        "to": to,
        "lawful_basis": {"article6": "public_task", "legal_power": ["children_act_2004_s11"]},
        "consent": {"status": "not_required"},
        "transparency": {"status": "not_applicable"},
        "proportionality": {
            "risk_level": "not_yet_known",
            "imminent": False,
            "could_wait": True,
            "expected_benefit": "seeks_advice",
            "relationship_impact_considered": True,
        },
        "necessity": "I need advice on whether this meets the threshold for a referral.",
        "fields": {
            "anonymised_case_summary": {
                "value": "A pupil has arrived hungry several mornings this month and says there is no food at home.",
                "label": "fact_observed",
                "currency": "current",
                "as_of": as_of,
            },
            "question_asked": {
                "value": "Does this meet the threshold for a referral, or should we start early help?",
                "label": "opinion",
                "author_role": "designated_safeguarding_lead",
                "currency": "current",
                "as_of": as_of,
            },
        },
    }


# ------------------------------------------------------------------------------ the loop end to end


async def test_the_full_loop_closes_with_one_ledger_entry_per_transition(deployment: Deployment) -> None:
    """Referral, acknowledgement, action report, confirmation: the copy ends confirmed, each step recorded once."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        reported = await recipient.report(packet_id, "strategy_discussion_s47_enquiry", NARRATIVE)
    assert reported["status"] == "action_reported" and reported["answers"] is None
    async with deployment.client("school-dsl") as dsl:
        outbox = await dsl.outbox()
        assert outbox[0]["recipients"][0]["action"] == "strategy_discussion_s47_enquiry"
        assert outbox[0]["recipients"][0]["loop"].startswith("action reported")
        seen = (await dsl.loop(packet_id)).recipient(duty)
        assert [s.step for s in seen.statements] == ["report"]
        assert seen.statements[0].note == {"narrative": NARRATIVE}
        confirmed = await dsl.confirm(packet_id, duty)
        assert confirmed["status"] == "confirmed" and confirmed["answers"] == reported["statement_id"]
        after = (await dsl.outbox())[0]["recipients"][0]
    assert after["status"] == "confirmed" and after["loop"].startswith("loop closed")
    assert after["confirmed_at"] is not None and after["reported_at"] is not None
    assert await ledger_types(deployment, packet_id) == Counter(
        {
            "packet.submitted": 1,
            "packet.delivered": 1,
            "packet.opened": 1,
            "packet.acknowledged": 1,
            "packet.action_reported": 1,
            "packet.action_confirmed": 1,
        }
    )
    [details] = await ledger_details(deployment, packet_id, "packet.action_reported")
    assert details["recipient"] == duty and details["action"] == "strategy_discussion_s47_enquiry"
    assert details["statement"] == reported["statement_id"] and details["on_time"] is True
    assert NARRATIVE not in str(details)
    assert (await obligations(deployment, packet_id))["action"] == "met"


async def test_a_query_is_answered_by_another_report_then_confirmed(deployment: Deployment) -> None:
    """The sender's sealed question reaches the recipient, whose answer is a second report; then the loop closes."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        first = await recipient.report(packet_id, "child_in_need_assessment_s17", "Assessment allocated today.")
    async with deployment.client("school-dsl") as dsl:
        queried = await dsl.query(packet_id, duty, "Who is the allocated social worker?")
    assert queried["status"] == "queried" and queried["answers"] == first["statement_id"]
    assert queried["answer_due"] is not None
    assert (await obligations(deployment, packet_id))["query_answer"] == "open"
    async with deployment.client("csc-duty") as recipient:
        mine = (await recipient.loop(packet_id)).recipient(duty)
        assert mine.status == "queried"
        assert mine.latest is not None and mine.latest.note == {"question": "Who is the allocated social worker?"}
        answer = await recipient.report(packet_id, "child_in_need_assessment_s17", "Alex Reid, from Monday.")
    assert answer["answers"] == queried["statement_id"]
    assert (await obligations(deployment, packet_id))["query_answer"] == "met"
    async with deployment.client("school-dsl") as dsl:
        closed = await dsl.confirm(packet_id, duty)
        loop = (await dsl.loop(packet_id)).recipient(duty)
    assert closed["answers"] == answer["statement_id"]
    assert [s.step for s in loop.statements] == ["report", "query", "report", "confirm"]
    assert [s.note for s in loop.statements if s.step == "report"] == [
        {"narrative": "Assessment allocated today."},
        {"narrative": "Alex Reid, from Monday."},
    ]
    counts = await ledger_types(deployment, packet_id)
    assert (counts["packet.action_reported"], counts["packet.action_queried"], counts["packet.action_confirmed"]) == (
        2,
        1,
        1,
    )


async def test_a_report_before_acknowledgement_is_refused_with_the_lifecycle_code(deployment: Deployment) -> None:
    """Delivered, or opened but not acknowledged: no report yet (409), and nothing is recorded."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([_id(deployment, "csc-duty")]))
    packet_id = sent["packet_id"]
    async with deployment.client("csc-duty") as recipient:
        with pytest.raises(ApiError) as delivered:
            await recipient.report(packet_id, "no_further_action")
        await recipient.open(packet_id)
        with pytest.raises(ApiError) as opened:
            await recipient.report(packet_id, "no_further_action")
    for refused, state in ((delivered, "delivered"), (opened, "opened")):
        assert refused.value.http_status == 409
        assert refused.value.problem_code == "lifecycle.transition_not_allowed"
        assert refused.value.problem["state"] == state
    assert (await ledger_types(deployment, packet_id))["packet.action_reported"] == 0


async def test_only_the_recipient_reports_and_only_the_sender_reviews(deployment: Deployment) -> None:
    """The sender cannot report and the recipient cannot confirm or query their own report (403)."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as sender_reports:
            await dsl.report(packet_id, "no_further_action")
    async with deployment.client("csc-duty") as recipient:
        await recipient.report(packet_id, "information_noted")
        with pytest.raises(ApiError) as recipient_confirms:
            await recipient.confirm(packet_id, duty)
        with pytest.raises(ApiError) as recipient_queries:
            await recipient.query(packet_id, duty, "Is this enough?")
    for refused in (sender_reports, recipient_confirms, recipient_queries):
        assert refused.value.http_status == 403
        assert refused.value.problem_code == "lifecycle.not_your_step"


async def test_a_third_party_sees_nothing_of_the_loop(deployment: Deployment) -> None:
    """A member neither sending nor receiving gets 404 for the loop, a report and a review alike."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        report = await recipient.report(packet_id, "information_noted")
    async with deployment.client("police-officer") as stranger:
        attempts = [
            stranger.request("GET", f"/v1/packets/{packet_id}/loop"),
            stranger.report(packet_id, "no_further_action"),
            stranger.request(
                "POST",
                f"/v1/packets/{packet_id}/recipients/{duty}/review",
                {
                    "decision": "confirm",
                    "answers": report["statement_id"],
                    "key_id": stranger.credentials.signing.key_id,
                    "signature": crypto.b64encode(b"\0" * 64),
                },
            ),
        ]
        for attempt in attempts:
            with pytest.raises(ApiError) as refused:
                await attempt
            assert refused.value.http_status == 404


async def test_each_recipient_sees_only_their_own_loop(deployment: Deployment) -> None:
    """Of two recipients, each reads only their own statements; the sender reads both."""
    duty, manager = _id(deployment, "csc-duty"), _id(deployment, "csc-manager")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty, manager]))
    packet_id = sent["packet_id"]
    for label, action in (("csc-duty", "child_in_need_assessment_s17"), ("csc-manager", "information_noted")):
        async with deployment.client(label) as recipient:
            await recipient.acknowledge(packet_id)
            await recipient.report(packet_id, action, f"{label} acted.")
    async with deployment.client("csc-manager") as other:
        theirs = await other.loop(packet_id)
    assert [r.member for r in theirs.recipients] == [manager]
    async with deployment.client("school-dsl") as dsl:
        everyone = await dsl.loop(packet_id)
        outbox = (await dsl.outbox())[0]["recipients"]
    expected = {duty: "child_in_need_assessment_s17", manager: "information_noted"}
    assert {r.member: r.latest_action for r in everyone.recipients} == expected
    assert {r["member"]: r["action"] for r in outbox} == expected


# ------------------------------------------------------------------------------ keys and notes


async def test_a_report_signed_with_a_revoked_key_is_refused(deployment: Deployment) -> None:
    """After the recipient rotates and revokes their old signing key, a report signed with it is refused."""
    packet_id = await _referred_and_acknowledged(deployment)
    old = deployment.credentials("csc-duty")
    rotated = old.rotated(crypto.SigningKey.generate(), crypto.EncryptionKey.generate(), retired=deployment.clock())
    async with ExchangeClient(deployment.url, old) as before:
        await before.add_signing_key(rotated.signing)
        await before.add_encryption_key(rotated.encryption.public_bytes)
    async with ExchangeClient(deployment.url, rotated) as recipient:
        await recipient.revoke_key(old.signing.key_id)
        loop = await recipient.loop(packet_id)
        statement = statements.loop_statement(
            "report", packet_id, loop.manifest_digest, recipient.member_id, recipient.member_id, action="referred_on"
        )
        with pytest.raises(ApiError) as refused:
            await recipient.request(
                "POST",
                f"/v1/packets/{packet_id}/reports",
                {
                    "action": "referred_on",
                    "answers": None,
                    "key_id": old.signing.key_id,
                    "signature": crypto.b64encode(old.signing.sign(statement)),
                },
            )
        assert refused.value.http_status == 422 and refused.value.problem_code == "crypto.invalid"
        assert "not a current signing key" in refused.value.problem["detail"]
        assert (await ledger_types(deployment, packet_id))["packet.action_reported"] == 0
        reported = await recipient.report(packet_id, "referred_on")
    assert reported["status"] == "action_reported"


async def test_the_sender_opens_the_narrative_and_no_one_else_can(deployment: Deployment) -> None:
    """The narrative is sealed to the sender: the recipient sees it is sealed, a third member's key cannot open it."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        await recipient.report(packet_id, "early_help_assessment", NARRATIVE)
        own = (await recipient.loop(packet_id)).recipient(duty).statements[0]
    assert own.note is None and own.note_sealed and own.note_for == _id(deployment, "school-dsl")
    async with deployment.client("school-dsl") as dsl:
        raw = await dsl.request("GET", f"/v1/packets/{packet_id}/loop")
        assert (await dsl.loop(packet_id)).recipient(duty).statements[0].note == {"narrative": NARRATIVE}
    item = raw["recipients"][0]["statements"][0]
    sealed = crypto.b64decode(item["sealed_note"])
    context = feedback.note_context("report", packet_id, duty, None)
    stranger = deployment.credentials("police-officer")
    for member in (_id(deployment, "school-dsl"), _id(deployment, "police-officer")):
        with pytest.raises(CryptoError):
            crypto.open_note(stranger.encryption, sealed, member, item["note_key"], context=context)


async def test_tampering_with_a_stored_note_or_statement_is_caught(deployment: Deployment) -> None:
    """A changed sealed note, statement or signature in the database fails the SDK's verification."""
    packet_id = await _referred_and_acknowledged(deployment)
    async with deployment.client("csc-duty") as recipient:
        await recipient.report(packet_id, "strategy_discussion_s47_enquiry", NARRATIVE)

    async def change(column: str, alter: Any) -> bytes:
        [(original,)] = await beside(deployment, f"SELECT {column} FROM loop_statements")  # noqa: S608 - fixed names
        await beside(deployment, f"UPDATE loop_statements SET {column} = ?", alter(bytes(original)))  # noqa: S608
        return bytes(original)

    async def restore(column: str, original: bytes) -> None:
        await beside(deployment, f"UPDATE loop_statements SET {column} = ?", original)  # noqa: S608 - fixed names

    def flip(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    def downgrade(data: bytes) -> bytes:
        return data.replace(b"strategy_discussion_s47_enquiry", b"no_further_action")

    async with deployment.client("school-dsl") as dsl:
        for column, alter in (("sealed_note", flip), ("statement", downgrade), ("signature", flip)):
            original = await change(column, alter)
            with pytest.raises(CryptoError):
                await dsl.loop(packet_id)
            await restore(column, original)
        assert (await dsl.loop(packet_id)).recipients[0].statements[0].note == {"narrative": NARRATIVE}


async def test_attack_a_note_moved_or_statements_reordered_in_the_database(deployment: Deployment) -> None:
    """A note moved onto another report, or a loop cut short, is caught; statements stored out of order still
    read in chain order."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        first = await recipient.report(packet_id, "referred_on", "Referred to the early help hub.")
    async with deployment.client("school-dsl") as dsl:
        await dsl.query(packet_id, duty, "Which hub?")
    async with deployment.client("csc-duty") as recipient:
        second = await recipient.report(packet_id, "referred_on", "The north hub.")
    moved = "UPDATE loop_statements SET created = '2000-01-01T00:00:00.000Z' WHERE id = ?"
    await beside(deployment, moved, second["statement_id"])
    async with deployment.client("school-dsl") as dsl:
        ordered = (await dsl.loop(packet_id)).recipient(duty).statements
        assert [s.step for s in ordered] == ["report", "query", "report"]
        await beside(
            deployment,
            "UPDATE loop_statements SET sealed_note = (SELECT sealed_note FROM loop_statements WHERE id = ?)"
            " WHERE id = ?",
            first["statement_id"],
            second["statement_id"],
        )
        with pytest.raises(CryptoError):
            await dsl.loop(packet_id)
        await beside(deployment, "DELETE FROM loop_statements WHERE id = ?", second["statement_id"])
        with pytest.raises(CryptoError, match="last statement"):
            await dsl.loop(packet_id)


async def test_a_statement_answering_an_old_statement_is_refused(deployment: Deployment) -> None:
    """After a query, a report that answers nothing (not the query) is stale: 409, nothing recorded."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        await recipient.report(packet_id, "information_noted")
    async with deployment.client("school-dsl") as dsl:
        await dsl.query(packet_id, duty, "Will anyone visit?")
    async with deployment.client("csc-duty") as recipient:
        loop = await recipient.loop(packet_id)
        statement = statements.loop_statement(
            "report", packet_id, loop.manifest_digest, duty, duty, action="no_further_action"
        )
        with pytest.raises(ApiError) as refused:
            await recipient.request(
                "POST",
                f"/v1/packets/{packet_id}/reports",
                {
                    "action": "no_further_action",
                    "answers": None,
                    "key_id": recipient.credentials.signing.key_id,
                    "signature": crypto.b64encode(recipient.credentials.signing.sign(statement)),
                },
            )
    assert refused.value.http_status == 409 and refused.value.problem_code == "loop.stale"
    assert (await ledger_types(deployment, packet_id))["packet.action_reported"] == 1


async def test_actions_outside_the_vocabulary_or_needing_words_are_refused(deployment: Deployment) -> None:
    """An unknown code, 'other' without a narrative, or advice on a referral: refused, locally and by the server."""
    packet_id = await _referred_and_acknowledged(deployment)
    async with deployment.client("csc-duty") as recipient:
        for action in ("made_a_cup_of_tea", "other", "advice_given"):
            with pytest.raises(feedback.ActionNotAllowed):
                await recipient.report(packet_id, action)
        loop = await recipient.loop(packet_id)
        statement = statements.loop_statement(
            "report", packet_id, loop.manifest_digest, recipient.member_id, recipient.member_id, action="other"
        )
        with pytest.raises(ApiError) as refused:
            await recipient.request(
                "POST",
                f"/v1/packets/{packet_id}/reports",
                {
                    "action": "other",
                    "answers": None,
                    "key_id": recipient.credentials.signing.key_id,
                    "signature": crypto.b64encode(recipient.credentials.signing.sign(statement)),
                },
            )
        assert refused.value.http_status == 422 and refused.value.problem_code == "loop.action_not_allowed"
        with pytest.raises(InvalidRequest):
            await recipient.report(packet_id, "other", "   ")
        done = await recipient.report(packet_id, "other", "Passed to the disabled children's team.")
    assert done["action"] == "other"


# ------------------------------------------------------------------------------ races


async def test_race_eight_concurrent_reports_on_one_copy_one_wins(deployment: Deployment) -> None:
    """Eight reports at once on one acknowledged copy: one 201, seven 409, one ledger entry, one statement."""
    packet_id = await _referred_and_acknowledged(deployment)
    async with deployment.client("csc-duty") as recipient:
        outcomes = await asyncio.gather(
            *(recipient.report(packet_id, "information_noted", f"attempt {n}") for n in range(8)),
            return_exceptions=True,
        )
    wins = [o for o in outcomes if isinstance(o, dict)]
    losses = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(wins) == 1 and len(losses) == 7, outcomes
    assert {loss.http_status for loss in losses} == {409}
    assert (await ledger_types(deployment, packet_id))["packet.action_reported"] == 1
    assert await beside(deployment, "SELECT count(*) FROM loop_statements") == [(1,)]


async def test_race_a_confirmation_and_a_query_at_once_one_wins(deployment: Deployment) -> None:
    """The sender's confirm and query sent together: exactly one moves the copy, the other gets 409."""
    packet_id = await _referred_and_acknowledged(deployment)
    duty = _id(deployment, "csc-duty")
    async with deployment.client("csc-duty") as recipient:
        await recipient.report(packet_id, "information_noted")
    async with deployment.client("school-dsl") as dsl:
        outcomes = await asyncio.gather(
            dsl.confirm(packet_id, duty), dsl.query(packet_id, duty, "Anything else?"), return_exceptions=True
        )
    assert sorted(type(o).__name__ for o in outcomes) == ["ApiError", "dict"], outcomes
    counts = await ledger_types(deployment, packet_id)
    assert counts["packet.action_confirmed"] + counts["packet.action_queried"] == 1


# ------------------------------------------------------------------------------ consultations


async def test_an_adviser_replies_to_an_anonymous_consultation(deployment: Deployment) -> None:
    """A practitioner consults a safeguarding lead; the reply acknowledges and reports advice sealed to them."""
    lead = _id(deployment, "csc-manager")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(consultation([lead]))
    packet_id = sent["packet_id"]
    advice = "Start an early help assessment and call the front door if the child discloses more."
    async with deployment.client("csc-manager") as adviser:
        replied = await adviser.reply(packet_id, advice)
        with pytest.raises(feedback.ActionNotAllowed):
            await adviser.report(packet_id, "strategy_discussion_s47_enquiry")
    assert replied["acknowledged"] is not None and replied["action"] == "advice_given"
    async with deployment.client("school-dsl") as dsl:
        loop = (await dsl.loop(packet_id)).recipient(lead)
        assert loop.latest is not None and loop.latest.note == {"narrative": advice}
        await dsl.confirm(packet_id, lead)
    counts = await ledger_types(deployment, packet_id)
    assert counts["packet.acknowledged"] == 1 and counts["packet.action_reported"] == 1
    assert counts["packet.action_confirmed"] == 1
    assert (await ledger_details(deployment, packet_id, "packet.action_reported"))[0]["action"] == "advice_given"


async def test_reply_is_only_for_consultations(deployment: Deployment) -> None:
    """'reply' on a referral is refused before anything is signed."""
    packet_id = await _referred_and_acknowledged(deployment)
    async with deployment.client("csc-duty") as recipient:
        with pytest.raises(InvalidRequest):
            await recipient.reply(packet_id, "Some advice.")
    assert (await ledger_types(deployment, packet_id))["packet.action_reported"] == 0


# ------------------------------------------------------------------------------ the binding, as a property

_READER = crypto.EncryptionKey.generate()
_ids = st.text("0123456789abcdef", min_size=24, max_size=24)
_contexts = st.tuples(
    st.sampled_from(feedback.STEPS),
    _ids.map(lambda s: "pkt_" + s),
    _ids.map(lambda s: "mem_" + s),
    st.none() | st.text("0123456789abcdef", min_size=40, max_size=40).map(lambda s: "stm_" + s),
)


@settings(max_examples=40)
@given(_contexts, _contexts, st.text(min_size=1, max_size=200))
def test_a_note_moved_to_another_statement_never_opens(
    home: tuple[str, str, str, str | None], away: tuple[str, str, str, str | None], narrative: str
) -> None:
    """A note sealed for one step, packet, copy and answered statement opens there and nowhere else."""
    member = "mem_" + "a" * 24
    sealed = crypto.seal_note(
        {"narrative": narrative}, member, _READER.key_id, _READER.public_bytes, context=feedback.note_context(*home)
    )
    opened = crypto.open_note(_READER, sealed, member, _READER.key_id, context=feedback.note_context(*home))
    assert opened == {"narrative": narrative}
    if feedback.note_context(*away) != feedback.note_context(*home):
        with pytest.raises(CryptoError):
            crypto.open_note(_READER, sealed, member, _READER.key_id, context=feedback.note_context(*away))
    with pytest.raises(CryptoError):
        crypto.open_note(_READER, sealed, "mem_" + "b" * 24, _READER.key_id, context=feedback.note_context(*home))


@settings(max_examples=40)
@given(_contexts, st.text(min_size=1, max_size=200))
def test_a_statement_binds_its_note_and_its_id_binds_its_bytes(
    context: tuple[str, str, str, str | None], narrative: str
) -> None:
    """Two seals of one narrative differ, so a signed statement names exactly one; its id names exactly its bytes."""
    step, packet_id, recipient, answers = context
    member = "mem_" + "a" * 24
    where = feedback.note_context(*context)
    first, second = (
        crypto.seal_note({"narrative": narrative}, member, _READER.key_id, _READER.public_bytes, context=where)
        for _ in range(2)
    )
    assert crypto.digest_text(first) != crypto.digest_text(second)
    digest = "sha256:" + "0" * 64
    signed, other = (
        statements.loop_statement(
            step, packet_id, digest, recipient, member, note_digest=crypto.digest_text(note), answers=answers
        )
        for note in (first, second)
    )
    assert feedback.statement_id(signed) != feedback.statement_id(other)
    assert feedback.answers_in(signed) == answers


def test_the_chain_orders_statements_and_refuses_forks() -> None:
    """Statements come out in answer order whatever order they are stored in; two answers to one are refused."""
    items = [("c", "b"), ("a", None), ("b", "a")]
    assert [i for i, _ in feedback.in_chain_order(items, lambda x: x[0], lambda x: x[1])] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="same statement"):
        feedback.in_chain_order([*items, ("d", "b")], lambda x: x[0], lambda x: x[1])
    with pytest.raises(ValueError, match="not in this loop"):
        feedback.in_chain_order([("a", None), ("z", "y")], lambda x: x[0], lambda x: x[1])
