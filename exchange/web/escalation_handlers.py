"""Handlers for escalations: what has fallen overdue, for those who should know, and acknowledging it."""

from __future__ import annotations

from aiohttp import web

from exchange.service import escalations
from exchange.web.handlers import listing, reply
from exchange.web.keys import CONTEXT, actor_of


async def escalation_list(request: web.Request) -> web.Response:
    return reply(await escalations.listing(request.app[CONTEXT], actor_of(request), **listing(request)))


async def escalation_acknowledgement(request: web.Request) -> web.Response:
    result = await escalations.acknowledge(
        request.app[CONTEXT], actor_of(request), request.match_info["escalation_id"]
    )
    return reply(result, status=201)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/escalations", escalation_list),
        web.post("/v1/escalations/{escalation_id}/acknowledgement", escalation_acknowledgement),
    ]
