"""The aiohttp application: middlewares, routes, and resources opened in ``cleanup_ctx``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from aiohttp import web

from exchange import bootstrap, schemas
from exchange.config import Config
from exchange.domain import utc_now
from exchange.policy import load_catalogue
from exchange.record import Record
from exchange.service.context import ServiceContext
from exchange.service.deadlines import DeadlineWorker
from exchange.service.ledger import HeadSigner
from exchange.store import open_store
from exchange.web import (
    approval_handlers,
    escalation_handlers,
    handlers,
    key_handlers,
    ledger_handlers,
    loop_handlers,
    query,
    recall_handlers,
    request_handlers,
    subject_handlers,
)
from exchange.web.auth import (
    HELD_NONCES,
    RATE_LIMITER,
    HeldNonces,
    _RateLimiter,
    auth_middleware,
    request_id_middleware,
)
from exchange.web.keys import CONFIG, CONTEXT, RECORD
from exchange.web.limits import IN_FLIGHT, InFlight, capacity_middleware
from exchange.web.problems import problem_middleware
from exchange.web.query import query_middleware
from exchange.web.transport import host_middleware


def build_app(
    config: Config, *, clock: Callable[[], datetime] = utc_now, console: bool | None = None
) -> web.Application:
    """Build the application; the store, record and keys open when it starts and close when it stops."""
    # A schema that cannot be enforced as written (a format no installed package checks) stops the start.
    schemas.preload()
    query.documented()
    app = web.Application(
        middlewares=[
            request_id_middleware,
            problem_middleware,
            host_middleware,
            capacity_middleware,
            auth_middleware,
            query_middleware,
        ],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[RATE_LIMITER] = _RateLimiter(config.rate_limit_per_minute)
    app[HELD_NONCES] = HeldNonces()
    app[IN_FLIGHT] = InFlight(config.max_concurrent_requests)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        record = Record(config.record_log_path, console=console)
        app[RECORD] = record
        server_key = bootstrap.ensure_server_key(config)
        store = await open_store(config.database_target)
        ctx = ServiceContext(
            store=store, config=config, record=record, server_key=server_key, catalogue=load_catalogue(), clock=clock
        )
        app[CONTEXT] = ctx
        signer = HeadSigner(ctx)
        ctx.head_signer = signer
        await signer.start()
        deadlines = DeadlineWorker(ctx)
        ctx.deadlines = deadlines
        await deadlines.start()
        record.log.info("server.started", host=config.host, port=config.port, tls=config.uses_tls)
        try:
            yield
        finally:
            await deadlines.stop()
            await signer.stop()
            record.log.info("server.stopped")
            await store.close()
            record.close()

    app.cleanup_ctx.append(resources)
    app.add_routes(handlers.routes())
    app.add_routes(approval_handlers.routes())
    app.add_routes(ledger_handlers.routes())
    app.add_routes(escalation_handlers.routes())
    app.add_routes(loop_handlers.routes())
    app.add_routes(recall_handlers.routes())
    app.add_routes(subject_handlers.routes())
    app.add_routes(request_handlers.routes())
    app.add_routes(key_handlers.routes())
    return app
