"""Issue 8 findings: nobody takes over a member's keys, and an agency admin grants only in-agency roles."""

from __future__ import annotations

from typing import Any

import pytest

from exchange import bootstrap, crypto, statements
from exchange.client import ApiError, ExchangeClient
from exchange.keyfile import MemberCredentials
from tests.conftest import Deployment


async def test_attack_admin_cannot_add_a_key_to_another_member(deployment: Deployment) -> None:
    """Finding: an agency admin added a signing key to their agency's manager, then signed in as them (403 now)."""
    manager = deployment.credentials("school-head")
    planted = MemberCredentials.generate()
    async with deployment.client("school-admin") as admin:
        document: dict[str, Any] = {"use": "signing", "public": crypto.b64encode(planted.signing.public_bytes)}
        with pytest.raises(ApiError) as refused:
            await admin.request("POST", f"/v1/members/{manager.member_id}/keys", document)
        assert refused.value.http_status == 403
        assert refused.value.problem_code == "keys.not_owner"
        encryption = {"use": "encryption", "public": crypto.b64encode(planted.encryption.public_bytes)}
        with pytest.raises(ApiError) as refused:
            await admin.request("POST", f"/v1/members/{manager.member_id}/keys", encryption)
        assert refused.value.problem_code == "keys.not_owner"
    # The planted key signs nothing: the manager's account still has only the manager's own keys.
    impostor = MemberCredentials(manager.member_id, manager.agency_id, None, planted.signing, planted.encryption)
    async with ExchangeClient(deployment.url, impostor) as client:
        with pytest.raises(ApiError) as unknown:
            await client.me()
    assert unknown.value.http_status == 401


async def test_a_new_signing_key_needs_its_own_proof(deployment: Deployment) -> None:
    """A member adding a signing key proves they hold it: a proof made with another key is refused (422)."""
    fresh, other = crypto.SigningKey.generate(), crypto.SigningKey.generate()
    async with deployment.client("csc-duty") as client:
        with pytest.raises(ApiError) as refused:
            await client.add_key("signing", fresh.public_bytes, proof=other.sign(b"anything"))
        assert refused.value.problem_code == "keys.proof_invalid"
        with pytest.raises(ApiError) as missing:
            await client.add_key("signing", fresh.public_bytes)
        assert missing.value.problem_code == "keys.proof_invalid"
        added = await client.add_signing_key(fresh)
    assert added["key_id"] == fresh.key_id


async def test_attack_admin_cannot_register_an_auditor(deployment: Deployment) -> None:
    """Finding: an agency admin registered an auditor (who reads every ledger): 403, the operator grants it."""
    async with deployment.client("school-admin") as admin:
        agency = (await admin.me())["agency"]
        with pytest.raises(ApiError) as refused:
            await admin.register_member(agency, "Friendly auditor", ["auditor"], MemberCredentials.generate())
    assert refused.value.http_status == 403
    assert refused.value.problem_code == "directory.role_needs_operator"


async def test_attack_admin_cannot_register_a_second_identity_with_their_own_keys(deployment: Deployment) -> None:
    """Finding: an admin registered a second identity for themselves: their own keys are refused (409)."""
    own = deployment.credentials("school-admin")
    async with deployment.client("school-admin") as admin:
        agency = (await admin.me())["agency"]
        with pytest.raises(ApiError) as refused:
            await admin.register_member(agency, "My manager self", ["manager"], own)
    assert refused.value.http_status == 409
    assert refused.value.problem_code == "keys.in_use"


async def test_registration_needs_the_members_own_proof(deployment: Deployment) -> None:
    """An admin binds a person to keys only with that person's signature over them: a forged proof is 422."""
    newcomer, forger = MemberCredentials.generate(), MemberCredentials.generate()
    enrolment = newcomer.enrolment()
    # The admin swaps in their own encryption key: the newcomer's proof no longer covers the keys sent.
    enrolment["encryption_key"] = forger.enrolment()["encryption_key"]
    async with deployment.client("school-admin") as admin:
        agency = (await admin.me())["agency"]
        with pytest.raises(ApiError) as refused:
            await admin.register_member(agency, "New teacher", ["practitioner"], enrolment)
        assert refused.value.problem_code == "keys.proof_invalid"
        created = await admin.register_member(agency, "New teacher", ["practitioner"], newcomer.enrolment())
    assert created["roles"] == ["practitioner"]


async def test_operator_registers_an_auditor_offline(deployment: Deployment, tmp_path: Any) -> None:
    """The deployment's operator grants the auditor role (``exchange operator register``), with the member's proof."""
    newcomer = MemberCredentials.generate()
    async with deployment.client("auditor") as auditor:
        agency = (await auditor.me())["agency"]
    created = await bootstrap.operator_register(
        deployment.config, agency_id=agency, display_name="Second auditor", roles=["auditor"],
        enrolment=newcomer.enrolment(),
    )
    assert created["roles"] == ["auditor"]
    async with ExchangeClient(deployment.url, newcomer) as client:
        me = await client.me()
    assert me["roles"] == ["auditor"]


async def test_a_keys_not_after_is_stored_in_utc(deployment: Deployment) -> None:
    """A not_after sent with an offset is stored (and shown) as the same moment in UTC."""
    fresh = crypto.SigningKey.generate()
    async with deployment.client("csc-duty") as client:
        statement = statements.new_key_statement(client.member_id, fresh.key_id, "signing")
        document = {
            "use": "signing",
            "public": crypto.b64encode(fresh.public_bytes),
            "proof": crypto.b64encode(fresh.sign(statement)),
            "not_after": "2099-01-01t01:30:00+01:30",
        }
        await client.request("POST", f"/v1/members/{client.member_id}/keys", document)
        keys = {k["key_id"]: k for k in (await client.me())["keys"]}
    assert keys[fresh.key_id]["not_after"] == "2099-01-01T00:00:00.000Z"
