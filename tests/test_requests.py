"""Information requests, declines and decisions not to share, end to end on a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from exchange.client import ApiError
from exchange.domain import parse_iso, utc_now
from exchange.examples import referral
from exchange.service import steps
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, beside, ledger_entries
from tests.test_cli import cli, cli_json

CHILD = {"child_name": "Jamie Example", "child_date_of_birth": "2017-03-02", "why": "Suspected assault at home"}
ASKED = ["child_address", "household_members", "action_taken"]


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


def _agency(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).agency_id or ""


def request_file(holder: str, fields: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    """The police ask for what children's social care knows of a household (for an investigation)."""
    document: dict[str, Any] = {
        "purpose": "police_investigation",
        "from": holder,
        "urgency": "urgent",
        "lawful_basis": {"article6": "public_task", "legal_power": ["crime_and_disorder_act_1998_s115"]},
        "fields": list(fields or ASKED),
        "subject_identifier": "943 476 5919",
        "details": CHILD,
    }
    document.update(changes)
    return document


def response_file(to: str, request_id: str, fields: list[str], **changes: Any) -> dict[str, Any]:
    """Children's social care answers the request with ``fields`` (and the response summary)."""
    answer: dict[str, Any] = {
        "purpose": "response_to_information_request",
        "kind": "request_response",
        "urgency": "urgent",
        "in_reply_to": request_id,
    }
    packet = referral([to], **(answer | changes))
    entry = {"label": "fact_reported", "source": "agency_records", "currency": "current", "as_of": "2026-11-20"}
    packet["fields"] = {name: {"value": f"what we hold: {name}"} | entry for name in ["response_summary", *fields]}
    return packet


async def ask(deployment: Deployment, fields: list[str] | None = None) -> dict[str, Any]:
    async with deployment.client("police-officer") as police:
        sent: dict[str, Any] = await police.request_information(
            request_file(f"agency:{_agency(deployment, 'csc-duty')}", fields)
        )
    return sent


async def ledger_types(deployment: Deployment, request_id: str) -> list[str]:
    """The types of the ledger entries the index finds under a request id, in order."""
    return [entry["type"] for entry in await ledger_entries(deployment, request=request_id)]


async def test_csc_answers_a_police_request_within_the_fields_asked(deployment: Deployment) -> None:
    """Police ask CSC's duty members for three fields; CSC's answer is delivered and the request is answered."""
    sent = await ask(deployment)
    request_id = sent["request_id"]
    assert sent["state"] == "open" and sent["answer_due"]
    assert set(sent["holders"]) == {_id(deployment, "csc-duty"), _id(deployment, "csc-manager")}
    async with deployment.client("csc-duty") as duty:
        received = (await duty.requests(role="received"))["requests"]
        assert [r["request_id"] for r in received] == [request_id]
        opened = await duty.open_request(request_id)
        assert opened.details == CHILD
        assert opened.request["fields"] == ASKED
        answer = await duty.send(response_file(_id(deployment, "police-officer"), request_id, ASKED[:2]))
    assert answer["status"] == "delivered"
    async with deployment.client("police-officer") as police:
        mine = (await police.requests(role="sent"))["requests"]
        assert [(r["state"], r["answered_by"]) for r in mine] == [("answered", answer["packet_id"])]
        packet = await police.open(answer["packet_id"])
        assert packet.manifest["in_reply_to"] == request_id
    assert await ledger_types(deployment, request_id) == [
        "request.submitted",
        "packet.submitted",
        "request.answered",
    ]


async def test_an_answer_with_a_field_not_asked_for_is_refused(deployment: Deployment) -> None:
    """A response carrying a field the request did not ask for is refused with the rule's id (422)."""
    sent = await ask(deployment)
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as refused:
            await duty.send(
                response_file(_id(deployment, "police-officer"), sent["request_id"], ["child_address", "school_name"])
            )
        assert refused.value.http_status == 422
        assert {v["rule"] for v in refused.value.problem["violations"]} == {"necessity.field_not_requested"}
        assert (await duty.open_request(sent["request_id"])).state == "open"


async def test_a_decline_reaches_the_requester_with_its_reasons(deployment: Deployment) -> None:
    """CSC declines with reason codes; the police see the reasons and open the explanation sealed to them."""
    sent = await ask(deployment)
    request_id = sent["request_id"]
    async with deployment.client("csc-manager") as manager:
        declined = await manager.decline(
            request_id, ["not_necessary_or_proportionate"], "Ask the school first; we hold nothing recent."
        )
    assert declined["state"] == "declined"
    async with deployment.client("police-officer") as police:
        opened = await police.open_request(request_id)
    assert opened.state == "declined"
    assert opened.explanation == "Ask the school first; we hold nothing recent."
    assert opened.fetched["declined"]["reason_codes"] == ["not_necessary_or_proportionate"]
    assert opened.details is None  # the details are sealed to the holders, not to the requester
    assert await ledger_types(deployment, request_id) == ["request.submitted", "request.declined"]


