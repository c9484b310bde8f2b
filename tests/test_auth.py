"""Every API request is signed (RFC 9421); unsigned, forged, stale and replayed requests get 401."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any

import aiohttp
import pytest

from exchange import httpsig
from exchange.domain import utc_now
from exchange.policy import load_catalogue
from tests.conftest import Deployment, Servers


async def _send(url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, headers=headers, data=body or None) as response,
    ):
        payload = json.loads(await response.read())
        assert response.headers["Content-Type"].startswith(
            "application/problem+json" if response.status >= 400 else "application/json"
        )
        return response.status, payload


async def test_signed_request_is_accepted(deployment: Deployment) -> None:
    """A request signed with a member's current key reaches the API."""
    key = deployment.credentials("school-dsl").signing
    url = deployment.url + "/v1/me"
    status, payload = await _send(deployment.url, "GET", "/v1/me", httpsig.sign_request("GET", url, b"", key))
    assert status == 200
    assert payload["roles"] == ["practitioner", "safeguarding_lead"]


async def test_unsigned_request_is_refused(deployment: Deployment) -> None:
    """No signature at all: 401 with a problem document naming the rule."""
    status, problem = await _send(deployment.url, "GET", "/v1/me", {})
    assert status == 401
    assert problem["code"] == "auth.failed"
    assert "not signed" in problem["detail"]


async def test_bad_signature_is_refused(deployment: Deployment) -> None:
    """A signature over one path presented on another does not verify."""
    key = deployment.credentials("school-dsl").signing
    headers = httpsig.sign_request("GET", deployment.url + "/v1/outbox", b"", key)
    status, problem = await _send(deployment.url, "GET", "/v1/me", headers)
    assert status == 401
    assert "does not verify" in problem["detail"]


async def test_changed_body_is_refused(deployment: Deployment) -> None:
    """The Content-Digest covers the body: a body changed after signing is refused."""
    key = deployment.credentials("school-admin").signing
    url = deployment.url + "/v1/members"
    headers = httpsig.sign_request("POST", url, b"{}", key) | {"Content-Type": "application/json"}
    status, _ = await _send(deployment.url, "POST", "/v1/members", headers, b'{"x": 1}')
    assert status == 401


async def test_replayed_nonce_is_refused(deployment: Deployment) -> None:
    """The same signed request sent twice: the second is a replay."""
    key = deployment.credentials("school-dsl").signing
    headers = httpsig.sign_request("GET", deployment.url + "/v1/me", b"", key)
    first, _ = await _send(deployment.url, "GET", "/v1/me", headers)
    second, problem = await _send(deployment.url, "GET", "/v1/me", headers)
    assert (first, second) == (200, 401)
    assert "replayed" in problem["detail"]


@pytest.mark.both_engines
async def test_attack_a_request_replayed_to_another_instance_is_refused(servers: Servers) -> None:
    """Nonces live in the shared store: a request captured on its way to one instance and replayed to
    another (behind a balancer both see the same Host) is a replay there too."""
    one, two = await servers.start(), await servers.start()
    key = one.credentials("school-dsl").signing
    headers = httpsig.sign_request("GET", one.url + "/v1/me", b"", key)
    first, _ = await _send(one.url, "GET", "/v1/me", headers)
    as_if_balanced = headers | {"Host": one.url.removeprefix("http://")}
    second, problem = await _send(two.url, "GET", "/v1/me", as_if_balanced)
    assert (first, second) == (200, 401)
    assert "replayed" in problem["detail"]


async def test_stale_created_is_refused(deployment: Deployment) -> None:
    """A signature created ten minutes ago is outside the window."""
    key = deployment.credentials("school-dsl").signing
    old = utc_now() - timedelta(minutes=10)
    headers = httpsig.sign_request("GET", deployment.url + "/v1/me", b"", key, now=old)
    status, problem = await _send(deployment.url, "GET", "/v1/me", headers)
    assert status == 401
    assert "too old" in problem["detail"]


async def test_future_created_is_refused(deployment: Deployment) -> None:
    """A signature dated in the future beyond the clock skew is refused."""
    key = deployment.credentials("school-dsl").signing
    later = utc_now() + timedelta(minutes=5)
    headers = httpsig.sign_request("GET", deployment.url + "/v1/me", b"", key, now=later)
    status, _ = await _send(deployment.url, "GET", "/v1/me", headers)
    assert status == 401


async def test_another_members_key_id_is_refused(deployment: Deployment) -> None:
    """Signing with my private key but claiming another member's key id fails verification."""
    mine = deployment.credentials("school-dsl").signing
    theirs = deployment.credentials("csc-duty").signing
    headers = httpsig.sign_request("GET", deployment.url + "/v1/me", b"", mine)
    headers["Signature-Input"] = headers["Signature-Input"].replace(mine.key_id, theirs.key_id)
    status, _ = await _send(deployment.url, "GET", "/v1/me", headers)
    assert status == 401


async def test_unknown_key_is_refused(deployment: Deployment) -> None:
    """A well-formed signature from a key the directory does not know is refused."""
    from exchange.crypto import SigningKey

    stranger = SigningKey.generate()
    headers = httpsig.sign_request("GET", deployment.url + "/v1/me", b"", stranger)
    status, problem = await _send(deployment.url, "GET", "/v1/me", headers)
    assert status == 401
    assert "unknown key" in problem["detail"]


async def test_revoked_key_is_refused(deployment: Deployment) -> None:
    """After a member revokes their key, requests signed with it are refused."""
    async with deployment.client("police-officer") as client:
        key_id = client.credentials.signing.key_id
        await client.revoke_key(key_id)
        key = client.credentials.signing
    headers = httpsig.sign_request("GET", deployment.url + "/v1/me", b"", key)
    status, problem = await _send(deployment.url, "GET", "/v1/me", headers)
    assert status == 401
    assert "revoked" in problem["detail"]


async def test_health_needs_no_signature(deployment: Deployment) -> None:
    """/health is public and reports the store and the ledger's signing state."""
    status, report = await _send(deployment.url, "GET", "/health", {})
    assert status == 200
    assert report["store"] == "reachable"
    assert report["ledger"]["alarm"] is False
    assert report["working_days"]["region"] == "England and Wales"


async def test_health_warns_before_the_bank_holiday_list_runs_out(deployment: Deployment) -> None:
    """Within 90 days of the calendar's last listed day, /health says to add the next year's holidays."""
    calendar = load_catalogue().calendar
    end = datetime.combine(calendar.covers_until, time(12), tzinfo=UTC)
    for days_left, alarm in ((91, False), (89, True)):
        deployment.clock.offset_seconds = (end - timedelta(days=days_left) - utc_now()).total_seconds()
        status, report = await _send(deployment.url, "GET", "/health", {})
        assert (status, report["status"], report["working_days"]["alarm"]) == (200, "ok", alarm)
    assert "schemas/working-days.v1.json" in report["working_days"]["detail"]
