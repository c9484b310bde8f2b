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

# Request-scoped values; aiohttp's RequestKey arrived in 3.12, plain strings keep older versions working.
ACTOR = "exchange.actor"
REQUEST_ID = "exchange.request_id"
BODY = "exchange.body"


def actor_of(request: web.Request) -> Actor:
    actor = request.get(ACTOR)
    assert isinstance(actor, Actor), "authenticated routes always have an actor"
    return actor
