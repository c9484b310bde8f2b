"""The cap on requests in flight: beyond it, 503 with Retry-After, before any body is read."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from exchange.errors import ServerBusy
from exchange.web.auth import PUBLIC_PATHS


class InFlight:
    """How many requests this server instance is handling now, against its cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0


IN_FLIGHT = web.AppKey("in_flight", InFlight)


@web.middleware
async def capacity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse with 503 (and Retry-After) beyond the configured number of requests in flight.

    Runs before authentication, so a flood of slow uploads is refused before any of it is read.
    ``/health`` is always answered: monitoring must still see a busy server.
    """
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    in_flight = request.app[IN_FLIGHT]
    if in_flight.count >= in_flight.limit:
        raise ServerBusy(
            "The exchange is handling as many requests as it can just now. Nothing was done; try again shortly.",
            retry_after=1,
        )
    in_flight.count += 1
    try:
        return await handler(request)
    finally:
        in_flight.count -= 1
