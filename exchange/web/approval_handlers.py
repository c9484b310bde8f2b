"""Handlers for the approval queue (managers and safeguarding leads of the sender's agency)."""

from __future__ import annotations

from aiohttp import web

from exchange.service import approvals
from exchange.web.handlers import int_query, json_body, reply
from exchange.web.keys import CONTEXT, actor_of


async def approval_queue(request: web.Request) -> web.Response:
    limit = int_query(request, "limit", 100, low=1, high=1000)
    cursor = request.query.get("cursor")
    return reply(await approvals.queue(request.app[CONTEXT], actor_of(request), limit, cursor))


async def approval_item(request: web.Request) -> web.Response:
    return reply(await approvals.show(request.app[CONTEXT], actor_of(request), request.match_info["packet_id"]))


async def approval_decision(request: web.Request) -> web.Response:
    result = await approvals.decide(
        request.app[CONTEXT], actor_of(request), request.match_info["packet_id"], json_body(request)
    )
    return reply(result, status=201)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/approvals", approval_queue),
        web.get("/v1/approvals/{packet_id}", approval_item),
        web.post("/v1/approvals/{packet_id}", approval_decision),
    ]
