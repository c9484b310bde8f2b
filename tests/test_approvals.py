"""Sharing without consent waits for a manager of the sender's agency, who signs over the manifest digest."""

from __future__ import annotations

import pytest

from exchange.client import ApiError, ExchangeClient
from exchange.examples import referral, referral_without_consent
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, ledger_entries

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


async def _decide(manager: ExchangeClient, packet_id: str, decision: str = "approve") -> object:
    item = await manager.request("GET", f"/v1/approvals/{packet_id}")
    return await manager.request(
        "POST", f"/v1/approvals/{packet_id}", manager.approval_for(packet_id, item["manifest_digest"], decision)
    )


async def test_without_consent_is_held_until_a_manager_approves(deployment: Deployment) -> None:
    """The packet waits in the headteacher's queue, invisible to the recipient, until approved."""
    duty = _id(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([duty]))
    assert sent["status"] == "awaiting_approval"
    async with deployment.client("csc-duty") as recipient:
        assert await recipient.inbox() == []
    async with deployment.client("school-head") as head:
        queue = (await head.request("GET", "/v1/approvals"))["packets"]
        assert [item["packet_id"] for item in queue] == [sent["packet_id"]]
        assert "body" not in queue[0] and queue[0]["manifest"]["without_consent"]["reason"] == "significant_harm_risk"
        decided = await _decide(head, sent["packet_id"])
    assert decided["status"] == "delivered"  # type: ignore[index]
    async with deployment.client("csc-duty") as recipient:
        opened = await recipient.open(sent["packet_id"])
    assert opened.approval is not None and opened.approval["approver"] == _id(deployment, "school-head")


async def test_a_refusal_withdraws_the_packet(deployment: Deployment) -> None:
    """A manager's refusal means the recipient never receives it."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([_id(deployment, "csc-duty")]))
    async with deployment.client("school-head") as head:
        decided = await _decide(head, sent["packet_id"], "refuse")
        assert decided["status"] == "refused"  # type: ignore[index]
        assert (await head.request("GET", "/v1/approvals"))["packets"] == []
    async with deployment.client("csc-duty") as recipient:
        assert await recipient.inbox() == []
    async with deployment.client("school-dsl") as dsl:
        assert (await dsl.outbox())[0]["recipients"][0]["status"] == "withdrawn"


async def test_approval_attached_at_submission_delivers_at_once(deployment: Deployment) -> None:
    """A manager's approval signed before submission releases the packet immediately."""
    async with deployment.client("school-dsl") as dsl, deployment.client("school-head") as head:
        sealed = await dsl.prepare(referral_without_consent([_id(deployment, "csc-duty")]))
        approval = head.approval_for(sealed.manifest["packet_id"], sealed.manifest_digest)
        sent = await dsl.submit(sealed, approval)
    assert sent["status"] == "delivered"


async def test_approval_over_another_digest_is_refused(deployment: Deployment) -> None:
    """A signature over a different manifest digest does not count as approval."""
    async with deployment.client("school-dsl") as dsl, deployment.client("school-head") as head:
        sealed = await dsl.prepare(referral_without_consent([_id(deployment, "csc-duty")]))
        approval = head.approval_for(sealed.manifest["packet_id"], "sha256:" + "0" * 64)
        with pytest.raises(ApiError) as refused:
            await dsl.submit(sealed, approval)
    assert refused.value.http_status == 422
    assert "does not verify" in refused.value.problem["detail"]


async def test_approval_by_someone_outside_the_senders_agency_is_refused(deployment: Deployment) -> None:
    """Children's services' manager cannot approve the school's sharing."""
    async with deployment.client("school-dsl") as dsl, deployment.client("csc-manager") as other:
        sealed = await dsl.prepare(referral_without_consent([_id(deployment, "csc-duty")]))
        approval = other.approval_for(sealed.manifest["packet_id"], sealed.manifest_digest)
        with pytest.raises(ApiError) as refused:
            await dsl.submit(sealed, approval)
    assert refused.value.http_status == 422
    rules = [v["rule"] for v in refused.value.problem["violations"]]
    assert rules == ["without_consent.approver_not_manager"]


async def test_practitioners_cannot_see_or_decide_the_queue(deployment: Deployment) -> None:
    """Only managers and safeguarding leads have an approval queue."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([_id(deployment, "csc-duty")]))
    async with deployment.client("csc-duty") as practitioner:
        with pytest.raises(ApiError) as refused:
            await practitioner.request("GET", "/v1/approvals")
        assert refused.value.http_status == 403
    async with deployment.client("csc-manager") as other_agency:
        with pytest.raises(ApiError) as hidden:
            await _decide(other_agency, sent["packet_id"])
        assert hidden.value.http_status == 404


async def test_a_sender_cannot_approve_their_own_sharing(deployment: Deployment) -> None:
    """The DSL is also a safeguarding lead, but approval must come from someone else."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([_id(deployment, "csc-duty")]))
        with pytest.raises(ApiError) as refused:
            await _decide(dsl, sent["packet_id"])
    assert refused.value.http_status == 403


