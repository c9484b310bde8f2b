"""Handlers for key transparency: a member's key history with its proofs (any member may ask)."""

from __future__ import annotations

from aiohttp import web

from exchange.service import key_transparency
from exchange.web.handlers import int_query, reply
from exchange.web.keys import CONTEXT, actor_of


async def key_history(request: web.Request) -> web.Response:
    since = int_query(request, "since", -1, high=2**53)
    return reply(
        await key_transparency.key_history(
            request.app[CONTEXT], actor_of(request), request.match_info["member_id"], None if since < 0 else since
        )
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/members/{member_id}/key-history", key_history)]
