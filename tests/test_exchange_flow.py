"""The whole exchange between two agencies: send → inbox → open → acknowledge → outbox."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from exchange import crypto
from exchange.client import ApiError
from exchange.errors import CryptoError
from exchange.examples import referral
from tests.conftest import Deployment, beside, ledger_entries, stored_bytes

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines


async def _ids(deployment: Deployment) -> dict[str, str]:
    return {
        label: deployment.credentials(label).member_id or "" for label in ("csc-duty", "csc-manager", "police-officer")
    }


async def test_referral_from_school_to_childrens_social_care(deployment: Deployment) -> None:
    """A school's DSL refers a child; the duty social worker opens, verifies and acknowledges it."""
    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([ids["csc-duty"]]))
    assert sent["status"] == "delivered"
    assert sent["ack_due"] is not None

    async with deployment.client("csc-duty") as duty:
        inbox = await duty.inbox()
        assert [p["packet_id"] for p in inbox] == [sent["packet_id"]]
        assert inbox[0]["delivery"]["status"] == "delivered"
        opened = await duty.open(sent["packet_id"])
        values = {f["name"]: f["value"] for f in opened.body["fields"]}
        assert values["child_name"] == "Jamie Example"
        assert opened.manifest_digest == sent["manifest_digest"]
        ack = await duty.acknowledge(sent["packet_id"])
        assert ack["acknowledged_at"]
        with pytest.raises(ApiError) as again:
            await duty.acknowledge(sent["packet_id"])
        assert again.value.http_status == 409
        after = await duty.inbox()
        assert after[0]["delivery"]["status"] == "acknowledged"
        assert after[0]["status"] == "delivered"

    async with deployment.client("school-dsl") as dsl:
        outbox = await dsl.outbox()
    recipient = outbox[0]["recipients"][0]
    assert recipient["status"] == "acknowledged"
    assert recipient["delivered_at"] and recipient["opened_at"] and recipient["acknowledged_at"]


async def test_only_recipients_can_fetch_a_packet(deployment: Deployment) -> None:
    """Anyone but a recipient gets 404 for the packet, even its sender's colleagues and the police."""
    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([ids["csc-duty"]]))
    for outsider in ("police-officer", "csc-manager", "school-head", "auditor"):
        async with deployment.client(outsider) as client:
            with pytest.raises(ApiError) as refused:
                await client.request("GET", f"/v1/packets/{sent['packet_id']}")
            assert refused.value.http_status == 404
            assert await client.inbox() == []


async def test_the_server_stores_no_content(deployment: Deployment) -> None:
    """Neither the database nor the record log contains the child's name or identifier."""
    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        await dsl.send(referral([ids["csc-duty"]]))
    everything = await stored_bytes(deployment) + deployment.config.record_log_path.read_bytes()
    for secret in (b"Jamie Example", b"943 476 5919", b"9434765919", b"Bruising"):
        assert secret not in everything


async def test_submission_is_recorded_with_codes_not_values(deployment: Deployment) -> None:
    """The ledger's submission entry names purpose, basis and fields, and the subject only as a pseudonym."""
    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([ids["csc-duty"]]))
    [entry] = [e for e in await ledger_entries(deployment) if e["seq"] == sent["ledger"]["seq"]]
    assert entry["type"] == "packet.submitted"
    assert entry["details"]["purpose"] == "referral_to_childrens_social_care"
    assert "child_name" in entry["details"]["fields"]
    assert len(entry["details"]["subject"]) == 64


async def test_tampered_body_is_refused_at_submission(deployment: Deployment) -> None:
    """A body that no longer matches the signed manifest's digest is refused with 422; nothing is delivered."""
    from dataclasses import replace

    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([ids["csc-duty"]]))
        broken = bytearray(sealed.body)
        broken[-1] ^= 1
        with pytest.raises(ApiError) as refused:
            await dsl.submit(replace(sealed, body=bytes(broken)))
    assert refused.value.http_status == 422
    assert refused.value.problem["code"] == "crypto.invalid"
    async with deployment.client("csc-duty") as duty:
        assert await duty.inbox() == []


async def test_sealed_to_a_key_that_is_not_the_recipients(deployment: Deployment) -> None:
    """A packet whose manifest names a key the recipient does not hold is refused."""
    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([ids["csc-duty"]]))
        manifest = json.loads(json.dumps(sealed.manifest))
        manifest["recipients"][0]["encryption_key"] = "mlkem768x25519:" + "0" * 32
        from dataclasses import replace

        resigned = replace(
            sealed, manifest=manifest, signature=dsl.credentials.signing.sign(crypto.canonical_json(manifest))
        )
        with pytest.raises(ApiError) as refused:
            await dsl.submit(resigned)
    assert refused.value.http_status == 422


