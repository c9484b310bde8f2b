"""Ledger use cases: signing tree heads off the request path, auditors' reads, senders' receipts.

Appending happens in every state change's own transaction (see :class:`ServiceContext.change`).
Signing tree heads is batched by :class:`HeadSigner`, a background task woken when the ledger
grows: it signs when N entries are waiting or T milliseconds have passed, and raises an alarm
(logged, and shown by ``/health``) when the unsigned tail grows past a threshold — a logging
subsystem must never stall the exchange, and must never fall behind silently either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from exchange import crypto, schemas
from exchange.domain import Actor, Event, Role, iso, parse_iso
from exchange.errors import Forbidden, InvalidQuery, InvalidRequest, NotFound
from exchange.ledger import export, tree
from exchange.ledger.heads import TreeHead, sign_tree_head
from exchange.service.background import stop_task
from exchange.service.context import ServiceContext

#: The lease under which one instance at a time signs heads in the background.
HEADS_LEASE = "heads"


async def root_at(ctx: ServiceContext, size: int) -> bytes:
    """The RFC 9162 root of the first ``size`` entries, from O(log n) stored subtree hashes."""
    nodes = await ctx.store.ledger_nodes(tree.needed_nodes_for_root(size))
    return tree.compute_root(size, nodes)


class HeadSigner:
    """Signs tree heads in batches in the background and reports whether it keeps up.

    Several instances may share one store: only the one holding the ``heads`` lease signs in the
    background (the others keep watching, and take over once the lease lapses). A head any instance
    signs is still correct, since it is a signature over the one ledger (:meth:`sign_now`).
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self._alarm = False
        self.last_signed_at: float | None = None
        #: When (by the context's clock) the lease this instance holds runs out; None while it holds none.
        self._lease_until: datetime | None = None
        #: While another instance signs, when (monotonic) to ask for the lease again.
        self._next_try = 0.0

    @property
    def leader(self) -> bool:
        """Whether this instance holds the ``heads`` lease (it is the one signing in the background)."""
        return self._lease_until is not None and self._lease_until > self.ctx.clock()

    async def start(self) -> None:
        if await self._hold_lease():
            await self.sign_now()
        self._task = asyncio.create_task(self._run(), name="tree-head-signer")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self.leader:
            # Sign what is left so a clean shutdown leaves no unsigned tail, then hand over at once.
            await self.sign_now()
            with contextlib.suppress(Exception):
                async with self.ctx.store.write() as tx:
                    await tx.release_lease(HEADS_LEASE, self.ctx.instance_id)
            self._lease_until = None

    async def _hold_lease(self) -> bool:
        """Take or renew the ``heads`` lease when less than half of it is left; whether this instance holds it."""
        now = self.ctx.clock()
        span = timedelta(seconds=self.ctx.config.head_lease_seconds)
        if self._lease_until is not None and self._lease_until - now > span / 2:
            return True
        if self._lease_until is None and time.monotonic() < self._next_try:
            return False  # another instance signs; the ledger growing is no reason to ask again at once
        async with self.ctx.store.write() as tx:
            taken = await tx.take_lease(HEADS_LEASE, self.ctx.instance_id, iso(now), iso(now + span))
        self._lease_until = now + span if taken else None
        self._next_try = time.monotonic() + self.ctx.config.head_lease_seconds / 4
        return taken

    async def sign_now(self) -> TreeHead | None:
        """Sign a head over the ledger as it is now, if it grew since the last head."""
        size = await self.ctx.store.ledger_size()
        latest = await self.ctx.store.latest_tree_head()
        if latest is not None and latest.size >= size:
            return latest
        head = sign_tree_head(size, await root_at(self.ctx, size), iso(self.ctx.clock()), self.ctx.server_key)
        async with self.ctx.store.write() as tx:
            await tx.insert_tree_head(head)
        self.last_signed_at = time.monotonic()
        self.ctx.record.log.info("ledger.head_signed", size=head.size, root_hash=head.root_hash.hex())
        return head

    async def _run(self) -> None:
        config = self.ctx.config
        interval = config.head_interval_ms / 1000
        waiting_since: float | None = None
        while True:
            # Not ``asyncio.wait_for``: on 3.11 it swallows a cancellation that comes in the same turn of
            # the loop as the ledger grows, and then the signer would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.ctx.ledger_grew.wait()
            self.ctx.ledger_grew.clear()
            try:
                if not await self._hold_lease():
                    waiting_since = None
                    continue
                size = await self.ctx.store.ledger_size()
                latest = await self.ctx.store.latest_tree_head()
                signed = latest.size if latest else 0
                lag = size - signed
                if lag <= 0:
                    waiting_since = None
                    continue
                now = time.monotonic()
                waiting_since = waiting_since or now
                if lag >= config.head_batch_entries or now - waiting_since >= interval:
                    await self.sign_now()
                    waiting_since = None
                    lag = 0
                self._check_alarm(lag)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the signer must survive and raise the alarm
                self._alarm = True
                self.ctx.record.log.error("ledger.head_signing_failed", error_type=type(error).__name__)
                await asyncio.sleep(interval)

    def _check_alarm(self, lag: int) -> None:
        alarm = lag >= self.ctx.config.head_lag_alarm_entries
        if alarm and not self._alarm:
            self.ctx.record.log.error("ledger.head_signing_lagging", unsigned_entries=lag)
        self._alarm = alarm

    async def health(self) -> dict[str, Any]:
        size = await self.ctx.store.ledger_size()
        latest = await self.ctx.store.latest_tree_head()
        signed = latest.size if latest else 0
        lag = size - signed
        alarm = self._alarm or lag >= self.ctx.config.head_lag_alarm_entries
        return {"size": size, "signed_size": signed, "unsigned": lag, "alarm": alarm, "signer": self.leader}


