"""The PostgreSQL store, for several exchange instances sharing one database (``postgresql://`` URLs).

Each :meth:`PostgresStore.write` is one READ COMMITTED transaction on a connection of its own from
an asyncpg pool, so changes by different requests and instances run side by side; what keeps them
apart is described in exchange.store.postgres.transaction. Reads go straight to the pool and see
what is committed. The schema and its versions: exchange.store.postgres.migrations.

asyncpg is an optional dependency (``pip install 'safeguarding-exchange[postgres]'``): this module
is imported only when a PostgreSQL store is opened, and without the driver it says what to install.
"""

from __future__ import annotations

from exchange.errors import StoreUnavailable

try:
    import asyncpg
except ModuleNotFoundError as missing:  # the optional driver, needed only here (synapse's engines pattern)
    raise StoreUnavailable(
        "The database is a postgresql:// URL, but the PostgreSQL driver (asyncpg) is not installed:"
        " install it with pip install 'safeguarding-exchange[postgres]'."
    ) from missing

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from exchange.domain import (
    Agency,
    DeliveryRecord,
    Escalation,
    InfoRequest,
    LoopStatement,
    Member,
    MemberKey,
    Obligation,
    PacketRecord,
    Page,
    Role,
    ShareDecision,
)
from exchange.errors import ExchangeError
from exchange.ledger.heads import TreeHead
from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, RequestState
from exchange.store.base import RequestRole, Store
from exchange.store.cancellation import uninterrupted
from exchange.store.postgres.errors import UNAVAILABLE, UNREACHABLE_ERRORS, translated, unwritable
from exchange.store.postgres.migrations import MIGRATIONS
from exchange.store.postgres.transaction import PostgresTransaction, nodes
from exchange.store.rows import (
    Prefixed,
    read_agency,
    read_delivery,
    read_escalation,
    read_head,
    read_key,
    read_member,
    read_obligation,
    read_packet,
    read_request,
    read_share_decision,
    read_statement,
)

__all__ = ["PostgresStore"]

#: Connections per instance: each change holds one until it commits, each read borrows one briefly.
POOL_SIZE = 10
#: Seconds to wait for the server when connecting (asyncpg's own default is a minute).
CONNECT_TIMEOUT = 10.0
#: Seconds ``ping`` waits for an answer before calling the database unreachable.
PING_TIMEOUT = 5.0
#: Held while migrating (pg_advisory_xact_lock): b"sgxmigra", so instances starting together migrate once.
MIGRATION_LOCK = int.from_bytes(b"sgxmigra", "big", signed=True)


def _page_clause(after: Page | None, created: str, key: str, first: int) -> tuple[str, list[Any]]:
    """A keyset page's condition with its parameters numbered from ``first``."""
    if after is None:
        return "", []
    return f" AND ({created}, {key}) < (${first}, ${first + 1})", [after.after_created, after.after_id]


