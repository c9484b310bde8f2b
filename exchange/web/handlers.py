"""Thin handlers: the actor and body are already authenticated; parse, call one use case, render."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exchange import strictjson
from exchange.errors import InvalidRequest, StoreUnavailable
from exchange.service import directory, packets
from exchange.web.keys import BODY, CONTEXT, actor_of


def json_body(request: web.Request) -> Any:
    raw: bytes = request.get(BODY, b"")
    if not raw:
        raise InvalidRequest("This request needs a JSON body.")
    # Duplicate names, deep nesting and lone surrogates are refused (exchange.strictjson).
    return strictjson.loads(raw)


def int_query(request: web.Request, name: str, default: int, *, low: int = 0, high: int = 10**12) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"The query parameter {name!r} must be a whole number.") from None
    if not low <= value <= high:
        raise InvalidRequest(f"The query parameter {name!r} must be between {low} and {high}.")
    return value


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    try:
        await ctx.store.ping()
    except StoreUnavailable:
        return reply({"status": "unavailable", "store": "unreachable"}, status=503)
    report: dict[str, Any] = {"status": "ok", "store": "reachable", "instance": ctx.instance_id}
    # Which background work this instance leads (holds the lease for); on several instances, one each.
    report["leader"] = {
        "heads": ctx.head_signer is not None and ctx.head_signer.leader,
        "deadlines": ctx.deadlines is not None and ctx.deadlines.leader,
    }
    heads = ctx.head_signer
    if heads is not None:
        report["ledger"] = await heads.health()
        if report["ledger"].get("alarm"):
            report["status"] = "degraded"
    if ctx.deadlines is not None:
        report["deadlines"] = await ctx.deadlines.health()
        if report["deadlines"]["alarm"]:
            report["status"] = "degraded"
    # Running short of listed bank holidays is an operator's to-do, not a degraded service.
    report["working_days"] = ctx.catalogue.calendar.health(ctx.clock())
    # Reads still work while changes cannot be recorded: 200, with the reason (see service.context).
    await ctx.writes.recheck()
    read_only = ctx.writes.health()
    if read_only is not None:
        report["status"] = "read_only"
        report["read_only"] = read_only
    return reply(report)


async def me(request: web.Request) -> web.Response:
    actor = actor_of(request)
    keys = await request.app[CONTEXT].store.member_keys(actor.member_id)
    return reply(directory.describe_member(actor.member, keys) | {"agency_kind": actor.agency.kind.value})


def _repeated(request: web.Request, name: str) -> list[str]:
    """Every value of a query parameter given once or more, each possibly comma-separated."""
    return [part for value in request.query.getall(name, []) for part in value.split(",") if part]


async def get_directory(request: web.Request) -> web.Response:
    actor_of(request)
    members = _repeated(request, "member")
    return reply(
        await directory.directory(
            request.app[CONTEXT],
            agency_id=request.query.get("agency"),
            member_ids=members if "member" in request.query else None,
            roles=",".join(_repeated(request, "role")) or None,
            **paged(request),
        )
    )


async def get_agencies(request: web.Request) -> web.Response:
    actor_of(request)
    return reply(await directory.agencies(request.app[CONTEXT], **paged(request)))


async def register_member(request: web.Request) -> web.Response:
    registered = await directory.register_member(request.app[CONTEXT], actor_of(request), json_body(request))
    member = registered.member
    return reply(directory.describe_member(member, [registered.signing_key, registered.encryption_key]), status=201)


async def add_key(request: web.Request) -> web.Response:
    key = await directory.add_key(
        request.app[CONTEXT], actor_of(request), request.match_info["member_id"], json_body(request)
    )
    return reply({"key_id": key.key_id, "use": key.use.value, "not_before": key.not_before}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    key = await directory.revoke_key(request.app[CONTEXT], actor_of(request), request.match_info["key_id"])
    return reply({"key_id": key.key_id, "revoked_at": key.revoked_at})


async def submit_packet(request: web.Request) -> web.Response:
    receipt = await packets.submit(request.app[CONTEXT], actor_of(request), json_body(request))
    return reply(receipt.as_json(), status=201 if receipt.status.value == "delivered" else 202)


def paged(request: web.Request) -> dict[str, Any]:
    """The paging parameters every listing takes: ``limit`` and ``cursor``."""
    return {"limit": int_query(request, "limit", 100, low=1, high=1000), "cursor": request.query.get("cursor")}


def listing(request: web.Request) -> dict[str, Any]:
    """The paging and state filter most listings take: ``limit``, ``cursor`` and ``state``."""
    return paged(request) | {"states": request.query.get("state")}


async def inbox(request: web.Request) -> web.Response:
    return reply(await packets.inbox(request.app[CONTEXT], actor_of(request), **listing(request)))


async def outbox(request: web.Request) -> web.Response:
    return reply(await packets.outbox(request.app[CONTEXT], actor_of(request), **listing(request)))


async def fetch_packet(request: web.Request) -> web.Response:
    return reply(await packets.fetch(request.app[CONTEXT], actor_of(request), request.match_info["packet_id"]))


async def acknowledge(request: web.Request) -> web.Response:
    result = await packets.acknowledge(
        request.app[CONTEXT], actor_of(request), request.match_info["packet_id"], json_body(request)
    )
    return reply(result, status=201)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/health", health),
        web.get("/v1/me", me),
        web.get("/v1/directory", get_directory),
        web.get("/v1/agencies", get_agencies),
        web.post("/v1/members", register_member),
        web.post("/v1/members/{member_id}/keys", add_key),
        web.post("/v1/keys/{key_id}/revoke", revoke_key),
        web.post("/v1/packets", submit_packet),
        web.get("/v1/inbox", inbox),
        web.get("/v1/outbox", outbox),
        # No HEAD: the first fetch opens the copy, and a HEAD must neither open it nor be recorded as opening it.
        web.get("/v1/packets/{packet_id}", fetch_packet, allow_head=False),
        web.post("/v1/packets/{packet_id}/acknowledgement", acknowledge),
    ]
