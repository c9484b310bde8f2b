"""Handlers for the feedback loop: action reports, the sender's review, and reading the loop."""

from __future__ import annotations

from aiohttp import web

from exchange.service import loop
from exchange.web.handlers import json_body, reply
from exchange.web.keys import CONTEXT, actor_of


async def report(request: web.Request) -> web.Response:
    result = await loop.report(
        request.app[CONTEXT], actor_of(request), request.match_info["packet_id"], json_body(request)
    )
    return reply(result, status=201)


async def review(request: web.Request) -> web.Response:
    result = await loop.review(
        request.app[CONTEXT],
        actor_of(request),
        request.match_info["packet_id"],
        request.match_info["member_id"],
        json_body(request),
    )
    return reply(result, status=201)


async def read_loop(request: web.Request) -> web.Response:
    return reply(await loop.loop(request.app[CONTEXT], actor_of(request), request.match_info["packet_id"]))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/packets/{packet_id}/reports", report),
        web.post("/v1/packets/{packet_id}/recipients/{member_id}/review", review),
        web.get("/v1/packets/{packet_id}/loop", read_loop),
    ]
