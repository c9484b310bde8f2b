"""Hostile transport: nobody without a member's private key holds the server, and no header or framing is a 5xx.

Findings of issue 8 tried as an attacker would, over raw sockets against a real server: the body was
read before the signature was verified, so with only a public key id an attacker trickling slow
uploads held every in-flight slot and members got 503; a false ``Content-Encoding: gzip``, a
signature ``created`` of ±1e15 and a ``Host`` with port 99999 were 500s.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from exchange import crypto, httpsig
from exchange.crypto import SigningKey
from exchange.examples import referral
from tests.conftest import Deployment, start_deployment


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def problem(self) -> dict[str, Any]:
        """The problem document; asserts the response is one (RFC 9457), with no traceback."""
        assert self.headers["content-type"].startswith("application/problem+json"), self.headers
        assert b"Traceback" not in self.body
        document: dict[str, Any] = json.loads(self.body)
        assert document["status"] == self.status
        return document


class Connection:
    """One raw TCP connection to the server: write bytes exactly as given, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, within: float = 5.0) -> RawResponse | None:
        """The next response, or None if none comes within ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                head = await self.reader.readuntil(b"\r\n\r\n")
                status_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except TimeoutError:
            return None
        return RawResponse(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self, within: float = 5.0) -> bool:
        """Whether the server closes the connection within ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True


@asynccontextmanager
async def connect(deployment: Deployment) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", deployment.server.port)
    try:
        yield Connection(reader, writer)
    finally:
        writer.close()


def request_head(
    method: str, path: str, headers: dict[str, str], *, host: str | None = "127.0.0.1", version: str = "1.1"
) -> bytes:
    """The request line and header block, byte for byte (a ``host`` of None sends no Host)."""
    lines = [f"{method} {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def signed(deployment: Deployment, label: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """Headers signing this request as the demo member ``label``, with its Content-Length."""
    key = deployment.credentials(label).signing
    headers = httpsig.sign_request(method, deployment.url + path, body, key)
    return headers | {"Content-Type": "application/json", "Content-Length": str(len(body))}


async def exchange_raw(deployment: Deployment, data: bytes) -> RawResponse:
    """Send ``data`` on a new connection and return the one response (within 5 seconds)."""
    async with connect(deployment) as connection:
        await connection.send(data)
        response = await connection.response()
    assert response is not None, "no response"
    return response


# ---------------------------------------------------------------------------- authentication before the body


def _forged(deployment: Deployment, how: str, body: bytes) -> dict[str, str]:
    """Headers naming school-dsl's (public) key id, signed without its private key."""
    victim = deployment.credentials("school-dsl").signing.key_id
    headers = signed(deployment, "school-dsl", "POST", "/v1/packets", body)
    if how == "another key":
        stranger = SigningKey.generate()
        headers |= httpsig.sign_request("POST", deployment.url + "/v1/packets", body, stranger)
        headers["Signature-Input"] = headers["Signature-Input"].replace(stranger.key_id, victim)
    else:  # signature bytes of the right length, made up
        headers["Signature"] = f"{httpsig.SIGNATURE_LABEL}=:{crypto.b64encode(secrets.token_bytes(64))}:"
    return headers


async def _trickle(connection: Connection, stop: asyncio.Event) -> None:
    """Send one byte of body every 50 ms until told to stop or the server hangs up."""
    while not stop.is_set():
        try:
            await connection.send(b" ")
        except ConnectionError:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["another key", "made-up signature"])
