"""Typed keys for application and request state (no module-level singletons)."""

from __future__ import annotations

from aiohttp import web

from exchange.config import Config
from exchange.domain import Actor
from exchange.record import Record
from exchange.service.context import ServiceContext

CONFIG = web.AppKey("config", Config)
RECORD = web.AppKey("record", Record)
CONTEXT = web.AppKey("context", ServiceContext)

ACTOR = web.RequestKey("actor", Actor)
REQUEST_ID = web.RequestKey("request_id", str)
BODY = web.RequestKey("body", bytes)


def actor_of(request: web.Request) -> Actor:
    return request[ACTOR]
