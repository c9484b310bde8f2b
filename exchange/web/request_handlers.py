"""Handlers for information requests, declines and decisions not to share."""

from __future__ import annotations

from aiohttp import web

from exchange.service import requests, share_decisions
from exchange.web.handlers import int_query, json_body, listing, reply
from exchange.web.keys import CONTEXT, actor_of


async def submit_request(request: web.Request) -> web.Response:
    result = await requests.submit(request.app[CONTEXT], actor_of(request), json_body(request))
    return reply(result, status=201)


async def list_requests(request: web.Request) -> web.Response:
    result = await requests.listing(
        request.app[CONTEXT], actor_of(request), request.query.get("role"), **listing(request)
    )
    return reply(result)


async def show_request(request: web.Request) -> web.Response:
    return reply(await requests.show(request.app[CONTEXT], actor_of(request), request.match_info["request_id"]))


async def decline_request(request: web.Request) -> web.Response:
    result = await requests.decline(
        request.app[CONTEXT], actor_of(request), request.match_info["request_id"], json_body(request)
    )
    return reply(result, status=201)


async def record_decision(request: web.Request) -> web.Response:
    result = await share_decisions.record(request.app[CONTEXT], actor_of(request), json_body(request))
    return reply(result, status=201)


async def list_decisions(request: web.Request) -> web.Response:
    result = await share_decisions.listing(
        request.app[CONTEXT],
        actor_of(request),
        request.query.get("scope"),
        int_query(request, "limit", 100, low=1, high=1000),
        request.query.get("cursor"),
    )
    return reply(result)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/requests", submit_request),
        web.get("/v1/requests", list_requests),
        web.get("/v1/requests/{request_id}", show_request),
        web.post("/v1/requests/{request_id}/decline", decline_request),
        web.post("/v1/decisions", record_decision),
        web.get("/v1/decisions", list_decisions),
    ]