async def test_a_third_party_sees_neither_the_request_nor_the_decline(deployment: Deployment) -> None:
    """The school is neither requester nor holder: the request is 404 to it and never listed."""
    sent = await ask(deployment)
    async with deployment.client("csc-duty") as duty:
        await duty.decline(sent["request_id"], ["information_not_held"], "We have no record of this child.")
    async with deployment.client("school-dsl") as school:
        with pytest.raises(ApiError) as hidden:
            await school.request("GET", f"/v1/requests/{sent['request_id']}")
        assert hidden.value.http_status == 404
        assert (await school.requests())["requests"] == []
        with pytest.raises(ApiError) as refused:
            await school.decline(sent["request_id"], ["other"], "Not ours.")
        assert refused.value.http_status == 404


async def test_a_request_for_a_field_the_purpose_does_not_allow_is_refused(deployment: Deployment) -> None:
    """School attendance is not shared for a police investigation, so it cannot be asked for (422)."""
    with pytest.raises(ApiError) as refused:
        await ask(deployment, ["child_address", "school_attendance"])
    assert refused.value.http_status == 422
    violations = refused.value.problem["violations"]
    assert [(v["rule"], v["path"]) for v in violations] == [("request.field_not_allowed", "/fields/1")]
    assert all(v["source"] for v in violations)
    async with deployment.client("csc-duty") as duty:
        assert (await duty.requests())["requests"] == []


async def test_a_decision_not_to_share_is_recorded_and_nothing_is_sent(deployment: Deployment) -> None:
    """The school records why it did not share, lists it and opens its own reasons; nothing is delivered."""
    async with deployment.client("school-dsl") as school:
        recorded = await school.decide_not_to_share(
            purpose="referral_to_childrens_social_care",
            fields_considered=["child_name", "concern_description"],
            reason_codes=["not_necessary_or_proportionate"],
            reasons="One unexplained absence; we will monitor and speak to the parent.",
            subject_identifier="943 476 5919",
        )
        assert recorded["delivered_to"] == []
        listed = (await school.decisions())["decisions"]
    assert [d["decision_id"] for d in listed] == [recorded["decision_id"]]
    assert listed[0]["reasons_in_words"] == "One unexplained absence; we will monitor and speak to the parent."
    async with deployment.client("school-head") as head:
        agency = (await head.decisions("agency"))["decisions"]
        assert [(d["decision_id"], d["sealed_note"]) for d in agency] == [(recorded["decision_id"], None)]
    async with deployment.client("csc-duty") as duty:
        assert await duty.inbox() == []
        assert (await duty.decisions())["decisions"] == []
    entries = await ledger_entries(deployment, type="decision.not_to_share")
    assert [e["details"]["decision"] for e in entries] == [recorded["decision_id"]]
    assert await beside(deployment, "SELECT COUNT(*) FROM deliveries") == [(0,)]


async def test_race_two_declines_one_wins(deployment: Deployment) -> None:
    """Race: two holders decline at the same moment; one gets 201, the other 409, one ledger entry."""
    sent = await ask(deployment)
    request_id = sent["request_id"]
    async with deployment.client("csc-duty") as duty, deployment.client("csc-manager") as manager:
        results = await asyncio.gather(
            duty.decline(request_id, ["information_not_held"], "Not held."),
            manager.decline(request_id, ["request_unclear"], "Unclear."),
            return_exceptions=True,
        )
    _one_winner(results)
    assert await ledger_types(deployment, request_id) == ["request.submitted", "request.declined"]


async def test_race_an_answer_and_a_decline_one_wins(deployment: Deployment) -> None:
    """Race: one holder answers while another declines; exactly one wins, the other gets 409."""
    sent = await ask(deployment)
    request_id = sent["request_id"]
    police = _id(deployment, "police-officer")
    async with deployment.client("csc-duty") as duty, deployment.client("csc-manager") as manager:
        sealed = await duty.prepare(response_file(police, request_id, ["child_address"]))
        opened = await manager.open_request(request_id)
        assert opened.state == "open"
        results = await asyncio.gather(
            duty.submit(sealed), manager.decline(request_id, ["information_not_held"], "Not held."),
            return_exceptions=True,
        )
    _one_winner(results)
    types = await ledger_types(deployment, request_id)
    answered = ["request.submitted", "packet.submitted", "request.answered"]
    assert types in (answered, ["request.submitted", "request.declined"])


