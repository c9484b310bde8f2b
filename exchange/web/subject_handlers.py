"""Handlers for the auditor's subject view: every ledger event about one pseudonym, and its export."""

from __future__ import annotations

from aiohttp import web

from exchange.service import subjects
from exchange.web.handlers import int_query, reply
from exchange.web.keys import CONTEXT, actor_of
from exchange.web.ledger_handlers import stream_lines

_MAX = 2**53


async def subject_view(request: web.Request) -> web.Response:
    start = int_query(request, "start", 0, high=_MAX)
    limit = int_query(request, "limit", 100, low=1, high=1000)
    return reply(
        await subjects.subject_view(
            request.app[CONTEXT], actor_of(request), request.match_info["pseudonym"], start, limit
        )
    )


async def subject_export(request: web.Request) -> web.StreamResponse:
    lines = subjects.subject_export_stream(request.app[CONTEXT], actor_of(request), request.match_info["pseudonym"])
    return await stream_lines(request, lines)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/ledger/subjects/{pseudonym}", subject_view),
        web.get("/v1/ledger/subjects/{pseudonym}/export", subject_export),
    ]
