"""Putting a mistake right: a sender recalls a packet nobody has opened, or corrects one with a new packet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from exchange import lifecycle
from exchange.client import ApiError, ExchangeClient
from exchange.examples import imminent_harm, referral, referral_without_consent
from exchange.lifecycle import ApprovalState, Party, Step
from exchange.lifecycle import DeliveryState as D
from exchange.lifecycle import PacketState as P
from exchange.store import Store, open_store
from tests.conftest import Deployment
from tests.test_cli import cli, cli_json


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


@asynccontextmanager
async def _store(deployment: Deployment) -> AsyncIterator[Store]:
    """A second connection to the running server's database, to read what the API does not show."""
    store = await open_store(deployment.config.database_target)
    try:
        yield store
    finally:
        await store.close()


async def _entries(deployment: Deployment, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    async with deployment.client("auditor") as auditor:
        answer = await auditor.request("GET", f"/v1/ledger/entries?{query}&limit=1000")
    return [item["entry"] for item in answer["entries"]]


async def _send(deployment: Deployment, to: list[str], packet: dict[str, Any] | None = None) -> dict[str, Any]:
    async with deployment.client("school-dsl") as dsl:
        sent: dict[str, Any] = await dsl.send(packet or referral(to))
    return sent


async def _inbox_item(client: ExchangeClient, packet_id: str) -> dict[str, Any]:
    item: dict[str, Any] = next(p for p in await client.inbox() if p["packet_id"] == packet_id)
    return item


# ------------------------------------------------------------------------------------------ recall


async def test_recall_before_anyone_opened_it_takes_the_packet_back(deployment: Deployment) -> None:
    """Every copy is recalled, nobody can fetch it (410), its obligations are cancelled, one ledger entry."""
    duty, manager = _id(deployment, "csc-duty"), _id(deployment, "csc-manager")
    sent = await _send(deployment, [duty, manager])
    async with deployment.client("school-dsl") as dsl:
        recalled = await dsl.recall(sent["packet_id"], "sent_to_wrong_recipient")
        outbox = next(p for p in await dsl.outbox() if p["packet_id"] == sent["packet_id"])
    assert recalled["status"] == "recalled" and sorted(recalled["recipients"]) == sorted([duty, manager])
    assert outbox["status"] == "recalled" and {r["status"] for r in outbox["recipients"]} == {"recalled"}
    async with deployment.client("csc-duty") as recipient:
        with pytest.raises(ApiError) as gone:
            await recipient.open(sent["packet_id"])
        item = await _inbox_item(recipient, sent["packet_id"])
    assert gone.value.http_status == 410
    assert item["status"] == "recalled" and item["delivery"]["status"] == "recalled"
    assert item["content_removed_at"] is not None
    async with _store(deployment) as store:
        obligations = await store.obligations_for(sent["packet_id"])
        packet = await store.get_packet(sent["packet_id"])
        deliveries = await store.deliveries_for_packet(sent["packet_id"])
    assert obligations and {o.state for o in obligations} == {"cancelled"}
    assert packet is not None and packet.body == b""
    assert all(d.sealed_key == b"" for d in deliveries)
    entries = await _entries(deployment, packet=sent["packet_id"], type="packet.recalled")
    assert len(entries) == 1
    assert entries[0]["details"]["reason"] == "sent_to_wrong_recipient"
    assert sorted(r["member"] for r in entries[0]["details"]["recipients"]) == sorted([duty, manager])


async def test_recall_after_a_recipient_opened_it_is_refused(deployment: Deployment) -> None:
    """Once any recipient has opened it the information is out: 409, and nothing changes."""
    duty, manager = _id(deployment, "csc-duty"), _id(deployment, "csc-manager")
    sent = await _send(deployment, [duty, manager])
    async with deployment.client("csc-manager") as officer:
        await officer.open(sent["packet_id"])
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.recall(sent["packet_id"], "contains_error")
    assert refused.value.http_status == 409
    assert refused.value.problem_code == "lifecycle.not_recallable"
    assert manager in refused.value.problem["detail"]
    async with deployment.client("csc-duty") as recipient:
        opened = await recipient.open(sent["packet_id"])
    assert opened.packet_id == sent["packet_id"]
    assert await _entries(deployment, packet=sent["packet_id"], type="packet.recalled") == []


async def test_only_the_sender_can_recall(deployment: Deployment) -> None:
    """A recipient, a colleague of the sender or an auditor gets 404; the packet stays delivered."""
    sent = await _send(deployment, [_id(deployment, "csc-duty")])
    for label in ("csc-duty", "school-head", "auditor"):
        async with deployment.client(label) as other:
            with pytest.raises(ApiError) as refused:
                await other.recall(sent["packet_id"], "other")
        assert refused.value.http_status == 404, label
    async with deployment.client("csc-duty") as recipient:
        assert (await recipient.open(sent["packet_id"])).packet_id == sent["packet_id"]


async def test_recall_needs_a_reason_from_the_vocabulary(deployment: Deployment) -> None:
    """A free-text reason would go into the ledger: only the codes are accepted (422, schema)."""
    sent = await _send(deployment, [_id(deployment, "csc-duty")])
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.recall(sent["packet_id"], "I sent it to Jamie's teacher by mistake")
    assert refused.value.http_status == 422 and refused.value.problem_code == "schema.invalid"
    assert "Jamie" not in refused.value.problem["detail"]


async def test_recalling_a_held_packet_cancels_the_approval_and_the_recipient_never_sees_it(
    deployment: Deployment,
) -> None:
    """A packet waiting for a manager leaves the queue; the recipient's inbox never shows it."""
    sent = await _send(deployment, [], referral_without_consent([_id(deployment, "csc-duty")]))
    assert sent["status"] == "awaiting_approval"
    async with deployment.client("school-dsl") as dsl:
        await dsl.recall(sent["packet_id"], "no_longer_necessary")
    async with deployment.client("school-head") as head:
        assert (await head.request("GET", "/v1/approvals"))["packets"] == []
    async with deployment.client("csc-duty") as recipient:
        assert await recipient.inbox() == []
        with pytest.raises(ApiError) as hidden:
            await recipient.request("GET", f"/v1/packets/{sent['packet_id']}")
    assert hidden.value.http_status == 404
    async with _store(deployment) as store:
        packet = await store.get_packet(sent["packet_id"])
    assert packet is not None and packet.approval_state.value == "cancelled"


async def test_recalling_imminent_harm_sent_first_cancels_the_owed_approval(deployment: Deployment) -> None:
    """Nothing was disclosed, so no manager owes a decision after the event any more."""
    sent = await _send(deployment, [], imminent_harm([_id(deployment, "csc-duty")], "2026-11-21"))
    assert sent["approval_due"] is not None
    async with deployment.client("school-dsl") as dsl:
        await dsl.recall(sent["packet_id"], "wrong_child")
    async with deployment.client("school-head") as head:
        assert (await head.request("GET", "/v1/approvals"))["packets"] == []
    async with _store(deployment) as store:
        obligations = await store.obligations_for(sent["packet_id"])
    assert {o.kind for o in obligations} >= {"approval", "ack"}
    assert {o.state for o in obligations} == {"cancelled"}


async def test_race_recall_against_first_open_has_one_winner(deployment: Deployment) -> None:
    """A recall and the recipient's first fetch sent at the same moment: exactly one of them happens."""
    duty = _id(deployment, "csc-duty")
    outcomes: set[str] = set()
    async with deployment.client("school-dsl") as dsl, deployment.client("csc-duty") as recipient:
        for _ in range(8):
            sent = await dsl.send(referral([duty]))
            results: tuple[Any, Any] = await asyncio.gather(
                dsl.recall(sent["packet_id"], "contains_error"),
                recipient.request("GET", f"/v1/packets/{sent['packet_id']}"),
                return_exceptions=True,
            )
            recall, fetch = results
            if isinstance(recall, ApiError):
                assert recall.http_status == 409 and not isinstance(fetch, BaseException)
                outcomes.add("open")
            else:
                assert isinstance(fetch, ApiError) and fetch.http_status in (404, 410), fetch
                outcomes.add("recall")
            types = [e["type"] for e in await _entries(deployment, packet=sent["packet_id"])]
            assert ("packet.opened" in types) != ("packet.recalled" in types), types
            assert types.count("packet.opened") + types.count("packet.recalled") == 1
    assert outcomes  # which side wins each round is the scheduler's choice; both happen over the rounds


# -------------------------------------------------------------------------------------- correction


async def test_a_correction_supersedes_the_earlier_packet_for_its_recipients(deployment: Deployment) -> None:
    """The recipient sees the earlier packet superseded by the correction, with the fields that were wrong."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    fixed = referral([duty])
    fixed["fields"]["child_date_of_birth"]["value"] = "2017-03-12"
    async with deployment.client("school-dsl") as dsl:
        correction = await dsl.correct(sent["packet_id"], fixed, ["child_date_of_birth"])
    assert correction["status"] == "delivered"
    async with deployment.client("csc-duty") as recipient:
        earlier = await _inbox_item(recipient, sent["packet_id"])
        later = await _inbox_item(recipient, correction["packet_id"])
        fetched = await recipient.request("GET", f"/v1/packets/{sent['packet_id']}")
        opened = await recipient.open(correction["packet_id"])
    assert earlier["status"] == "superseded" and earlier["superseded_by"] == correction["packet_id"]
    assert earlier["corrected_fields"] == ["child_date_of_birth"]
    assert fetched["superseded_by"] == correction["packet_id"]
    assert fetched["corrected_fields"] == ["child_date_of_birth"]
    assert later["supersedes"] == sent["packet_id"] and later["corrected_fields"] == ["child_date_of_birth"]
    assert opened.manifest["corrects"] == {"packet_id": sent["packet_id"], "fields": ["child_date_of_birth"]}
    async with _store(deployment) as store:
        old = await store.obligations_for(sent["packet_id"])
        new = await store.obligations_for(correction["packet_id"])
    assert {o.state for o in old if o.kind in ("ack", "action", "expiry")} == {"cancelled"}
    assert {o.state for o in new if o.kind == "ack"} == {"open"}
    entries = await _entries(deployment, packet=sent["packet_id"], type="packet.superseded")
    assert len(entries) == 1
    assert entries[0]["details"] == {"superseded_by": correction["packet_id"], "fields": ["child_date_of_birth"]}


async def test_a_correction_to_other_recipients_is_refused(deployment: Deployment) -> None:
    """Everyone who received the wrong information, and nobody else, receives the correction (422)."""
    duty, manager = _id(deployment, "csc-duty"), _id(deployment, "csc-manager")
    sent = await _send(deployment, [duty])
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.correct(sent["packet_id"], referral([duty, manager]), ["child_name"])
    assert refused.value.http_status == 422
    assert [v["rule"] for v in refused.value.problem["violations"]] == ["correction.recipients_differ"]
    rejected = await _entries(deployment, type="packet.rejected")
    assert rejected[-1]["details"]["rules"] == ["correction.recipients_differ"]


async def test_a_correction_naming_a_field_the_packet_never_had_is_refused(deployment: Deployment) -> None:
    """A field that was not shared cannot have been wrong (422, naming the rule)."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.correct(sent["packet_id"], referral([duty]), ["child_name", "school_attendance"])
    assert refused.value.http_status == 422
    violations = refused.value.problem["violations"]
    assert [(v["rule"], v["path"]) for v in violations] == [("correction.field_not_in_original", "/corrects/fields/1")]


async def test_correcting_someone_elses_packet_is_refused(deployment: Deployment) -> None:
    """Children's services cannot correct the school's packet, even to the same recipient."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    async with deployment.client("csc-manager") as other:
        with pytest.raises(ApiError) as refused:
            await other.correct(sent["packet_id"], referral([duty]), ["child_name"])
    assert refused.value.http_status == 422
    assert [v["rule"] for v in refused.value.problem["violations"]] == ["correction.unknown_packet"]
    async with deployment.client("csc-duty") as recipient:
        assert (await _inbox_item(recipient, sent["packet_id"]))["status"] == "delivered"


async def test_a_recalled_or_superseded_packet_cannot_be_corrected(deployment: Deployment) -> None:
    """Only a delivered packet is corrected: a second correction of the same packet is refused."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    async with deployment.client("school-dsl") as dsl:
        await dsl.correct(sent["packet_id"], referral([duty]), ["child_name"])
        with pytest.raises(ApiError) as again:
            await dsl.correct(sent["packet_id"], referral([duty]), ["child_name"])
        recalled = await dsl.send(referral([duty]))
        await dsl.recall(recalled["packet_id"], "other")
        with pytest.raises(ApiError) as gone:
            await dsl.correct(recalled["packet_id"], referral([duty]), ["child_name"])
    for refused in (again, gone):
        assert refused.value.http_status == 422
        assert [v["rule"] for v in refused.value.problem["violations"]] == ["correction.not_delivered"]


async def test_a_correction_held_for_approval_supersedes_only_once_delivered(deployment: Deployment) -> None:
    """Until a manager approves the correction, the earlier packet is all the recipient has."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    async with deployment.client("school-dsl") as dsl:
        held = await dsl.correct(sent["packet_id"], referral_without_consent([duty]), ["child_name"])
    assert held["status"] == "awaiting_approval"
    async with deployment.client("csc-duty") as recipient:
        assert (await _inbox_item(recipient, sent["packet_id"]))["status"] == "delivered"
    async with deployment.client("school-head") as head:
        item = await head.request("GET", f"/v1/approvals/{held['packet_id']}")
        await head.request(
            "POST", f"/v1/approvals/{held['packet_id']}", head.approval_for(held["packet_id"], item["manifest_digest"])
        )
    async with deployment.client("csc-duty") as recipient:
        earlier = await _inbox_item(recipient, sent["packet_id"])
    assert earlier["status"] == "superseded" and earlier["superseded_by"] == held["packet_id"]
    superseded = await _entries(deployment, packet=sent["packet_id"], type="packet.superseded")
    assert [e["actor"]["member"] for e in superseded] == [_id(deployment, "school-dsl")]


async def test_a_held_correction_of_a_packet_recalled_meanwhile_cannot_be_approved(deployment: Deployment) -> None:
    """The correction would replace nothing: the approval is refused (409) and nothing is delivered."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    async with deployment.client("school-dsl") as dsl:
        held = await dsl.correct(sent["packet_id"], referral_without_consent([duty]), ["child_name"])
        await dsl.recall(sent["packet_id"], "wrong_child")
    async with deployment.client("school-head") as head:
        item = await head.request("GET", f"/v1/approvals/{held['packet_id']}")
        with pytest.raises(ApiError) as refused:
            await head.request(
                "POST",
                f"/v1/approvals/{held['packet_id']}",
                head.approval_for(held["packet_id"], item["manifest_digest"]),
            )
        assert refused.value.http_status == 409
        assert [p["packet_id"] for p in (await head.request("GET", "/v1/approvals"))["packets"]] == [held["packet_id"]]
    async with deployment.client("csc-duty") as recipient:
        assert held["packet_id"] not in [p["packet_id"] for p in await recipient.inbox()]


# ------------------------------------------------------------------------------------------ the CLI


async def test_cli_correct_then_recall(deployment: Deployment, tmp_path: Path) -> None:
    """``exchange correct`` reaches the same recipients without naming them; ``open`` warns of it; ``recall`` works."""
    duty = _id(deployment, "csc-duty")
    sent = await _send(deployment, [duty])
    fixed = referral([])
    del fixed["to"]
    fixed["fields"]["child_address"]["value"] = "2 Example Street, Northfield"
    packet_file = tmp_path / "correction.json"
    packet_file.write_text(json.dumps(fixed))
    sender = ["--key", str(deployment.key_dir / "school-dsl.json"), "--server", deployment.url]
    recipient = ["--key", str(deployment.key_dir / "csc-duty.json"), "--server", deployment.url]
    corrected = await cli_json("correct", sent["packet_id"], str(packet_file), "--fields", "child_address", *sender)
    assert corrected["status"] == "delivered" and corrected["corrected_fields"] == ["child_address"]
    shown, _ = await cli("open", sent["packet_id"], *recipient)
    assert f"SUPERSEDED by the correction {corrected['packet_id']}" in shown and "child_address" in shown
    inbox, _ = await cli("inbox", *recipient)
    assert f"This corrects {sent['packet_id']}" in inbox
    words, _ = await cli("recall", corrected["packet_id"], "--reason", "contains_error", *sender)
    assert f"Recalled packet {corrected['packet_id']}" in words
    _, refused = await cli("recall", sent["packet_id"], "--reason", "contains_error", *sender, expect=1)
    assert "lifecycle.not_recallable" in refused


# ------------------------------------------------------------------------------ the table, purely


def test_recallable_only_while_no_copy_was_opened() -> None:
    """Held, delivered or undelivered copies may be recalled; one opened copy stops it; so does a final packet."""
    assert lifecycle.recallable(P.DELIVERED, [D.DELIVERED, D.UNDELIVERED])
    assert lifecycle.recallable(P.AWAITING_APPROVAL, [D.PENDING])
    for opened in (D.OPENED, D.ACKNOWLEDGED, D.ACTION_REPORTED, D.CONFIRMED):
        assert not lifecycle.recallable(P.DELIVERED, [D.DELIVERED, opened])
    for final in (P.RECALLED, P.SUPERSEDED, P.REFUSED):
        assert not lifecycle.recallable(final, [D.DELIVERED])


def test_an_owed_approval_is_cancelled_by_a_recall() -> None:
    """Imminent harm sent first and recalled unopened: the approval owed after the event is cancelled."""
    transition = lifecycle.next_approval_state(ApprovalState.OWED, Step.RECALL, Party.SENDER)
    assert transition.next is ApprovalState.CANCELLED
    with pytest.raises(lifecycle.NotYourStep):
        lifecycle.next_approval_state(ApprovalState.OWED, Step.RECALL, Party.APPROVER)
