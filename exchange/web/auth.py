"""Authentication middleware: every ``/v1/`` request is signed (RFC 9421) by a current member key.

Order of checks: signature parameters present → key known, current and its member active → (only
now is the body read) → ``created`` inside the window → signature and Content-Digest verify over
method, path, query and body → per-member rate limit (429) → only now a durable write: the
``(keyid, nonce)`` pair is new (else it is a replay).
Every authentication failure is a 401 (403 belongs to authorisation, decided later by the service).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import defaultdict, deque
from datetime import timedelta

from aiohttp import web
from aiohttp.typedefs import Handler

from exchange import httpsig
from exchange.domain import iso, utc_now
from exchange.errors import AuthenticationFailed, RateLimited
from exchange.service.directory import actor_for_key
from exchange.web.keys import ACTOR, BODY, CONFIG, CONTEXT, RECORD, REQUEST_ID

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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or not request.path.startswith("/v1/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    config = request.app[CONFIG]
    # Who signed is settled before the body is read: an unsigned or unknown sender's upload is
    # refused without reading it.
    params = httpsig.signature_parameters(request.headers)
    # Whether a key is valid is a question of the exchange's time (the clock deadlines use); whether
    # a signature is fresh is a question of transport, judged by the wall clock both ends share. A
    # demonstration or test that moves the exchange's clock therefore needs no moved clients.
    actor, key = await actor_for_key(ctx, params.key_id, ctx.clock())
    now = utc_now()
    body = await request.read()  # bounded by client_max_size: a larger body is a 413 already
    request[BODY] = body
    max_age = timedelta(seconds=config.signature_max_age_seconds)
    httpsig.verify_request(
        request.method,
        str(request.url),
        request.headers,
        body,
        key.public_bytes,
        now=now,
        max_age=max_age,
        clock_skew=timedelta(seconds=config.signature_clock_skew_seconds),
    )
    # The rate limit comes before the nonce's durable write: a flood of refused requests costs no fsync
    # and so cannot slow every other member's requests.
    request.app[RATE_LIMITER].check(actor.member_id)
    async with ctx.store.write() as tx:
        # A nonce only needs remembering while its signature could still be accepted.
        fresh = await tx.remember_nonce(params.key_id, params.nonce, iso(now + max_age + max_age))
        if secrets.randbelow(64) == 0:
            await tx.purge_nonces(iso(now))
    if not fresh:
        raise AuthenticationFailed("This request was already received once (replayed nonce); sign it afresh.")
    request[ACTOR] = actor
    return await handler(request)
