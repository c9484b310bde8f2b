"""Every error, whatever raised it, reaches the client as RFC 9457 problem+json with a stable code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exchange import httpsig
from exchange.client import ApiError
from exchange.web.limits import IN_FLIGHT
from tests.conftest import Deployment, start_deployment

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "instance", "request_id"}


async def _raw(
    deployment: Deployment, method: str, path: str, body: bytes = b"", sign: str | None = None
) -> tuple[int, str, Any]:
    headers = {"Content-Type": "application/json"}
    if sign is not None:
        headers |= httpsig.sign_request(method, deployment.url + path, body, deployment.credentials(sign).signing)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, deployment.url + path, data=body or None, headers=headers) as response,
    ):
        text = await response.text()
        return response.status, response.headers["Content-Type"], json.loads(text)


@pytest.mark.parametrize(
    ("method", "path", "body", "sign", "status", "code"),
    [
        ("GET", "/no/such/thing", b"", None, 404, "not_found"),
        ("DELETE", "/health", b"", None, 405, "request.method_not_allowed"),
        ("GET", "/v1/me", b"", None, 401, "auth.failed"),
        ("POST", "/v1/packets", b"{not json", "school-dsl", 400, "request.invalid"),
        ("POST", "/v1/packets", b"[]", "school-dsl", 422, "schema.invalid"),
        ("POST", "/v1/packets", b"", "school-dsl", 400, "request.invalid"),
        ("GET", "/v1/inbox?limit=abc", b"", "school-dsl", 400, "request.invalid"),
        ("GET", "/v1/packets/pkt_doesnotexist", b"", "school-dsl", 404, "not_found"),
        ("GET", "/v1/approvals", b"", "school-dsl", 200, None),
        ("GET", "/v1/approvals", b"", "csc-duty", 403, "auth.forbidden"),
        ("GET", "/v1/ledger/head", b"", "csc-duty", 403, "auth.forbidden"),
        ("GET", "/v1/ledger/proof/inclusion", b"", "auditor", 400, "request.invalid"),
        ("GET", "/v1/ledger/proof/inclusion?seq=-3", b"", "auditor", 400, "request.invalid"),
        ("POST", "/v1/packets/pkt_x/acknowledgement", b'{"key_id": 1}', "csc-duty", 422, "schema.invalid"),
    ],
)
async def test_error_routes_return_problem_documents(
    deployment: Deployment, method: str, path: str, body: bytes, sign: str | None, status: int, code: str | None
) -> None:
    """Each failure has the problem shape, its status and its code; no traceback ever appears."""
    got, content_type, payload = await _raw(deployment, method, path, body, sign)
    assert got == status
    if code is None:
        return
    assert content_type.split(";")[0] == "application/problem+json"
    assert set(payload) >= PROBLEM_KEYS
    assert payload["code"] == code
    assert payload["type"].endswith("/" + code)
    assert payload["status"] == status
    assert "Traceback" not in json.dumps(payload)


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    """A body over the configured cap is refused before anything reads it."""
    deployment, close = await start_deployment(tmp_path, max_body_bytes=4096)
    try:
        body = b'{"x": "' + b"a" * 10_000 + b'"}'
        status, content_type, payload = await _raw(deployment, "POST", "/v1/packets", body, "school-dsl")
        assert status == 413
        assert content_type.split(";")[0] == "application/problem+json"
        assert payload["code"] == "request.too_large"
    finally:
        await close()


async def test_requests_beyond_the_in_flight_cap_get_503(tmp_path: Path) -> None:
    """With the cap reached (here by one slow upload), the next request is refused with 503 server.busy
    and Retry-After before anything is read; /health still answers; once the upload ends, service resumes."""
    deployment, close = await start_deployment(tmp_path, max_concurrent_requests=1)
    release = asyncio.Event()
    first, rest = b'{"manifest":', b"{}}"
    url = deployment.url + "/v1/packets"
    headers = httpsig.sign_request("POST", url, first + rest, deployment.credentials("school-dsl").signing)

    async def slow_body() -> AsyncIterator[bytes]:
        yield first
        await release.wait()
        yield rest

    try:
        async with aiohttp.ClientSession() as session:
            upload = asyncio.create_task(
                session.post(url, data=slow_body(), headers=headers | {"Content-Type": "application/json"})
            )
            in_flight = deployment.server.app[IN_FLIGHT]
            for _ in range(3000):  # until the server is reading the upload (at most 30 s)
                if in_flight.count:
                    break
                await asyncio.sleep(0.01)
            assert in_flight.count == 1
            status, _, problem = await _raw(deployment, "GET", "/v1/me", sign="school-dsl")
            assert (status, problem["code"]) == (503, "server.busy")
            async with session.get(deployment.url + "/v1/me") as busy:
                assert busy.headers["Retry-After"] == "1"
            async with session.get(deployment.url + "/health") as health:
                assert health.status == 200
            release.set()
            async with await upload as answered:
                assert answered.status == 422  # read in full once released, and judged as usual
        async with deployment.client("school-dsl") as dsl:
            assert (await dsl.me())["id"] == deployment.credentials("school-dsl").member_id
    finally:
        release.set()
        await close()


async def test_an_unsigned_upload_is_refused_before_its_body_is_read(deployment: Deployment) -> None:
    """No one unauthenticated gets the server to read (and hold) an upload: the 401 comes while the
    body is still unsent."""
    release = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b'{"manifest":'
        await release.wait()
        yield b"{}}"

    try:
        async with (
            aiohttp.ClientSession() as session,
            asyncio.timeout(10),
            session.post(deployment.url + "/v1/packets", data=stalled_body()) as response,
        ):
            assert response.status == 401
            assert not release.is_set()
            release.set()  # let the client finish sending before the response is closed
    finally:
        release.set()


async def test_rate_limit_per_member(tmp_path: Path) -> None:
    """Past the per-minute allowance a member gets 429; another member is unaffected."""
    deployment, close = await start_deployment(tmp_path, rate_limit_per_minute=3)
    try:
        async with deployment.client("school-dsl") as dsl:
            for _ in range(3):
                await dsl.me()
            with pytest.raises(ApiError) as limited:
                await dsl.me()
            assert limited.value.http_status == 429
            assert limited.value.problem["code"] == "request.rate_limited"
            assert limited.value.retry_after is not None and 1 <= limited.value.retry_after <= 60
        async with deployment.client("csc-duty") as duty:
            await duty.me()
    finally:
        await close()


async def test_health_raises_the_alarm_when_head_signing_lags(tmp_path: Path) -> None:
    """If unsigned entries pile up past the threshold, /health says so."""
    deployment, close = await start_deployment(
        tmp_path, head_interval_ms=60_000, head_batch_entries=10_000, head_lag_alarm_entries=3
    )
    try:
        async with deployment.client("school-dsl") as dsl:
            for _ in range(4):
                await dsl.request("GET", "/v1/inbox")
        async with deployment.client("auditor") as auditor:
            for _ in range(3):
                await auditor.request("GET", "/v1/ledger/entries?limit=1")
            report = await auditor.health()
        assert report["status"] == "degraded"
        assert report["ledger"]["alarm"] is True
        assert report["ledger"]["unsigned"] >= 3
    finally:
        await close()