def _one_winner(results: Sequence[Any]) -> None:
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1, results
    assert isinstance(failures[0], ApiError) and failures[0].http_status == 409, failures[0]


async def test_request_decline_and_decision_from_the_cli(deployment: Deployment, tmp_path: Path) -> None:
    """template --request → request → requests → decline → requests ID (explanation) → decide-not-to-share."""
    police = ["--key", str(deployment.key_dir / "police-officer.json"), "--server", deployment.url]
    duty = ["--key", str(deployment.key_dir / "csc-duty.json"), "--server", deployment.url]
    template, _ = await cli("template", "police_investigation", "--request")
    document = json.loads(template)
    assert document["purpose"] == "police_investigation" and document["details"]["why"] is None
    document |= {"from": f"agency:{_agency(deployment, 'csc-duty')}", "fields": ["child_address"]}
    document["details"] = CHILD
    path = tmp_path / "request.json"
    path.write_text(json.dumps(document))
    out, _ = await cli("request", str(path), *police)
    assert "checked against the rules and sent to 2 member(s)" in out
    listed = await cli_json("requests", "--role", "received", "--state", "open", *duty)
    request_id = listed["requests"][0]["request_id"]
    out, _ = await cli("requests", request_id, *duty)
    assert "signature verified" in out and "Jamie Example" in out
    reasons = ["--reason", "information_not_held,other", "--explanation", "No record."]
    out, _ = await cli("decline", request_id, *reasons, *duty)
    assert "You declined request" in out
    out, _ = await cli("requests", request_id, *police)
    assert "information_not_held" in out and "explanation (sealed to you): No record." in out
    _, err = await cli("decline", request_id, "--reason", "other", "--explanation", "Again.", *duty, expect=1)
    assert "lifecycle.transition_not_allowed" in err
    out, _ = await cli(
        "decide-not-to-share",
        "--purpose",
        "police_investigation",
        "--fields",
        "household_members",
        "--reason",
        "would_increase_risk_to_child",
        "--reasons",
        "Telling the police now would alert the adult.",
        "--request",
        request_id,
        *duty,
    )
    assert "nothing was sent to anyone" in out
    decisions = await cli_json("decisions", *duty)
    assert decisions["decisions"][0]["reasons_in_words"] == "Telling the police now would alert the adult."
    assert decisions["decisions"][0]["request_id"] == request_id


async def obligation_states(deployment: Deployment, request_id: str) -> list[tuple[str, str]]:
    rows = await beside(deployment, "SELECT kind, state FROM obligations WHERE request_id = ?", request_id)
    return [(kind, state) for kind, state in rows]


async def test_the_answer_is_owed_by_the_purposes_action_deadline_and_met_by_the_answer(
    deployment: Deployment,
) -> None:
    """A request opens one request_answer obligation, due by the purpose's action span; the answer meets it."""
    sent = await ask(deployment)
    assert await obligation_states(deployment, sent["request_id"]) == [("request_answer", "open")]
    async with deployment.client("csc-duty") as duty:
        await duty.send(response_file(_id(deployment, "police-officer"), sent["request_id"], ["child_address"]))
    assert await obligation_states(deployment, sent["request_id"]) == [("request_answer", "met")]


async def test_an_answer_goes_to_the_requester_for_the_requests_purpose(deployment: Deployment) -> None:
    """An answer copied to someone else, or for another purpose, is refused with each rule's id."""
    sent = await ask(deployment)
    packet = response_file(_id(deployment, "police-officer"), sent["request_id"], ["child_address"])
    packet["to"].append(_id(deployment, "school-dsl"))
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as refused:
            await duty.send(packet)
        rules = {v["rule"] for v in refused.value.problem["violations"]}
        assert "request.reply_not_to_requester" in rules
        wrong_purpose = response_file(
            _id(deployment, "police-officer"), sent["request_id"], ["child_address"], purpose="strategy_discussion"
        )
        with pytest.raises(ApiError) as refused:
            await duty.send(wrong_purpose)
        assert "request.reply_purpose_mismatch" in {v["rule"] for v in refused.value.problem["violations"]}
        assert (await duty.open_request(sent["request_id"])).state == "open"