async def test_consented_sharing_needs_no_approval(deployment: Deployment) -> None:
    """With informed consent the packet is delivered straight away."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([_id(deployment, "csc-duty")]))
    assert sent["status"] == "delivered"


async def test_rejection_lists_every_violation_and_is_recorded(deployment: Deployment) -> None:
    """A packet breaking several rules gets all of them back, and the rejection is in the ledger."""
    packet = referral([_id(deployment, "csc-duty")])
    packet["fields"]["favourite_colour"] = {"value": "blue", "label": "fact_observed", "currency": "current"}
    del packet["fields"]["child_name"]["label"]
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.send(packet)
    problem = refused.value.problem
    assert refused.value.http_status == 422
    assert problem["code"] == "policy.violation"
    assert problem["type"].endswith("/policy.violation")
    found = {(v["rule"], v["path"]) for v in problem["violations"]}
    assert {"field.unknown", "label.missing"} <= {rule for rule, _ in found}, found
    assert ("label.missing", "/fields/0/label") in found
    assert all(v["message"] and v["source"] for v in problem["violations"])
    assert "packet.rejected" in {entry["type"] for entry in await ledger_entries(deployment)}
    async with deployment.client("csc-duty") as duty:
        assert await duty.inbox() == []


async def test_imminent_harm_goes_at_once_and_the_approval_is_owed(deployment: Deployment) -> None:
    """Imminent harm: delivered immediately; the manager's queue shows an approval owed within the hour."""
    from datetime import timedelta

    from exchange.domain import utc_now
    from exchange.examples import imminent_harm

    tomorrow = (utc_now() + timedelta(days=1)).date().isoformat()
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(imminent_harm([_id(deployment, "csc-duty")], tomorrow))
    assert sent["status"] == "delivered"
    assert sent["approval_due"] is not None
    async with deployment.client("csc-duty") as duty:
        assert [p["packet_id"] for p in await duty.inbox()] == [sent["packet_id"]]
    async with deployment.client("school-head") as head:
        queue = (await head.request("GET", "/v1/approvals"))["packets"]
        assert [(q["packet_id"], q["state"]) for q in queue] == [(sent["packet_id"], "approval_owed")]
        decided = await _decide(head, sent["packet_id"])
        assert decided["status"] == "delivered"  # type: ignore[index]
        assert (await head.request("GET", "/v1/approvals"))["packets"] == []


async def test_duplicate_recipients_are_a_rule_not_a_crash(deployment: Deployment) -> None:
    """Listing the same recipient twice is reported as a sharing rule with the others."""
    duty = _id(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([duty]))
        import json
        from dataclasses import replace

        from exchange import crypto

        manifest = json.loads(json.dumps(sealed.manifest))
        manifest["recipients"].append(manifest["recipients"][0])
        resigned = replace(
            sealed, manifest=manifest, signature=dsl.credentials.signing.sign(crypto.canonical_json(manifest))
        )
        with pytest.raises(ApiError) as refused:
            await dsl.submit(resigned)
    assert "recipient.duplicate" in {v["rule"] for v in refused.value.problem["violations"]}


async def test_onward_sharing_from_a_packet_never_received_fails_closed(deployment: Deployment) -> None:
    """A packet claiming to derive from one its sender never received is refused."""
    async with deployment.client("school-dsl") as dsl:
        first = await dsl.send(referral([_id(deployment, "csc-duty")]))
        with pytest.raises(ApiError) as refused:
            await dsl.send(referral([_id(deployment, "csc-duty")], derived_from=[first["packet_id"]]))
    assert "consent.onward_source_unknown" in {v["rule"] for v in refused.value.problem["violations"]}


async def test_the_directory_limits_the_purposes_an_agency_receives(deployment: Deployment) -> None:
    """The partnership's auditor receives no packets: the directory's empty purpose list says so."""
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.send(referral([_id(deployment, "auditor")]))
    assert "directory.purpose_not_permitted" in {v["rule"] for v in refused.value.problem["violations"]}


async def test_admins_and_auditors_neither_send_nor_receive(deployment: Deployment) -> None:
    """A packet to an agency admin is refused by rule; an auditor cannot send at all."""
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.send(referral([_id(deployment, "csc-admin")]))
    assert "recipient.role_cannot_receive" in {v["rule"] for v in refused.value.problem["violations"]}
    async with deployment.client("auditor") as auditor:
        with pytest.raises(ApiError) as forbidden:
            await auditor.send(referral([_id(deployment, "csc-duty")]))
    assert forbidden.value.http_status == 403


async def test_a_held_packets_deadlines_run_from_its_delivery(deployment: Deployment) -> None:
    """Approved three hours after submission, a held referral is due for acknowledgement from the approval."""
    from exchange.domain import parse_iso

    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([_id(deployment, "csc-duty")]))
    deployment.clock.offset_seconds += 3 * 3600
    async with deployment.client("school-head") as head:
        await _decide(head, sent["packet_id"])
    async with deployment.client("school-dsl") as dsl:
        (packet,) = [p for p in await dsl.outbox() if p["packet_id"] == sent["packet_id"]]
    delivered = parse_iso(packet["recipients"][0]["delivered_at"])
    obligations = await deployment.server.app[CONTEXT].store.obligations_for(sent["packet_id"])
    (ack,) = [o for o in obligations if o.kind == "ack"]
    assert packet["ack_due"] == ack.due
    assert parse_iso(packet["ack_due"]) > delivered > parse_iso(packet["created"])
