"""Handlers for putting a mistake right: the sender's recall of a packet nobody has opened yet.

A correction has no route of its own: it is a packet submitted to ``POST /v1/packets`` whose
manifest names the packet it corrects (``corrects``).
"""

from __future__ import annotations

from aiohttp import web

from exchange.service import recall
from exchange.web.handlers import json_body, reply
from exchange.web.keys import CONTEXT, actor_of


async def recall_packet(request: web.Request) -> web.Response:
    result = await recall.recall(
        request.app[CONTEXT], actor_of(request), request.match_info["packet_id"], json_body(request)
    )
    return reply(result)


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/packets/{packet_id}/recall", recall_packet)]
