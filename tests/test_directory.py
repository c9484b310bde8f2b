"""The directory: agency admins register their own agency's members; keys rotate and revoke."""

from __future__ import annotations

import pytest

from exchange.client import ApiError
from exchange.keyfile import MemberCredentials
from tests.conftest import Deployment


async def test_admin_registers_a_member_of_their_agency(deployment: Deployment) -> None:
    """The new member can authenticate with the key file they generated themselves."""
    newcomer = MemberCredentials.generate()
    async with deployment.client("school-admin") as admin:
        me = await admin.me()
        created = await admin.register_member(me["agency"], "New teacher", ["practitioner"], newcomer)
    assert created["roles"] == ["practitioner"]
    registered = newcomer.registered(created["id"], created["agency"], deployment.url, "New teacher")
    from exchange.client import ExchangeClient

    async with ExchangeClient(deployment.url, registered) as client:
        assert (await client.me())["id"] == created["id"]


async def test_admin_cannot_register_into_another_agency(deployment: Deployment) -> None:
    """An agency admin manages their own agency only: 403."""
    async with deployment.client("csc-admin") as csc:
        csc_agency = (await csc.me())["agency"]
    async with deployment.client("school-admin") as admin:
        with pytest.raises(ApiError) as refused:
            await admin.register_member(csc_agency, "Intruder", ["manager"], MemberCredentials.generate())
    assert refused.value.http_status == 403


async def test_practitioner_cannot_register_members(deployment: Deployment) -> None:
    """Registering members is the agency admin's job."""
    async with deployment.client("school-dsl") as dsl:
        agency = (await dsl.me())["agency"]
        with pytest.raises(ApiError) as refused:
            await dsl.register_member(agency, "Someone", ["practitioner"], MemberCredentials.generate())
    assert refused.value.http_status == 403


async def test_invalid_registration_lists_schema_errors(deployment: Deployment) -> None:
    """A registration with a bad role is a 422 problem listing the schema error's path."""
    async with deployment.client("school-admin") as admin:
        agency = (await admin.me())["agency"]
        with pytest.raises(ApiError) as refused:
            await admin.register_member(agency, "X", ["wizard"], MemberCredentials.generate())
    assert refused.value.http_status == 422
    assert refused.value.problem["code"] == "schema.invalid"
    assert any(e["path"] == "/roles/0" for e in refused.value.problem["errors"])


async def test_key_rotation_then_revocation(deployment: Deployment) -> None:
    """A member adds a new signing key, uses it, and revokes the old one."""
    from exchange.client import ExchangeClient
    from exchange.crypto import SigningKey

    old = deployment.credentials("csc-duty")
    fresh = SigningKey.generate()
    async with ExchangeClient(deployment.url, old) as client:
        await client.add_signing_key(fresh)
    rotated = MemberCredentials(old.member_id, old.agency_id, old.server, fresh, old.encryption)
    async with ExchangeClient(deployment.url, rotated) as client:
        revoked = await client.revoke_key(old.signing.key_id)
        assert revoked["revoked_at"]
        keys = {k["key_id"]: k for k in (await client.me())["keys"]}
    assert keys[old.signing.key_id]["revoked_at"] is not None
    assert keys[fresh.key_id]["revoked_at"] is None
    async with ExchangeClient(deployment.url, old) as client:
        with pytest.raises(ApiError) as refused:
            await client.me()
    assert refused.value.http_status == 401


async def test_member_cannot_manage_another_members_keys(deployment: Deployment) -> None:
    """Only the member or their agency admin may touch their keys."""
    victim = deployment.credentials("csc-duty")
    async with deployment.client("police-officer") as client:
        with pytest.raises(ApiError) as refused:
            await client.revoke_key(victim.signing.key_id)
    assert refused.value.http_status == 403