# ------------------------------------------------------------------------------ auditor reads


def _require_auditor(actor: Actor) -> None:
    if Role.AUDITOR not in actor.member.roles:
        raise Forbidden("Only an auditor can read the ledger.")


async def _record_read(ctx: ServiceContext, actor: Actor, what: str, params: Mapping[str, Any]) -> None:
    """Every auditor's read of the ledger is itself an entry in the ledger (DESIGN.md section 6)."""
    async with ctx.change() as change:
        await change.record(
            Event(
                "ledger.read",
                actor.member_id,
                actor.agency_id,
                details={"what": what, "params": {k: v for k, v in params.items() if v is not None}},
            )
        )


def checked_filters(filters: Mapping[str, Any]) -> dict[str, str]:
    """The filters given (``None`` and empty ones dropped), each checked for its shape; times normalised to UTC.

    Raises :class:`InvalidQuery` naming the filter, never repeating its value.
    """
    given = {name: value for name, value in filters.items() if value is not None and value != ""}
    unknown = sorted(set(given) - set(_FILTER_FORMS))
    if unknown:
        raise InvalidQuery("The ledger can be filtered by " + ", ".join(_FILTER_FORMS) + " only.")
    for name, value in given.items():
        # A pattern's "$" also matches before a final newline (Python's re), so control characters are refused here.
        if not isinstance(value, str) or not value.isprintable():
            raise _bad_filter(name)
    for error in schemas.schema_errors(given, schemas.validator("ledger-filters.v1")):
        raise _bad_filter(error["path"].split("/")[1])
    checked = dict(given)
    for bound, beyond in (("since", datetime.min), ("until", datetime.max)):
        if bound in checked:
            checked[bound] = iso(_instant(bound, checked[bound], beyond.replace(tzinfo=UTC)))
    return checked


#: What each ledger filter must be, in words (the shapes are in schemas/ledger-filters.v1.json).
_FILTER_FORMS = {
    "type": "an event type, such as packet.delivered",
    "agency": "an agency id (agy_...)",
    "member": "a member id (mem_...)",
    "packet": "a packet id (pkt_...)",
    "since": "an RFC 3339 time (2025-03-01T09:00:00Z) or a date (2025-03-01)",
    "until": "an RFC 3339 time (2025-03-01T09:00:00Z) or a date (2025-03-01)",
}


def _bad_filter(name: str) -> InvalidQuery:
    return InvalidQuery(f"The ledger filter {name!r} must be {_FILTER_FORMS[name]}.", extras={"parameter": name})


def _instant(name: str, text: str, beyond: datetime) -> datetime:
    """The UTC instant of an RFC 3339 time or a date (its midnight UTC) whose form is already checked.

    A time whose offset takes it outside years 1 to 9999 in UTC (``0001-01-01T00:00:00+01:00``) bounds
    nothing: it is before (or after) every entry, so it stands for the earliest (or latest) instant.
    """
    try:
        moment = parse_iso(text if len(text) > 10 else text + "T00:00:00Z")
    except ValueError:
        raise _bad_filter(name) from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return beyond


async def head_or_404(ctx: ServiceContext, size: int | None) -> TreeHead:
    head = await (ctx.store.latest_tree_head() if size is None else ctx.store.tree_head(size))
    if head is None:
        raise NotFound("There is no signed tree head of that size (heads are signed in batches; retry shortly).")
    return head


async def latest_head(ctx: ServiceContext, actor: Actor) -> dict[str, Any]:
    _require_auditor(actor)
    await _record_read(ctx, actor, "head", {})
    head = await head_or_404(ctx, None)
    return {"head": head.to_json(), "ledger_size": await ctx.store.ledger_size()}


async def entries(
    ctx: ServiceContext, actor: Actor, filters: Mapping[str, Any], start: int, limit: int
) -> dict[str, Any]:
    """Entries from ``start`` matching the filters (time, type, agency, member, packet), paged.

    The filters are checked against ``schemas/ledger-filters.v1.json`` before anything else: the read is
    recorded in the ledger with them, and the permanent ledger must never hold free text a caller typed.
    Raises :class:`InvalidQuery` (400) for an unknown filter or a value not of its shape.
    """
    _require_auditor(actor)
    wanted = checked_filters(filters)
    await _record_read(ctx, actor, "entries", wanted | {"start": start, "limit": limit})
    rows = await ctx.store.search_ledger(wanted, start, limit + 1)
    found = [{"seq": seq, "leaf_hash": leaf.hex(), "entry": json.loads(entry)} for seq, entry, leaf in rows[:limit]]
    next_start = rows[limit][0] if len(rows) > limit else None
    return {"entries": found, "next_start": next_start}