class PostgresStore(Store):
    """PostgreSQL store; open with :meth:`open`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, pool_size: int = POOL_SIZE) -> PostgresStore:
        """Connect to ``url`` and migrate its schema; :class:`StoreUnavailable` if it cannot be reached."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": "safeguarding-exchange"},
            )
        except UNREACHABLE_ERRORS as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc
        try:
            await _migrate(pool)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[PostgresTransaction]:
        """One READ COMMITTED transaction on a pooled connection, durable when this returns.

        A full disk or a database that refuses writes raises ReadOnly (503), an unreachable one
        StoreUnavailable, a transaction PostgreSQL aborted to resolve a deadlock StateChanged (409).
        The actions registered with ``before_commit`` run just before COMMIT; if one raises, nothing
        commits and its error propagates. Once sent, the COMMIT is waited for even if the caller is
        cancelled (the cancellation is raised after), so a cancelled caller finds the outcome in
        ``tx.committed``.
        """
        try:
            db = await self._pool.acquire()
        except UNREACHABLE_ERRORS as exc:
            raise translated(exc) or StoreUnavailable(UNAVAILABLE) from exc
        try:
            tx = PostgresTransaction(db)
            try:
                await db.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                yield tx
            except BaseException as exc:
                await uninterrupted(_rollback(db))
                if isinstance(exc, UNREACHABLE_ERRORS):
                    mapped = translated(exc)
                    if mapped is not None:
                        raise mapped from exc
                raise
            await uninterrupted(_commit(db, tx))
        finally:
            await uninterrupted(self._pool.release(db))

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self._pool.fetchval("SELECT 1")
        except UNREACHABLE_ERRORS as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc

    async def _all(self, sql: str, *params: Any) -> list[Any]:
        try:
            rows: list[Any] = await self._pool.fetch(sql, *params)
        except UNREACHABLE_ERRORS as exc:
            if _unreachable(exc):
                raise translated(exc) or StoreUnavailable(UNAVAILABLE) from exc
            raise
        return rows

    async def _one(self, sql: str, *params: Any) -> Any:
        rows = await self._all(sql, *params)
        return rows[0] if rows else None

    # -- directory
    async def get_agency(self, agency_id: str) -> Agency | None:
        row = await self._one("SELECT * FROM agencies WHERE id = $1", agency_id)
        return read_agency(row) if row else None

    async def list_agencies(self) -> list[Agency]:
        return [read_agency(r) for r in await self._all("SELECT * FROM agencies ORDER BY name, stored")]

    async def get_member(self, member_id: str) -> Member | None:
        row = await self._one("SELECT * FROM members WHERE id = $1", member_id)
        return read_member(row) if row else None

    async def list_members(self, agency_id: str | None = None) -> list[Member]:
        if agency_id is None:
            rows = await self._all("SELECT * FROM members ORDER BY agency_id, display_name, stored")
        else:
            rows = await self._all(
                "SELECT * FROM members WHERE agency_id = $1 ORDER BY display_name, stored", agency_id
            )
        return [read_member(r) for r in rows]

    async def count_members(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM members")
        return int(row[0]) if row else 0

    async def nonce_seen(self, key_id: str, nonce: str) -> bool:
        row = await self._one("SELECT 1 FROM request_nonces WHERE key_id = $1 AND nonce = $2", key_id, nonce)
        return row is not None

    async def directory_members(
        self,
        limit: int,
        after: Page | None = None,
        *,
        agency_id: str | None = None,
        member_ids: Sequence[str] | None = None,
        roles: frozenset[Role] | None = None,
    ) -> list[Member]:
        clauses: list[str] = ["active"]
        params: list[Any] = []
        if after is not None:
            clauses.append(f"(created, id) > (${len(params) + 1}, ${len(params) + 2})")
            params += [after.after_created, after.after_id]
        if agency_id is not None:
            params.append(agency_id)
            clauses.append(f"agency_id = ${len(params)}")
        if member_ids is not None:
            wanted = list(dict.fromkeys(member_ids))
            if not wanted:
                return []
            params.append(wanted)
            clauses.append(f"id = ANY(${len(params)}::text[])")
        if roles:
            params.append(sorted(r.value for r in roles))
            clauses.append(
                f"EXISTS (SELECT 1 FROM jsonb_array_elements_text(members.roles::jsonb) AS r(role)"  # noqa: S608 - a placeholder
                f" WHERE r.role = ANY(${len(params)}::text[]))"
            )
        params.append(limit)
        rows = await self._all(
            f"SELECT * FROM members WHERE {' AND '.join(clauses)} ORDER BY created, id LIMIT ${len(params)}",  # noqa: S608 - fixed clauses, values bound
            *params,
        )
        return [read_member(r) for r in rows]

    async def keys_of_members(self, member_ids: Sequence[str]) -> dict[str, list[MemberKey]]:
        found: dict[str, list[MemberKey]] = {}
        wanted = list(dict.fromkeys(member_ids))
        if not wanted:
            return found
        rows = await self._all(
            "SELECT * FROM member_keys WHERE member_id = ANY($1::text[]) ORDER BY created, key_id", wanted
        )
        for row in rows:
            key = read_key(row)
            found.setdefault(key.member_id, []).append(key)
        return found

    async def agencies_page(self, limit: int, after: Page | None = None) -> list[Agency]:
        if after is None:
            rows = await self._all("SELECT * FROM agencies ORDER BY name, id LIMIT $1", limit)
        else:
            rows = await self._all(
                "SELECT * FROM agencies WHERE (name, id) > ($1, $2) ORDER BY name, id LIMIT $3",
                after.after_created,
                after.after_id,
                limit,
            )
        return [read_agency(r) for r in rows]

    async def get_key(self, key_id: str) -> MemberKey | None:
        row = await self._one("SELECT * FROM member_keys WHERE key_id = $1", key_id)
        return read_key(row) if row else None

    async def member_keys(self, member_id: str) -> list[MemberKey]:
        rows = await self._all("SELECT * FROM member_keys WHERE member_id = $1 ORDER BY created, stored", member_id)
        return [read_key(r) for r in rows]

    # -- packets
    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        row = await self._one("SELECT * FROM packets WHERE id = $1", packet_id)
        return read_packet(row) if row else None

    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        rows = await self._all("SELECT * FROM deliveries WHERE packet_id = $1 ORDER BY recipient_member", packet_id)
        return [read_delivery(r) for r in rows]

    async def inbox(
        self, member_id: str, limit: int, after: Page | None, states: frozenset[DeliveryState]
    ) -> list[tuple[PacketRecord, DeliveryRecord]]:
        params: list[Any] = [member_id, sorted(s.value for s in states)]
        state_clause = " AND d.status = ANY($2::text[])"
        page, page_params = _page_clause(after, "d.packet_created", "d.packet_id", len(params) + 1)
        params += [*page_params, limit]
        rows = await self._all(
            "SELECT p.*, d.packet_id AS d_packet_id, d.recipient_member AS d_recipient_member,"  # noqa: S608 - fixed clauses, values bound
            " d.recipient_agency AS d_recipient_agency, d.encryption_key AS d_encryption_key,"
            " d.sealed_key AS d_sealed_key, d.status AS d_status, d.delivered_at AS d_delivered_at,"
            " d.opened_at AS d_opened_at, d.acknowledged_at AS d_acknowledged_at,"
            " d.ack_signature AS d_ack_signature, d.ack_key AS d_ack_key, d.reported_at AS d_reported_at,"
            " d.confirmed_at AS d_confirmed_at, d.updated AS d_updated"
            " FROM deliveries d JOIN packets p ON p.id = d.packet_id"
            " WHERE d.recipient_member = $1"
            # Recalled while held for approval: it never reached the recipient.
            " AND NOT (d.status = 'recalled' AND d.delivered_at IS NULL)"
            f"{state_clause}{page} ORDER BY d.packet_created DESC, d.packet_id DESC LIMIT ${len(params)}",
            *params,
        )
        return [(read_packet(r), read_delivery(Prefixed(r, "d_"))) for r in rows]

    async def outbox(
        self, member_id: str, limit: int, after: Page | None = None, states: frozenset[PacketState] | None = None
    ) -> list[PacketRecord]:
        params: list[Any] = [member_id]
        state_clause = ""
        if states:
            params.append(sorted(s.value for s in states))
            state_clause = f" AND status = ANY(${len(params)}::text[])"
        page, page_params = _page_clause(after, "created", "id", len(params) + 1)
        params += [*page_params, limit]
        rows = await self._all(
            f"SELECT * FROM packets WHERE sender_member = $1{state_clause}{page}"  # noqa: S608 - fixed clauses
            f" ORDER BY created DESC, id DESC LIMIT ${len(params)}",
            *params,
        )
        return [read_packet(r) for r in rows]

    async def packets_awaiting_approval(
        self, agency_id: str, limit: int, after: Page | None, states: frozenset[ApprovalState]
    ) -> list[PacketRecord]:
        page, params = _page_clause(after, "created", "id", 3)
        rows = await self._all(
            "SELECT * FROM packets WHERE sender_agency = $1 AND approval_state = ANY($2::text[])"  # noqa: S608
            f"{page} ORDER BY created DESC, id DESC LIMIT ${len(params) + 3}",
            agency_id,
            sorted(s.value for s in states),
            *params,
            limit,
        )
        return [read_packet(r) for r in rows]

    async def statements_for(self, packet_id: str, recipient_member: str | None = None) -> list[LoopStatement]:
        if recipient_member is None:
            rows = await self._all("SELECT * FROM loop_statements WHERE packet_id = $1 ORDER BY created, id", packet_id)
        else:
            rows = await self._all(
                "SELECT * FROM loop_statements WHERE packet_id = $1 AND recipient_member = $2 ORDER BY created, id",
                packet_id,
                recipient_member,
            )
        return [read_statement(r) for r in rows]

    # -- escalations and deadlines
    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        row = await self._one("SELECT * FROM escalations WHERE id = $1", escalation_id)
        return read_escalation(row) if row else None

    async def escalations(
        self,
        *,
        members: Sequence[str],
        agencies_as_sender: Sequence[str],
        agencies_as_owing: Sequence[str],
        limit: int,
        after: Page | None = None,
        open_only: bool = False,
    ) -> list[Escalation]:
        params: list[Any] = [list(members), list(agencies_as_sender), list(agencies_as_owing)]
        page, page_params = _page_clause(after, "raised_at", "id", 4)
        params += [*page_params, limit]
        still_open = " AND acknowledged_at IS NULL AND resolved_at IS NULL" if open_only else ""
        rows = await self._all(
            "SELECT * FROM escalations WHERE (owed_to_member = ANY($1::text[]) OR owed_by_member = ANY($1::text[])"  # noqa: S608
            " OR owed_to_agency = ANY($2::text[]) OR owed_by_agency = ANY($3::text[]))"
            f"{still_open}{page} ORDER BY raised_at DESC, id DESC LIMIT ${len(params)}",
            *params,
        )
        return [read_escalation(r) for r in rows]

    async def oldest_due_obligation(self, now: str) -> tuple[int, str | None]:
        row = await self._one("SELECT COUNT(*), MIN(due) FROM obligations WHERE state = 'open' AND due <= $1", now)
        return (int(row[0]), row[1]) if row else (0, None)

    async def obligations_for(self, packet_id: str) -> list[Obligation]:
        rows = await self._all("SELECT * FROM obligations WHERE packet_id = $1 ORDER BY due, id", packet_id)
        return [read_obligation(r) for r in rows]

    # -- information requests and decisions not to share
    async def get_request(self, request_id: str) -> InfoRequest | None:
        row = await self._one("SELECT * FROM info_requests WHERE id = $1", request_id)
        return read_request(row) if row else None

    async def requests_for(
        self,
        member_id: str,
        agency_id: str,
        *,
        role: RequestRole,
        limit: int,
        after: Page | None = None,
        states: frozenset[RequestState] | None = None,
    ) -> list[InfoRequest]:
        # A holder is a member the details were sealed to (the keys of the sealed map); the agency
        # condition lets the holder index narrow the rows first.
        params: list[Any] = [member_id]
        sent = "requester_member = $1"
        if role != "sent":
            params.append(agency_id)
        received = "(holder_agency = $2 AND info_requests.sealed::jsonb ? $1)"
        who = {"sent": sent, "received": received, "all": f"{sent} OR {received}"}[role]
        state_clause = ""
        if states:
            params.append(sorted(s.value for s in states))
            state_clause = f" AND state = ANY(${len(params)}::text[])"
        page, page_params = _page_clause(after, "created", "id", len(params) + 1)
        params += [*page_params, limit]
        rows = await self._all(
            f"SELECT * FROM info_requests WHERE ({who}){state_clause}{page}"  # noqa: S608 - fixed clauses, values bound
            f" ORDER BY created DESC, id DESC LIMIT ${len(params)}",
            *params,
        )
        return [read_request(r) for r in rows]

    async def share_decisions(
        self, *, member_id: str | None, agency_id: str | None, limit: int, after: Page | None = None
    ) -> list[ShareDecision]:
        if member_id is not None:
            who, value = "member = $1", member_id
        elif agency_id is not None:
            who, value = "agency = $1", agency_id
        else:
            return []
        page, page_params = _page_clause(after, "created", "id", 2)
        rows = await self._all(
            f"SELECT * FROM share_decisions WHERE {who}{page}"  # noqa: S608
            f" ORDER BY created DESC, id DESC LIMIT ${len(page_params) + 2}",
            value,
            *page_params,
            limit,
        )
        return [read_share_decision(r) for r in rows]

    async def packets_for_subject(self, pseudonym: str) -> list[PacketRecord]:
        rows = await self._all("SELECT * FROM packets WHERE subject = $1 ORDER BY created, id", pseudonym)
        return [read_packet(r) for r in rows]

    async def subject_ledger(
        self, pseudonym: str, start: int, limit: int, stop: int | None = None
    ) -> list[tuple[int, bytes, bytes]]:
        rows = await self._all(
            "SELECT seq, entry, leaf_hash FROM ledger_entries WHERE seq >= $1 AND seq < $2 AND seq IN ("
            " SELECT seq FROM ledger_refs WHERE kind = 'subject' AND value = $3"
            " UNION SELECT r.seq FROM packets p JOIN ledger_refs r ON r.kind = 'packet' AND r.value = p.id"
            "   WHERE p.subject = $3"
            " UNION SELECT r.seq FROM info_requests q JOIN ledger_refs r ON r.kind = 'request' AND r.value = q.id"
            "   WHERE q.subject = $3"
            " UNION SELECT r.seq FROM share_decisions d"
            "   JOIN ledger_refs r ON r.kind = 'request' AND r.value = d.request_id WHERE d.subject = $3"
            ") ORDER BY seq LIMIT $4",
            start,
            2**62 if stop is None else stop,
            pseudonym,
            limit,
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    # -- ledger
    async def ledger_size(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries")
        return int(row[0]) if row else 0

    async def ledger_entries(self, start: int, stop: int) -> list[tuple[int, bytes, bytes]]:
        rows = await self._all(
            "SELECT seq, entry, leaf_hash FROM ledger_entries WHERE seq >= $1 AND seq < $2 ORDER BY seq", start, stop
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    async def search_ledger(self, filters: Mapping[str, str], start: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        clauses = ["seq >= $1"]
        params: list[Any] = [start]
        for kind in ("type", "packet", "member", "agency", "request", "subject"):
            if filters.get(kind):
                params += [kind, filters[kind]]
                clauses.append(
                    f"seq IN (SELECT seq FROM ledger_refs WHERE kind = ${len(params) - 1} AND value = ${len(params)})"  # noqa: S608
                )
        if filters.get("since") or filters.get("until"):
            params += [filters.get("since") or "", filters.get("until") or "\uffff"]
            clauses.append(
                "seq IN (SELECT seq FROM ledger_refs WHERE kind = 'time'"  # noqa: S608 - placeholders
                f" AND value >= ${len(params) - 1} AND value < ${len(params)})"
            )
        params.append(limit)
        rows = await self._all(
            f"SELECT seq, entry, leaf_hash FROM ledger_entries WHERE {' AND '.join(clauses)}"  # noqa: S608 - fixed clauses, values bound
            f" ORDER BY seq LIMIT ${len(params)}",
            *params,
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    async def iter_ledger(
        self, start: int = 0, stop: int | None = None, batch: int = 5000
    ) -> AsyncIterator[tuple[int, bytes, bytes]]:
        while stop is None or start < stop:
            end = start + batch if stop is None else min(start + batch, stop)
            rows = await self.ledger_entries(start, end)
            if not rows:
                return
            for row in rows:
                yield row
            start = rows[-1][0] + 1

    async def ledger_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        try:
            return await nodes(self._pool, keys)
        except UNREACHABLE_ERRORS as exc:
            if _unreachable(exc):
                raise translated(exc) or StoreUnavailable(UNAVAILABLE) from exc
            raise

    async def latest_tree_head(self) -> TreeHead | None:
        row = await self._one("SELECT * FROM tree_heads ORDER BY size DESC LIMIT 1")
        return read_head(row) if row else None

    async def tree_head(self, size: int) -> TreeHead | None:
        row = await self._one("SELECT * FROM tree_heads WHERE size = $1", size)
        return read_head(row) if row else None

    async def tree_heads(self, start_size: int = 0, limit: int | None = None) -> list[TreeHead]:
        rows = await self._all("SELECT * FROM tree_heads WHERE size >= $1 ORDER BY size LIMIT $2", start_size, limit)
        return [read_head(r) for r in rows]


def _unreachable(exc: BaseException) -> bool:
    """Whether a read failed for want of the server (not for a fault in the query)."""
    return not isinstance(exc, asyncpg.PostgresError) or translated(exc) is not None


async def _commit(db: asyncpg.Connection, tx: PostgresTransaction) -> None:
    try:
        for action in tx.before_commit_actions:
            await action()
    except BaseException:
        await _rollback(db)
        raise
    try:
        await db.execute("COMMIT")
    except BaseException as exc:
        await _rollback(db)
        if isinstance(exc, UNREACHABLE_ERRORS):
            # Not known to have committed: a COMMIT whose answer was lost may still have (see the module).
            mapped: ExchangeError | None = translated(exc)
            raise (mapped or unwritable()) from exc
        raise
    tx.committed = True


async def _rollback(db: asyncpg.Connection) -> None:
    # A connection that cannot even roll back is broken: the pool closes it on release, and the
    # server rolls back a transaction whose connection ended.
    with contextlib.suppress(*UNREACHABLE_ERRORS):
        if db.is_in_transaction():
            await db.execute("ROLLBACK")


async def _migrate(pool: asyncpg.Pool) -> None:
    """Apply the migrations this database has not had, one transaction each, under the migration lock."""
    async with pool.acquire() as db:
        while True:
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
                version = await db.fetchval("SELECT MAX(version) FROM schema_version") or 0
                if version > len(MIGRATIONS):
                    raise StoreUnavailable(
                        f"The database is at schema version {version}, newer than this software knows"
                        f" ({len(MIGRATIONS)})."
                    )
                if version == len(MIGRATIONS):
                    return
                await db.execute(MIGRATIONS[version])
                await db.execute("DELETE FROM schema_version")
                await db.execute("INSERT INTO schema_version (version) VALUES ($1)", version + 1)
