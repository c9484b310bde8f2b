"""Authentication middleware: every ``/v1/`` request is signed (RFC 9421) by a current member key.

Order of checks, so that nobody without a member's private key gets the server to read (and hold)
a body: signature parameters present and of bounded size → key known, current and its member
active → ``created`` inside the window → the signature verifies over the headers alone (method,
path, query and the ``Content-Digest`` header: a request with a body but no signed digest is
refused here) → per-member rate limit (429) → the nonce is not one already stored (a read: a
captured request replayed whole is refused unread) → only now is the body read, within
``body_read_timeout_seconds`` (else 408, and the in-flight slot is freed) → the body matches the
signed Content-Digest → only now a durable write: the ``(keyid, nonce)`` pair is new (else it is a
replay), so a refused request never costs a write. A GET stores it before its handler runs; a
request that may change something stores it in the commit of its first change (one fsync, not
two; ``exchange.service.nonces``), or after its handler if it changed nothing.
Every authentication failure is a 401 (403 belongs to authorisation, decided later by the service).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import defaultdict, deque
from datetime import timedelta

from aiohttp import web
from aiohttp.typedefs import Handler

from exchange import httpsig
from exchange.domain import iso, utc_now
from exchange.errors import AuthenticationFailed, InvalidRequest, RateLimited, ReadOnly, RequestTimeout
from exchange.service import nonces
from exchange.service.context import ServiceContext
from exchange.service.directory import actor_for_key
from exchange.web.keys import ACTOR, BODY, CONFIG, CONTEXT, RECORD, REQUEST_ID

_REPLAYED = nonces.REPLAYED

#: Paths anyone may call without signing: liveness only, and it reveals nothing.
PUBLIC_PATHS = frozenset({"/health"})


class _RateLimiter:
    """A sliding one-minute window per member, per server instance."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: defaultdict[str, deque[float]] = defaultdict(deque)

    def check(self, member_id: str) -> None:
        now = time.monotonic()
        hits = self._hits[member_id]
        while hits and hits[0] < now - 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            raise RateLimited(
                "Too many requests from your account in the last minute; wait and try again.",
                retry_after=max(1, math.ceil(hits[0] + 60 - now)),
            )
        hits.append(now)


RATE_LIMITER = web.AppKey("rate_limiter", _RateLimiter)


class HeldNonces:
    """Nonces remembered in memory while the store cannot be written (a full disk): reads go on.

    A read-only exchange still answers reads, and a signed read still needs its nonce remembered so
    it cannot be replayed; when the store refuses the nonce's write, this instance holds it until its
    signature could no longer be accepted anyway. (A restart in that window forgets them: a replay
    then gets one more read answered, never a change, since every change needs the store.)
    """

    def __init__(self) -> None:
        self._expires: dict[tuple[str, str], float] = {}

    def seen(self, key_id: str, nonce: str) -> bool:
        return self._expires.get((key_id, nonce), 0.0) > time.monotonic()

    def remember(self, key_id: str, nonce: str, for_seconds: float) -> bool:
        now = time.monotonic()
        if len(self._expires) > 10_000:
            self._expires = {k: v for k, v in self._expires.items() if v > now}
        if self.seen(key_id, nonce):
            return False
        self._expires[(key_id, nonce)] = now + for_seconds
        return True