async def test_a_known_key_id_without_its_private_key_cannot_hold_in_flight_slots(tmp_path: Path, how: str) -> None:
    """Issue 8 finding (item 2): with only a member's public key id, slow uploads held every in-flight
    slot and members got 503; now each is refused (401) on its headers and a member still gets in."""
    deployment, close = await start_deployment(tmp_path, max_concurrent_requests=2)
    stop = asyncio.Event()
    body = b'{"manifest": ' + b" " * 1_000_000 + b"{}}"
    try:
        async with connect(deployment) as a, connect(deployment) as b, connect(deployment) as c:
            attackers = (a, b, c)
            trickles, answers = [], []
            for attacker in attackers:  # one after another, each still trickling when the next starts
                await attacker.send(request_head("POST", "/v1/packets", _forged(deployment, how, body)) + body[:13])
                trickles.append(asyncio.create_task(_trickle(attacker, stop)))
                answers.append(await attacker.response(within=2))
            async with deployment.client("school-dsl") as member:
                me = await member.me()  # before the fix: ApiError 503 server.busy
            assert me["id"] == deployment.credentials("school-dsl").member_id
            assert [answer.status if answer else None for answer in answers] == [401, 401, 401]
            assert all(answer is not None and answer.problem["code"] == "auth.failed" for answer in answers)
            stop.set()
            await asyncio.gather(*trickles)
    finally:
        stop.set()
        await close()


async def test_a_signed_body_that_trickles_gets_408_and_frees_its_slot(tmp_path: Path) -> None:
    """Issue 8 finding (item 2): a correctly signed body that does not arrive within
    ``body_read_timeout_seconds`` is answered 408 (connection closed) and its in-flight slot is free again."""
    deployment, close = await start_deployment(tmp_path, max_concurrent_requests=1, body_read_timeout_seconds=0.5)
    stop = asyncio.Event()
    body = b'{"manifest": ' + b" " * 100_000 + b"{}}"
    try:
        async with connect(deployment) as slow:
            started = time.monotonic()
            headers = signed(deployment, "school-dsl", "POST", "/v1/packets", body)
            await slow.send(request_head("POST", "/v1/packets", headers))
            trickle = asyncio.create_task(_trickle(slow, stop))
            answer = await slow.response(within=5)
            assert answer is not None, "the slow upload was never answered"
            assert time.monotonic() - started >= 0.5
            assert (answer.status, answer.problem["code"]) == (408, "request.timeout")
            assert answer.headers["connection"].lower() == "close"
            async with deployment.client("csc-duty") as member:  # the one slot is free, the trickler still sending
                assert (await member.me())["id"] == deployment.credentials("csc-duty").member_id
            stop.set()
            await trickle
    finally:
        stop.set()
        await close()


def _sign_without_digest(deployment: Deployment, method: str, path: str) -> dict[str, str]:
    """school-dsl's real signature, but over @method, @path and @query only (no content-digest)."""
    key = deployment.credentials("school-dsl").signing
    headers: dict[str, str] = {}
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key.key_id: key.http_signing_key()}),
    )
    message = httpsig._Message(method, deployment.url + path, headers)
    signer.sign(
        message,
        key_id=key.key_id,
        nonce=secrets.token_urlsafe(18),
        label=httpsig.SIGNATURE_LABEL,
        tag=httpsig.SIGNATURE_TAG,
        covered_component_ids=("@method", "@path", "@query"),
    )
    return headers


@pytest.mark.parametrize("how", ["not covered", "header removed"])
async def test_a_body_without_a_signed_content_digest_is_refused_before_it_is_read(
    deployment: Deployment, how: str
) -> None:
    """Issue 8 item 2: a request whose signature does not cover a Content-Digest is refused (401) while
    its body is still unsent, so an unsigned body is never read."""
    if how == "not covered":
        headers = _sign_without_digest(deployment, "POST", "/v1/packets")
    else:
        headers = signed(deployment, "school-dsl", "POST", "/v1/packets", b"{}")
        del headers["Content-Digest"]
    headers |= {"Content-Type": "application/json", "Content-Length": "100000"}
    async with connect(deployment) as connection:
        await connection.send(request_head("POST", "/v1/packets", headers) + b"{")
        answer = await connection.response(within=3)
    assert answer is not None, "the server waited for the body"
    assert (answer.status, answer.problem["code"]) == (401, "auth.failed")


