"""Handlers for the ledger: auditors' reads and proofs, the export, and members' receipts."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aiohttp import web

from exchange.errors import InvalidRequest
from exchange.service import ledger
from exchange.web.handlers import int_query, reply
from exchange.web.keys import CONTEXT, actor_of

_MAX = 2**53


async def head(request: web.Request) -> web.Response:
    return reply(await ledger.latest_head(request.app[CONTEXT], actor_of(request)))


async def entries(request: web.Request) -> web.Response:
    filters = {k: request.query.get(k) for k in ("type", "agency", "member", "packet", "since", "until")}
    start = int_query(request, "start", 0, high=_MAX)
    limit = int_query(request, "limit", 100, low=1, high=1000)
    return reply(await ledger.entries(request.app[CONTEXT], actor_of(request), filters, start, limit))


async def inclusion(request: web.Request) -> web.Response:
    if "seq" not in request.query:
        raise InvalidRequest("Say which entry to prove: ?seq=N.")
    seq = int_query(request, "seq", 0, high=_MAX)
    size = int_query(request, "size", -1, high=_MAX)
    return reply(await ledger.audit_inclusion(request.app[CONTEXT], actor_of(request), seq, None if size < 0 else size))


async def consistency(request: web.Request) -> web.Response:
    old = int_query(request, "from", 0, high=_MAX)
    new = int_query(request, "to", -1, high=_MAX)
    return reply(await ledger.consistency(request.app[CONTEXT], actor_of(request), old, None if new < 0 else new))


async def receipt(request: web.Request) -> web.Response:
    seq = int(request.match_info["seq"])
    since = int_query(request, "since", -1, high=_MAX)
    return reply(await ledger.receipt(request.app[CONTEXT], actor_of(request), seq, None if since < 0 else since))


async def export(request: web.Request) -> web.StreamResponse:
    return await stream_lines(request, ledger.export_stream(request.app[CONTEXT], actor_of(request)))


async def stream_lines(request: web.Request, stream: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """Send a service's JSON-lines stream; its first line is awaited before the response starts."""
    first = await anext(stream)  # authorisation and the read's record happen before any byte is sent
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    if request.method == "HEAD":
        # The headers only (RFC 9110 section 9.3.2): a body written here would be read as the next response.
        await stream.aclose()
        await response.write_eof()
        return response
    await response.write(first)
    async for line in stream:
        await response.write(line)
    await response.write_eof()
    return response


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/ledger/head", head),
        web.get("/v1/ledger/entries", entries),
        web.get("/v1/ledger/proof/inclusion", inclusion),
        web.get("/v1/ledger/proof/consistency", consistency),
        web.get("/v1/ledger/export", export),
        web.get(r"/v1/ledger/receipts/{seq:[0-9]{1,15}}", receipt),  # ASCII digits: \d also matches ٣
    ]
