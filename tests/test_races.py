"""Racing transitions on a real server: exactly one wins, the others get 409, one ledger entry each.

Found when the product was tried as a new user would: eight concurrent acknowledgements all got
201 and wrote eight entries; eight first fetches wrote several ``packet.opened``; an approval and
a refusal sent together both succeeded and the packet was delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from exchange import crypto, statements
from exchange.client import ApiError, ExchangeClient
from exchange.examples import referral, referral_without_consent
from tests.conftest import Deployment

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines


async def _outcomes(calls: list[Awaitable[Any]]) -> tuple[list[Any], list[ApiError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, ApiError)]
    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, ApiError)]
    assert not unexpected, unexpected
    return [r for r in results if not isinstance(r, BaseException)], errors


async def ledger_count(deployment: Deployment, event_type: str, packet_id: str) -> int:
    """How many entries of ``event_type`` the ledger holds for ``packet_id`` (read as the auditor)."""
    async with deployment.client("auditor") as auditor:
        found = await auditor.request("GET", f"/v1/ledger/entries?type={event_type}&packet={packet_id}&limit=1000")
    return len(found["entries"])


def _ack_document(client: ExchangeClient, packet_id: str, digest: str) -> dict[str, str]:
    statement = statements.acknowledgement_statement(packet_id, digest, client.member_id)
    return {
        "key_id": client.credentials.signing.key_id,
        "signature": crypto.b64encode(client.credentials.signing.sign(statement)),
    }


async def test_eight_concurrent_acknowledgements_one_wins(deployment: Deployment) -> None:
    """Race attack: eight simultaneous acknowledgements give one 201, seven 409s and one ledger entry."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty_id]))
    packet_id = sent["packet_id"]
    async with deployment.client("csc-duty") as duty:
        document = _ack_document(duty, packet_id, sent["manifest_digest"])
        path = f"/v1/packets/{packet_id}/acknowledgement"
        wins, losses = await _outcomes([duty.request("POST", path, document) for _ in range(8)])
    assert len(wins) == 1
    assert len(losses) == 7
    assert {e.http_status for e in losses} == {409}
    assert {e.problem_code for e in losses} == {"lifecycle.transition_not_allowed"}
    assert await ledger_count(deployment, "packet.acknowledged", packet_id) == 1


async def test_eight_concurrent_first_fetches_record_one_opening(deployment: Deployment) -> None:
    """Race attack: eight simultaneous first fetches all get the packet, and it is opened once."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty_id]))
    packet_id = sent["packet_id"]
    async with deployment.client("csc-duty") as duty:
        wins, losses = await _outcomes([duty.request("GET", f"/v1/packets/{packet_id}") for _ in range(8)])
    assert len(wins) == 8 and not losses
    assert await ledger_count(deployment, "packet.opened", packet_id) == 1


async def test_an_approval_and_a_refusal_at_once_one_decides(deployment: Deployment) -> None:
    """Race attack: two managers decide the same packet together; one decision stands, the other is 409."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([duty_id]))
    packet_id, digest = sent["packet_id"], sent["manifest_digest"]
    async with deployment.client("school-head") as head:
        path = f"/v1/approvals/{packet_id}"
        wins, losses = await _outcomes(
            [
                head.request("POST", path, head.approval_for(packet_id, digest, "approve")),
                head.request("POST", path, head.approval_for(packet_id, digest, "refuse")),
            ]
        )
    assert len(wins) == 1 and len(losses) == 1
    assert losses[0].http_status == 409
    approved = await ledger_count(deployment, "packet.approved", packet_id)
    refused = await ledger_count(deployment, "packet.approval_refused", packet_id)
    assert approved + refused == 1
    async with deployment.client("csc-duty") as duty:
        inbox = [p["packet_id"] for p in await duty.inbox()]
    # The recipient sees the packet exactly when the approval is the decision that won.
    assert (packet_id in inbox) is (approved == 1)
    assert await ledger_count(deployment, "packet.delivered", packet_id) == approved


async def test_a_second_decision_on_a_decided_packet_is_refused(deployment: Deployment) -> None:
    """One decision per packet: after approval, a refusal (by the same or another manager) is 409."""
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral_without_consent([duty_id]))
    packet_id, digest = sent["packet_id"], sent["manifest_digest"]
    async with deployment.client("school-head") as head:
        await head.request("POST", f"/v1/approvals/{packet_id}", head.approval_for(packet_id, digest))
        with pytest.raises(ApiError) as refused:
            await head.request("POST", f"/v1/approvals/{packet_id}", head.approval_for(packet_id, digest, "refuse"))
    assert refused.value.http_status == 409
    assert refused.value.problem_code == "lifecycle.transition_not_allowed"