async def test_a_member_over_the_rate_limit_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    """Issue 8 item 2: the rate limit is checked on the verified headers, so past it a slow upload gets
    429 at once instead of being read."""
    deployment, close = await start_deployment(tmp_path, rate_limit_per_minute=1)
    try:
        async with deployment.client("school-dsl") as member:
            await member.me()
        body = b"{}" + b" " * 100_000
        async with connect(deployment) as connection:
            headers = signed(deployment, "school-dsl", "POST", "/v1/packets", body)
            await connection.send(request_head("POST", "/v1/packets", headers))
            answer = await connection.response(within=3)
        assert answer is not None, "the server waited for the body"
        assert (answer.status, answer.problem["code"]) == (429, "request.rate_limited")
    finally:
        await close()


async def test_a_body_that_does_not_match_its_digest_is_refused_and_stores_no_nonce(deployment: Deployment) -> None:
    """A body changed in transit is a 401 and costs no nonce write: the same signature with the body it
    signed is then still accepted once (nonces are stored only for requests that passed every check)."""
    body = b'{"agency": "nowhere"}'
    headers = signed(deployment, "school-admin", "POST", "/v1/members", body)
    changed = b'{"agency": "elsewhr"}'
    refused = await exchange_raw(deployment, request_head("POST", "/v1/members", headers) + changed)
    assert (refused.status, refused.problem["code"]) == (401, "auth.failed")
    assert "Content-Digest" in refused.problem["detail"]
    first = await exchange_raw(deployment, request_head("POST", "/v1/members", headers) + body)
    assert first.status not in (401, 500)  # authenticated; judged on its content
    replay = await exchange_raw(deployment, request_head("POST", "/v1/members", headers) + body)
    assert (replay.status, "replayed" in replay.problem["detail"]) == (401, True)


async def test_a_replayed_request_is_refused_before_its_body_is_read(deployment: Deployment) -> None:
    """A captured request replayed whole is refused (401) on its headers, its body never read: the stored
    nonce is looked up (a read) before the body, so a replay cannot hold an in-flight slot."""
    body = b'{"agency": "nowhere"}' + b" " * 50_000
    headers = signed(deployment, "school-admin", "POST", "/v1/members", body)
    first = await exchange_raw(deployment, request_head("POST", "/v1/members", headers) + body)
    assert first.status not in (401, 500)
    async with connect(deployment) as connection:
        await connection.send(request_head("POST", "/v1/members", headers))
        answer = await connection.response(within=3)
    assert answer is not None, "the server waited for the replay's body"
    assert (answer.status, "replayed" in answer.problem["detail"]) == (401, True)


async def test_race_a_submission_and_its_replay_at_once_deliver_one_packet(deployment: Deployment) -> None:
    """A submission's nonce is stored in the same commit as the packet: the same signed request sent
    twice at once is delivered once, and the other copy is refused as a replay with nothing stored."""
    duty = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([duty]))
        document = {
            "manifest": sealed.manifest,
            "signature": crypto.b64encode(sealed.signature),
            "body": crypto.b64encode(sealed.body),
            "sealed_keys": {m: crypto.b64encode(k) for m, k in sealed.sealed_keys.items()},
        }
        body = json.dumps(document).encode()
        headers = signed(deployment, "school-dsl", "POST", "/v1/packets", body)
        answers = await asyncio.gather(
            *(exchange_raw(deployment, request_head("POST", "/v1/packets", headers) + body) for _ in range(4))
        )
        assert sorted(a.status for a in answers) == [201, 401, 401, 401]
        assert len(await dsl.outbox()) == 1


async def test_a_refused_change_still_stores_its_nonce(deployment: Deployment) -> None:
    """A POST whose change is refused (nothing committed with it) has its nonce stored after its handler,
    so the very same request is then refused as a replay."""
    body = json.dumps({"reason": "no_longer_necessary"}).encode()
    path = "/v1/packets/pkt_000000000000000000000000/recall"
    headers = signed(deployment, "school-dsl", "POST", path, body)
    first = await exchange_raw(deployment, request_head("POST", path, headers) + body)
    assert first.status == 404
    again = await exchange_raw(deployment, request_head("POST", path, headers) + body)
    assert (again.status, "replayed" in again.problem["detail"]) == (401, True)