async def test_only_a_holder_can_answer(deployment: Deployment) -> None:
    """The school was not asked: its 'answer' names a request unknown to it and is refused (fails closed)."""
    sent = await ask(deployment)
    async with deployment.client("school-dsl") as school:
        with pytest.raises(ApiError) as refused:
            await school.send(response_file(_id(deployment, "police-officer"), sent["request_id"], ["child_address"]))
    assert "request.not_found" in {v["rule"] for v in refused.value.problem["violations"]}


async def test_a_declined_request_cannot_be_answered(deployment: Deployment) -> None:
    """Once declined, an answer is a 409 and nothing is delivered."""
    sent = await ask(deployment)
    police = _id(deployment, "police-officer")
    async with deployment.client("csc-manager") as manager:
        await manager.decline(sent["request_id"], ["information_not_held"], "Nothing held.")
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as conflict:
            await duty.send(response_file(police, sent["request_id"], ["child_address"]))
    assert conflict.value.http_status == 409
    assert conflict.value.problem["code"] == "lifecycle.transition_not_allowed"
    async with deployment.client("police-officer") as officer:
        assert await officer.inbox() == []


async def test_a_request_to_one_member_is_theirs_alone(deployment: Deployment) -> None:
    """Asked by name, the team manager holds the request; the duty social worker neither sees nor answers it."""
    async with deployment.client("police-officer") as police:
        sent = await police.request_information(request_file(_id(deployment, "csc-manager")))
    assert sent["holders"] == [_id(deployment, "csc-manager")]
    assert sent["holder"] == {"agency": _agency(deployment, "csc-manager"), "member": _id(deployment, "csc-manager")}
    async with deployment.client("csc-duty") as duty:
        assert (await duty.requests())["requests"] == []
        with pytest.raises(ApiError) as hidden:
            await duty.open_request(sent["request_id"])
        assert hidden.value.http_status == 404
    async with deployment.client("csc-manager") as manager:
        assert (await manager.open_request(sent["request_id"])).details == CHILD


async def test_a_response_held_for_approval_answers_the_request_when_delivered(deployment: Deployment) -> None:
    """Shared without consent, the answer waits for a manager; the request is answered when it is delivered."""
    sent = await ask(deployment)
    request_id = sent["request_id"]
    packet = response_file(
        _id(deployment, "police-officer"),
        request_id,
        ["child_address"],
        consent={"status": "not_sought"},
        without_consent={"reason": "serious_crime"},
        transparency={"status": "not_informed", "reason": "would_prejudice_investigation"},
    )
    async with deployment.client("csc-duty") as duty:
        held = await duty.send(packet)
        assert held["status"] == "awaiting_approval"
        assert (await duty.open_request(request_id)).state == "open"
    async with deployment.client("csc-manager") as manager:
        item = await manager.request("GET", f"/v1/approvals/{held['packet_id']}")
        await manager.request(
            "POST",
            f"/v1/approvals/{held['packet_id']}",
            manager.approval_for(held["packet_id"], item["manifest_digest"]),
        )
        assert (await manager.open_request(request_id)).fetched["answered_by"] == held["packet_id"]
    assert await ledger_types(deployment, request_id) == ["request.submitted", "packet.submitted", "request.answered"]


async def test_refusals_are_recorded_once_and_store_nothing(deployment: Deployment) -> None:
    """A refused request is one request.rejected entry (rule ids only); a refused decline records nothing."""
    with pytest.raises(ApiError):
        await ask(deployment, ["school_attendance"])
    rows = [e["details"] for e in await ledger_entries(deployment, type="request.rejected")]
    assert len(rows) == 1 and await beside(deployment, "SELECT COUNT(*) FROM info_requests") == [(0,)]
    details = rows[0]
    assert details["rules"] == ["request.field_not_allowed"] and "Jamie" not in json.dumps(details)
    sent = await ask(deployment)
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as refused:
            await duty.decline(sent["request_id"], ["busy"], "We are busy.")
    assert refused.value.http_status == 422
    assert [v["rule"] for v in refused.value.problem["violations"]] == ["decline.reason_unknown"]
    assert await ledger_types(deployment, sent["request_id"]) == ["request.submitted"]


async def test_requests_are_paged_with_a_cursor_and_filtered_by_state(deployment: Deployment) -> None:
    """Three requests, two per page: nothing is cut off; a state filter shows only the declined one."""
    made = [(await ask(deployment))["request_id"] for _ in range(3)]
    async with deployment.client("csc-duty") as duty:
        await duty.decline(made[0], ["information_not_held"], "Not held.")
        first = await duty.requests(limit=2)
        second = await duty.requests(limit=2, cursor=first["next_cursor"])
        assert second["next_cursor"] is None
        seen = [r["request_id"] for r in first["requests"] + second["requests"]]
        assert seen == list(reversed(made))
        declined = await duty.requests(state="declined")
        assert [r["request_id"] for r in declined["requests"]] == [made[0]]
        with pytest.raises(ApiError) as bad:
            await duty.requests(role="everyone")
        assert bad.value.http_status == 400