HELD_NONCES = web.AppKey("held_nonces", HeldNonces)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id, and put one line per request in the record (no query, no body)."""
    request[REQUEST_ID] = secrets.token_hex(8)
    started = time.monotonic()
    response = await handler(request)
    response.headers["X-Request-Id"] = request[REQUEST_ID]
    actor = request.get(ACTOR)
    route = request.match_info.route.resource
    request.app[RECORD].log.info(
        "http.request",
        request_id=request[REQUEST_ID],
        method=request.method,
        # The route's pattern, not the concrete path: ids in paths are kept out of operational lines.
        route=route.canonical if route is not None else "unmatched",
        status=response.status,
        member=actor.member_id if actor else None,
        agency=actor.agency_id if actor else None,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return response


#: Only ``@path`` and ``@query`` of the URL are signed, so the URL handed to the verifier has a fixed
#: origin: the Host header (which may be anything a client likes) is never parsed here.
_SIGNED_ORIGIN = "http://exchange.invalid"


def signed_url(request: web.Request) -> str:
    """The URL whose path and query the signature covers, as the client sent them."""
    return _SIGNED_ORIGIN + request.rel_url.raw_path_qs


async def _read_body(request: web.Request, timeout_seconds: float) -> bytes:
    """Read the whole body within ``timeout_seconds`` (a total, so a trickle cannot reset it)."""
    try:
        async with asyncio.timeout(timeout_seconds):
            return await request.read()  # bounded by client_max_size: a larger body is a 413 already
    except TimeoutError:
        raise RequestTimeout(
            f"The request's body did not arrive within {timeout_seconds:g} seconds. Nothing was done; send it again."
        ) from None
    except web.RequestPayloadError:
        # e.g. ``Content-Encoding: gzip`` on a body that is not gzip, or broken chunked framing.
        raise InvalidRequest(
            "The request's body could not be read: it is not encoded as its Content-Encoding says."
        ) from None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or not request.path.startswith("/v1/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    config = request.app[CONFIG]
    # Who signed, and that the signature verifies, is settled before the body is read: an unsigned,
    # unknown or forged sender's upload is refused without reading it.
    params = httpsig.signature_parameters(request.headers)
    # Whether a key is valid is a question of the exchange's time (the clock deadlines use); whether
    # a signature is fresh is a question of transport, judged by the wall clock both ends share. A
    # demonstration or test that moves the exchange's clock therefore needs no moved clients.
    actor, key = await actor_for_key(ctx, params.key_id, ctx.clock())
    now = utc_now()
    max_age = timedelta(seconds=config.signature_max_age_seconds)
    verified = httpsig.verify_signature(
        request.method,
        signed_url(request),
        request.headers,
        key.public_bytes,
        now=now,
        max_age=max_age,
        clock_skew=timedelta(seconds=config.signature_clock_skew_seconds),
    )
    # The rate limit comes before the body is read (a member over their allowance gets no upload
    # read) and before the nonce's durable write: a flood of refused requests costs no fsync
    # and so cannot slow every other member's requests.
    request.app[RATE_LIMITER].check(actor.member_id)
    # A captured request replayed whole is refused here, before its body is read: a read, no write.
    held = request.app[HELD_NONCES]
    if held.seen(params.key_id, params.nonce) or await ctx.store.nonce_seen(params.key_id, params.nonce):
        raise AuthenticationFailed(_REPLAYED)
    body = await _read_body(request, config.body_read_timeout_seconds)
    httpsig.verify_content_digest(verified, body)
    request[BODY] = body
    expires = iso(now + max_age + max_age)  # a nonce only needs remembering while its signature could be accepted
    request[ACTOR] = actor
    if request.method in _SAFE_METHODS:
        await _remember(ctx, held, params.key_id, params.nonce, expires, max_age)
        return await handler(request)
    # A request that may change something stores its nonce in the commit of its first change
    # (exchange.service.nonces): one fsync, not two. If it changes nothing, the nonce is stored after.
    pending = nonces.PendingNonce(params.key_id, params.nonce, expires)
    token = nonces.PENDING.set(pending)
    try:
        return await handler(request)
    finally:
        nonces.PENDING.reset(token)
        if not pending.stored:
            await _remember(ctx, held, params.key_id, params.nonce, expires, max_age, after=True)


#: Methods that never change anything: their nonce is stored before the handler runs.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _remember(
    ctx: ServiceContext,
    held: HeldNonces,
    key_id: str,
    nonce: str,
    expires: str,
    max_age: timedelta,
    *,
    after: bool = False,
) -> None:
    """Store a request's nonce on its own; :class:`AuthenticationFailed` if it was used already, unless
    ``after`` its handler ran (a request that changed nothing is then answered as it was)."""
    try:
        async with ctx.store.write() as tx:
            fresh = await tx.remember_nonce(key_id, nonce, expires)
            if secrets.randbelow(64) == 0:
                await tx.purge_nonces(iso(utc_now()))
    except ReadOnly as error:
        # The store cannot be written: the exchange is read-only (``/health`` says why), but reads go on.
        ctx.writes.failed(error)
        fresh = held.remember(key_id, nonce, 2 * max_age.total_seconds())
    if not fresh and not after:
        raise AuthenticationFailed(_REPLAYED)