# ---------------------------------------------------------------------------- no 5xx from the transport


async def test_a_false_content_encoding_gzip_is_a_400_not_a_500(deployment: Deployment) -> None:
    """Issue 8 finding (item 4): ``Content-Encoding: gzip`` on a body that is not gzip was a 500."""
    body = b'{"manifest": {}}'
    headers = signed(deployment, "school-dsl", "POST", "/v1/packets", body) | {"Content-Encoding": "gzip"}
    async with connect(deployment) as connection:
        await connection.send(request_head("POST", "/v1/packets", headers))
        await asyncio.sleep(0.05)  # the body after the headers, as a client streaming it sends it
        await connection.send(body)
        answer = await connection.response()
    assert answer is not None
    assert (answer.status, answer.problem["code"]) == (400, "request.invalid")
    assert "Content-Encoding" in answer.problem["detail"]


async def test_no_content_encoding_trick_is_a_5xx(deployment: Deployment) -> None:
    """A body that is not in the encoding it claims (sent with its headers in one write) is refused with
    a 4xx, whichever layer notices."""
    body = b'{"manifest": {}}'
    statuses = {}
    for encoding in ("gzip", "deflate", "br", "zstd", "x-unknown"):
        headers = signed(deployment, "school-dsl", "POST", "/v1/packets", body) | {"Content-Encoding": encoding}
        answer = await exchange_raw(deployment, request_head("POST", "/v1/packets", headers) + body)
        assert b"Traceback" not in answer.body
        statuses[encoding] = answer.status
    assert all(400 <= status < 500 for status in statuses.values()), statuses


def _with_signature_parameter(headers: dict[str, str], name: str, value: int) -> dict[str, str]:
    signature_input = headers["Signature-Input"]
    if f";{name}=" in signature_input:
        signature_input = re.sub(rf";{name}=-?\d+", f";{name}={value}", signature_input)
    else:
        signature_input += f";{name}={value}"
    return headers | {"Signature-Input": signature_input}


ABSURD_TIMES = (10**15 - 1, -(10**15 - 1), 253_402_300_800, -62_135_596_801, 2**53, -(2**53), 10**15)


async def test_an_absurd_signature_time_is_a_401_not_a_500(deployment: Deployment) -> None:
    """Issue 8 finding (item 4): a signature ``created`` of ±1e15 (or any time datetime cannot hold, year
    10000 or before year 1) was a 500 (OverflowError/ValueError); now 401, as is such an ``expires``."""
    answers = {}
    for parameter in ("created", "expires"):
        for value in ABSURD_TIMES:
            headers = _with_signature_parameter(signed(deployment, "school-dsl", "GET", "/v1/me"), parameter, value)
            answer = await exchange_raw(deployment, request_head("GET", "/v1/me", headers))
            answers[parameter, value] = (answer.status, answer.problem["code"])
    assert set(answers.values()) == {(401, "auth.failed")}, answers


MALFORMED_HOSTS = ("127.0.0.1:99999", "127.0.0.1:-1", "a:b", "[::1", "[1::2::3]", "a b", "", "u@h", "%zz", "h:1:2")


async def test_a_malformed_host_is_a_400_not_a_500(deployment: Deployment) -> None:
    """Issue 8 finding (item 4): a ``Host`` with port 99999 (or otherwise naming no host) was a 500 where
    the URL was built from it; now 400 on every route (RFC 9112 section 3.2)."""
    answers = {}
    for path in ("/v1/me", "/health"):
        for host in MALFORMED_HOSTS:
            head = request_head("GET", path, signed(deployment, "school-dsl", "GET", path), host=host)
            answer = await exchange_raw(deployment, head)
            answers[path, host] = (answer.status, answer.problem["code"], "Host" in answer.problem["detail"])
    assert set(answers.values()) == {(400, "request.invalid", True)}, answers