async def test_tampered_sealed_details_are_refused(deployment: Deployment) -> None:
    """Attack: details swapped between holders no longer match the signed digests, so the request is refused."""
    async with deployment.client("police-officer") as police:
        document = await police.prepare_request(request_file(f"agency:{_agency(deployment, 'csc-duty')}"))
        first, second = sorted(document["sealed_details"])
        sealed = document["sealed_details"]
        sealed[first], sealed[second] = sealed[second], sealed[first]
        with pytest.raises(ApiError) as refused:
            await police.request("POST", "/v1/requests", document)
    assert refused.value.http_status == 422
    assert refused.value.problem["code"] == "crypto.invalid"


async def test_a_request_in_someone_elses_name_is_forbidden(deployment: Deployment) -> None:
    """Attack: a request naming another requester is refused (403), whatever it is signed with."""
    async with deployment.client("police-officer") as police:
        document = await police.prepare_request(request_file(f"agency:{_agency(deployment, 'csc-duty')}"))
    async with deployment.client("school-dsl") as school:
        with pytest.raises(ApiError) as refused:
            await school.request("POST", "/v1/requests", document)
    assert refused.value.http_status == 403


async def test_only_managers_list_their_agencys_decisions(deployment: Deployment) -> None:
    """A practitioner lists their own decisions; their agency's are for managers and safeguarding leads."""
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as forbidden:
            await duty.decisions("agency")
    assert forbidden.value.http_status == 403


async def test_a_correction_of_the_answer_becomes_the_answer(deployment: Deployment) -> None:
    """CSC corrects its answer through the API: the correction supersedes it and becomes the request's answer."""
    sent = await ask(deployment)
    request_id = sent["request_id"]
    police = _id(deployment, "police-officer")
    async with deployment.client("csc-duty") as duty:
        answer = await duty.send(response_file(police, request_id, ["child_address"]))
        corrected = await duty.correct(
            answer["packet_id"], response_file(police, request_id, ["child_address"]), ["child_address"]
        )
    assert corrected["status"] == "delivered"
    async with deployment.client("police-officer") as officer:
        (mine,) = (await officer.requests(role="sent"))["requests"]
        earlier = await officer.open(answer["packet_id"])
    assert (mine["state"], mine["answered_by"]) == ("answered", corrected["packet_id"])
    assert earlier.superseded_by == corrected["packet_id"]
    # One answer on record; the correction is recorded as superseding the first answer.
    assert (await ledger_types(deployment, request_id)).count("request.answered") == 1
    async with deployment.client("csc-duty") as duty:  # a second, unrelated answer is still refused
        with pytest.raises(ApiError) as refused:
            await duty.send(response_file(police, request_id, ["child_address"]))
    assert refused.value.http_status == 409


async def test_an_unanswered_request_escalates_and_a_late_decline_resolves_it(deployment: Deployment) -> None:
    """Past the purpose's action span, an open request escalates to the requester and the holder agency's lead;
    the school never sees it; a late decline meets the obligation and resolves the escalation."""
    sent = await ask(deployment)
    ctx = deployment.server.app[CONTEXT]
    worker = ctx.deadlines
    assert worker is not None
    deployment.clock.offset_seconds = (parse_iso(sent["answer_due"]) - utc_now()).total_seconds() + 60
    done = await worker.run_once()
    deployment.clock.offset_seconds = 0  # clients sign with the real clock
    assert done.escalated == [steps.obligation_id("request_answer", sent["request_id"])]

    async def escalations(label: str) -> list[dict[str, Any]]:
        async with deployment.client(label) as client:
            page = await client.request("GET", "/v1/escalations")
        return [e for e in page["escalations"] if e["request_id"] == sent["request_id"]]

    assert [e["state"] for e in await escalations("police-officer")] == ["open"]
    assert len(await escalations("csc-manager")) == 1
    assert await escalations("school-dsl") == []
    async with deployment.client("csc-duty") as duty:
        await duty.decline(sent["request_id"], ["information_not_held"], "Nothing held, sorry for the delay.")
    assert [e["state"] for e in await escalations("police-officer")] == ["resolved"]
    assert await obligation_states(deployment, sent["request_id"]) == [("request_answer", "fired")]
