"""Every signed statement passes one current-key check, and nobody approves their own sharing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exchange import crypto, statements
from exchange.client import ApiError, ExchangeClient
from exchange.examples import referral, referral_without_consent
from tests.conftest import Deployment


async def _rotate_signing_key(deployment: Deployment, label: str) -> tuple[ExchangeClient, crypto.SigningKey]:
    """Register a new signing key for ``label``, revoke the old one; return a client on the new key."""
    old = deployment.credentials(label)
    new_key = crypto.SigningKey.generate()
    async with deployment.client(label) as client:
        await client.add_signing_key(new_key)
    rotated = ExchangeClient(deployment.url, replace(old, signing=new_key))
    async with rotated:
        await rotated.revoke_key(old.signing.key_id)
    return rotated, old.signing


async def test_an_acknowledgement_signed_with_a_revoked_key_is_refused(deployment: Deployment) -> None:
    """Found by a new user: an acknowledgement signed with a revoked key was accepted; now it is 422."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty_id]))
    rotated, revoked = await _rotate_signing_key(deployment, "csc-duty")
    statement = statements.acknowledgement_statement(sent["packet_id"], sent["manifest_digest"], duty_id)
    document = {"key_id": revoked.key_id, "signature": crypto.b64encode(revoked.sign(statement))}
    async with rotated:
        with pytest.raises(ApiError) as refused:
            await rotated.request("POST", f"/v1/packets/{sent['packet_id']}/acknowledgement", document)
        assert refused.value.http_status == 422
        assert refused.value.problem_code == "crypto.invalid"
        assert "revoked" in refused.value.problem["detail"]
        # The current key still acknowledges.
        await rotated.acknowledge(sent["packet_id"])


async def test_an_approval_signed_with_a_revoked_key_is_refused(deployment: Deployment) -> None:
    """A manager's decision signed with a key they revoked does not count."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([duty_id]))
    rotated, revoked = await _rotate_signing_key(deployment, "school-head")
    head_id = rotated.member_id
    statement = statements.approval_statement(sent["packet_id"], sent["manifest_digest"], head_id, "approve")
    decision = {
        "approver": head_id,
        "key_id": revoked.key_id,
        "decision": "approve",
        "signature": crypto.b64encode(revoked.sign(statement)),
    }
    async with rotated:
        with pytest.raises(ApiError) as refused:
            await rotated.request("POST", f"/v1/approvals/{sent['packet_id']}", decision)
    assert refused.value.http_status == 422
    assert "revoked" in refused.value.problem["detail"]


async def test_an_acknowledgement_signed_with_someone_elses_key_is_refused(deployment: Deployment) -> None:
    """Wrong-key attack: the duty worker presents the manager's key id and signature as their own."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty_id]))
    manager = deployment.credentials("csc-manager")
    statement = statements.acknowledgement_statement(sent["packet_id"], sent["manifest_digest"], duty_id)
    document = {"key_id": manager.signing.key_id, "signature": crypto.b64encode(manager.signing.sign(statement))}
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as refused:
            await duty.request("POST", f"/v1/packets/{sent['packet_id']}/acknowledgement", document)
    assert refused.value.http_status == 422


async def test_a_safeguarding_lead_cannot_attach_their_own_approval(deployment: Deployment) -> None:
    """Found by a new user: the school's DSL (a safeguarding lead) approved their own sharing at submission."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral_without_consent([duty_id]))
        own = dsl.approval_for(sealed.manifest["packet_id"], sealed.manifest_digest)
        with pytest.raises(ApiError) as refused:
            await dsl.submit(sealed, own)
    assert refused.value.http_status == 422
    assert [v["rule"] for v in refused.value.problem["violations"]] == ["without_consent.self_approval"]
    async with deployment.client("csc-duty") as duty:
        assert await duty.inbox() == []


async def test_a_safeguarding_lead_cannot_approve_their_own_sharing_in_the_queue(deployment: Deployment) -> None:
    """The queue path refuses self-approval too: the sender is never their own senior approval."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([duty_id]))
        own = dsl.approval_for(sent["packet_id"], sent["manifest_digest"])
        with pytest.raises(ApiError) as refused:
            await dsl.request("POST", f"/v1/approvals/{sent['packet_id']}", own)
    assert refused.value.http_status == 403