async def inclusion(ctx: ServiceContext, seq: int, size: int | None) -> dict[str, Any]:
    """An RFC 9162 inclusion proof of entry ``seq`` in the signed head of ``size`` (default: latest)."""
    return await inclusion_in(ctx, seq, await head_or_404(ctx, size))


async def inclusion_in(ctx: ServiceContext, seq: int, head: TreeHead) -> dict[str, Any]:
    if not 0 <= seq < head.size:
        raise NotFound(f"Entry {seq} is not inside the signed tree of size {head.size} yet; retry shortly.")
    rows = await ctx.store.ledger_entries(seq, seq + 1)
    keys = tree.needed_nodes_for_inclusion(seq, head.size)
    proof = tree.compute_inclusion_proof(seq, head.size, await ctx.store.ledger_nodes(keys))
    return {
        "seq": seq,
        "leaf_hash": crypto.b64encode(rows[0][2]),
        "entry": crypto.b64encode(rows[0][1]),
        "proof": [crypto.b64encode(p) for p in proof],
        "head": head.to_json(),
    }


async def audit_inclusion(ctx: ServiceContext, actor: Actor, seq: int, size: int | None) -> dict[str, Any]:
    _require_auditor(actor)
    await _record_read(ctx, actor, "inclusion_proof", {"seq": seq, "size": size})
    return await inclusion(ctx, seq, size)


async def consistency(ctx: ServiceContext, actor: Actor, old_size: int, new_size: int | None) -> dict[str, Any]:
    """An RFC 9162 consistency proof between two signed heads."""
    _require_auditor(actor)
    await _record_read(ctx, actor, "consistency_proof", {"from": old_size, "to": new_size})
    new = await head_or_404(ctx, new_size)
    old = await head_or_404(ctx, old_size)
    return {"new": new.to_json()} | await consistency_from(ctx, old, new)


async def consistency_from(ctx: ServiceContext, old: TreeHead, new: TreeHead) -> dict[str, Any]:
    if old.size > new.size:
        raise InvalidRequest("The first size must not be larger than the second.")
    keys = tree.needed_nodes_for_consistency(old.size, new.size)
    proof = tree.compute_consistency_proof(old.size, new.size, await ctx.store.ledger_nodes(keys))
    return {"old": old.to_json(), "proof": [crypto.b64encode(p) for p in proof]}


async def receipt(ctx: ServiceContext, actor: Actor, seq: int, since: int | None = None) -> dict[str, Any]:
    """A member's proof that an event they took part in is in the signed ledger.

    With ``since`` (the size of a signed head the member verified before), the answer also proves
    the latest head consistent with that one, so a member notices a ledger rewound or forked for them.
    Hashes only: nothing about other members' events is revealed.
    """
    auditor = Role.AUDITOR in actor.member.roles
    # A member gets the same words for another's entry as for one past the end: the ledger's size is
    # for auditors to read.
    hidden = "No such ledger entry." if auditor else "No such ledger entry among your events."
    rows = await ctx.store.ledger_entries(seq, seq + 1)
    if not rows:
        raise NotFound(hidden)
    entry = json.loads(rows[0][1])
    details = entry.get("details") or {}
    involved = {(entry.get("actor") or {}).get("member"), details.get("recipient"), details.get("member")}
    if actor.member_id not in involved and not auditor:
        raise NotFound(hidden)
    latest = await head_or_404(ctx, None)
    answer = await inclusion_in(ctx, seq, latest)
    if since is not None and since <= latest.size:  # beyond it, the member's client reports a rewound ledger
        answer["consistency"] = await consistency_from(ctx, await head_or_404(ctx, since), latest)
    return answer


async def export_stream(ctx: ServiceContext, actor: Actor) -> AsyncGenerator[bytes, None]:
    """The whole ledger with its signed heads, as export lines, read in batches (never all in memory)."""
    _require_auditor(actor)
    await _record_read(ctx, actor, "export", {})
    heads = await ctx.store.tree_heads()
    signed = heads[-1].size if heads else 0
    yield export.header_line(ctx.server_key.key_id, iso(ctx.clock()))
    pending = iter(heads)
    head = next(pending, None)
    count = 0
    while head is not None and head.size == 0:
        yield export.head_line(head)
        head = next(pending, None)
    async for _, entry, _ in ctx.store.iter_ledger(start=0, stop=signed):
        yield export.entry_line(count, entry)
        count += 1
        while head is not None and head.size == count:
            yield export.head_line(head)
            head = next(pending, None)
    yield export.end_line(count, len(heads), signed)