@pytest.mark.parametrize("host", [None, "two"], ids=["missing", "repeated"])
async def test_an_http11_request_without_exactly_one_host_is_a_400(deployment: Deployment, host: str | None) -> None:
    """RFC 9112 section 3.2: an HTTP/1.1 request with no Host, or two, is refused with 400 (by aiohttp's
    parser, in text/plain, before any middleware)."""
    headers = signed(deployment, "school-dsl", "GET", "/v1/me")
    if host == "two":
        headers = {"Host": "127.0.0.1"} | headers
    answer = await exchange_raw(deployment, request_head("GET", "/v1/me", headers, host=None if host is None else "h"))
    assert answer.status == 400
    assert b"Traceback" not in answer.body


async def test_a_well_formed_host_is_not_part_of_the_signature(deployment: Deployment) -> None:
    """Any well-formed Host passes (the signature covers method, path, query and digest, not the host)."""
    for host in ("[::1]:8080", "exchange.example:443", "localhost", "[v1.x]"):
        head = request_head("GET", "/v1/me", signed(deployment, "school-dsl", "GET", "/v1/me"), host=host)
        assert (await exchange_raw(deployment, head)).status == 200, host


def _oversized(deployment: Deployment, how: str) -> dict[str, str]:
    headers = signed(deployment, "school-dsl", "GET", "/v1/me")
    if how == "Signature-Input with 600 parameters":
        headers["Signature-Input"] += "".join(f';p{i}="x"' for i in range(600))
    elif how == "Signature of 4 KB":
        headers["Signature"] = f"{httpsig.SIGNATURE_LABEL}=:{crypto.b64encode(secrets.token_bytes(3000))}:"
    elif how == "Content-Digest of 4 KB":
        headers["Content-Digest"] = f"sha-256=:{crypto.b64encode(secrets.token_bytes(3000))}:"
    return headers


async def test_oversized_signature_fields_are_a_431(deployment: Deployment) -> None:
    """Issue 8 item 4 (bounded header values): a signature field far beyond any real one (long, or
    spread over many lines) is refused with 431 before it is parsed."""
    heads = {
        how: request_head("GET", "/v1/me", _oversized(deployment, how))
        for how in ("Signature-Input with 600 parameters", "Signature of 4 KB", "Content-Digest of 4 KB")
    }
    lines = request_head("GET", "/v1/me", signed(deployment, "school-dsl", "GET", "/v1/me")).removesuffix(b"\r\n")
    heads["Signature on 20 lines"] = lines + b"".join(b"Signature: x%d=:%s:\r\n" % (i, b"A" * 88) for i in range(20))
    heads["Signature on 20 lines"] += b"\r\n"
    answers = {}
    for how, head in heads.items():
        answer = await exchange_raw(deployment, head)
        answers[how] = (answer.status, answer.problem["code"])
    assert set(answers.values()) == {(431, "request.header_too_large")}, answers


async def test_headers_beyond_the_http_parsers_limits_are_a_400_that_closes_the_connection(
    deployment: Deployment,
) -> None:
    """Beyond aiohttp's own limits (8190 bytes a line, 128 fields), the parser answers 400 and hangs up:
    a 4xx, no traceback, nothing held (aiohttp answers these itself, in text/plain, before any middleware)."""
    for how in ("a 9 KB header line", "200 header fields", "a 9 KB request line"):
        headers = signed(deployment, "school-dsl", "GET", "/v1/me")
        path = "/v1/me"
        if how == "a 9 KB header line":
            headers["Signature"] += "x" * 9000
        elif how == "200 header fields":
            headers |= {f"X-Pad-{i}": "y" for i in range(200)}
        else:
            path += "?q=" + "x" * 9000
        async with connect(deployment) as connection:
            await connection.send(request_head("GET", path, headers))
            answer = await connection.response()
            assert answer is not None, how
            assert (answer.status, b"Traceback" in answer.body) == (400, False), how
            assert await connection.closed_by_server(), how