async def _rejections(deployment: Deployment) -> list[dict[str, Any]]:
    """The details of every packet.rejected entry in the ledger, oldest first."""
    return [entry["details"] for entry in await ledger_entries(deployment, type="packet.rejected")]


async def test_manifest_sender_must_be_the_signer(deployment: Deployment) -> None:
    """A member cannot submit a manifest that names someone else as sender: 403, and the attempt is recorded."""
    ids = await _ids(deployment)
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([ids["csc-duty"]]))
    async with deployment.client("school-head") as head:
        with pytest.raises(ApiError) as refused:
            await head.submit(sealed)
    assert refused.value.http_status == 403
    assert refused.value.problem["code"] == "sender.not_signer"
    assert "another member as its sender" in refused.value.problem["detail"]
    assert (await _rejections(deployment))[-1]["code"] == "sender.not_signer"


async def test_a_sender_claiming_another_agency_is_forbidden(deployment: Deployment) -> None:
    """A school's DSL who signs a manifest naming children's social care as their agency gets 403, not a crypto
    error: the signature is good, the claim is not. Nothing is delivered and the attempt is recorded."""
    ids = await _ids(deployment)
    csc_agency = deployment.credentials("csc-duty").agency_id
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([ids["csc-duty"]]))
        own_agency = sealed.manifest["sender"]["agency"]
        manifest = json.loads(json.dumps(sealed.manifest))
        manifest["sender"]["agency"] = csc_agency
        resigned = replace(
            sealed, manifest=manifest, signature=dsl.credentials.signing.sign(crypto.canonical_json(manifest))
        )
        with pytest.raises(ApiError) as refused:
            await dsl.submit(resigned)
    assert own_agency != csc_agency
    assert refused.value.http_status == 403
    assert refused.value.problem["code"] == "sender.not_member_of_agency"
    detail = refused.value.problem["detail"]
    assert csc_agency in detail and own_agency in detail
    assert (await _rejections(deployment))[-1]["code"] == "sender.not_member_of_agency"
    async with deployment.client("csc-duty") as duty:
        assert await duty.inbox() == []


async def test_a_rejection_never_records_free_text(deployment: Deployment) -> None:
    """A name typed where a code belongs is refused, and the ledger's rejection entry does not repeat it."""
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.request(
                "POST",
                "/v1/packets",
                {
                    "manifest": {"purpose": "Jamie Example", "packet_id": "Jamie Example"},
                    "signature": "",
                    "body": "x",
                    "sealed_keys": {},
                },
            )
    assert refused.value.http_status == 422
    assert "Jamie" not in json.dumps(refused.value.problem)
    assert not any("Jamie" in json.dumps(entry) for entry in await ledger_entries(deployment))
    assert b"Jamie" not in deployment.config.record_log_path.read_bytes()


async def test_a_packet_to_an_agency_inbox_reaches_each_duty_member(deployment: Deployment) -> None:
    """Addressed to 'agency:<children's services>', it is sealed to the duty social worker and the manager only."""
    duty = deployment.credentials("csc-duty")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([f"agency:{duty.agency_id}"]))
        outbox = await dsl.outbox()
    recipients = {r["member"] for r in outbox[0]["recipients"]}
    assert recipients == {duty.member_id, deployment.credentials("csc-manager").member_id}
    for label in ("csc-duty", "csc-manager"):
        async with deployment.client(label) as member:
            assert (await member.open(sent["packet_id"])).body["fields"][0]["value"] == "Jamie Example"


async def test_the_sender_checks_each_recipients_key_against_its_key_id(deployment: Deployment) -> None:
    """A directory serving another key under the recipient's key id (a compromised server, simulated by
    writing to its database) is caught by the sender's client before anything is sealed to it."""
    ids = await _ids(deployment)
    intruder = crypto.EncryptionKey.generate()
    changed = await beside(
        deployment,
        "UPDATE member_keys SET public_key = ? WHERE member_id = ? AND use = 'encryption' RETURNING 1",
        intruder.public_bytes,
        ids["csc-duty"],
    )
    assert len(changed) == 1
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(CryptoError, match="does not match its key id"):
            await dsl.prepare(referral([ids["csc-duty"]]))
