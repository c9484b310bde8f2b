"""The embedded default store: SQLite in WAL mode, ``synchronous=FULL``.

One connection writes, serialised by a lock and ``BEGIN IMMEDIATE`` (the datasette pattern), its
statements run in place on the event loop and only BEGIN and COMMIT on a thread
(:mod:`exchange.store.inline`); another reads through aiosqlite, so a read never sees another
coroutine's uncommitted transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from exchange import crypto
from exchange.domain import (
    DELIVERY_TIMES,
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
    RequestDecline,
    Role,
    ShareDecision,
)
from exchange.errors import Conflict, DiskFull, KeyInUse, ReadOnly, StateChanged, StoreUnavailable, StoreUnwritable
from exchange.ledger.append import Appended
from exchange.ledger.heads import TreeHead
from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, RequestState
from exchange.store.base import RequestRole, Store, Transaction
from exchange.store.cancellation import uninterrupted as _uninterrupted
from exchange.store.inline import InlineConnection, InlineCursor
from exchange.store.migrations import MIGRATIONS
from exchange.store.rows import (
    PACKET_COLUMNS,
    Prefixed,
    decline_text,
    packet_values,
    purpose_list,
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
    sealed_details,
)

#: The reader (aiosqlite, on its thread) or a connection used in place (the writer, the look-ups).
_Connection = aiosqlite.Connection | InlineConnection

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


#: SQLite primary result codes (https://sqlite.org/rescode.html) that mean the file cannot be written.
_SQLITE_FULL = 13
_SQLITE_UNWRITABLE = frozenset({8, 10, 14})  # READONLY, IOERR, CANTOPEN


def _raise_unwritable(exc: sqlite3.Error) -> None:
    """Raise ReadOnly (from ``exc``) if a failed write means a full or unwritable store; else return."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if primary == _SQLITE_FULL:
        raise DiskFull(
            "The exchange's database is on a full disk, so it cannot record changes just now and is "
            "read-only. Nothing was changed; try again later.",
            extras={"cause": "store"},
            retry_after=1,
        ) from exc
    if primary in _SQLITE_UNWRITABLE:
        raise StoreUnwritable(
            "The exchange cannot write its database just now, so it is read-only. Nothing was changed; "
            "try again later.",
            extras={"cause": "store"},
            retry_after=1,
        ) from exc


def _insert(table: str, names: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"  # noqa: S608 - fixed names


def _changed_one(cursor: InlineCursor, what: str) -> None:
    """The compare-and-set rule: exactly one row must have moved from the expected state."""
    if cursor.rowcount != 1:
        raise StateChanged(f"The {what} changed while this request was being handled; nothing was done.")


def _page_clause(after: Page | None, created: str, key: str) -> tuple[str, list[Any]]:
    if after is None:
        return "", []
    return f" AND ({created}, {key}) < (?, ?)", [after.after_created, after.after_id]


async def _nodes(db: _Connection, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    found: dict[tuple[int, int], bytes] = {}
    wanted = list(dict.fromkeys(keys))
    # SQLite's default limit on bound parameters is generous, but chunk to stay well inside it.
    for start in range(0, len(wanted), 200):
        chunk = wanted[start : start + 200]
        clause = " OR ".join("(level = ? AND idx = ?)" for _ in chunk)
        params = [v for pair in chunk for v in pair]
        async with db.execute(f"SELECT level, idx, hash FROM ledger_nodes WHERE {clause}", params) as cur:  # noqa: S608 - only placeholders are interpolated
            for row in await cur.fetchall():
                found[(row[0], row[1])] = bytes(row[2])
    return found


async def _first_row(db: _Connection, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
    async with db.execute(sql, params) as cur:
        row: sqlite3.Row | None = await cur.fetchone()
        return row


class _SqliteTransaction(Transaction):
    def __init__(self, db: InlineConnection, group: _Group) -> None:
        self._db = db
        self._group = group

    def before_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        if action not in self._group.before_commit:
            self._group.before_commit.append(action)

    async def insert_agency(self, agency: Agency) -> None:
        await self._db.execute(
            "INSERT INTO agencies (id, name, kind, created, send_purposes, receive_purposes) VALUES (?, ?, ?, ?, ?, ?)",
            (
                agency.id,
                agency.name,
                agency.kind.value,
                agency.created,
                purpose_list(agency.send_purposes),
                purpose_list(agency.receive_purposes),
            ),
        )

    async def set_agency_purposes(
        self, agency_id: str, send: frozenset[str] | None, receive: frozenset[str] | None
    ) -> None:
        await self._db.execute(
            "UPDATE agencies SET send_purposes = ?, receive_purposes = ? WHERE id = ?",
            (purpose_list(send), purpose_list(receive), agency_id),
        )

    async def insert_member(self, member: Member) -> None:
        await self._db.execute(
            "INSERT INTO members (id, agency_id, display_name, roles, created, active) VALUES (?, ?, ?, ?, ?, ?)",
            (
                member.id,
                member.agency_id,
                member.display_name,
                json.dumps(sorted(r.value for r in member.roles)),
                member.created,
                int(member.active),
            ),
        )

    async def insert_key(self, key: MemberKey) -> None:
        try:
            await self._db.execute(
                "INSERT INTO member_keys (key_id, member_id, use, public_key, not_before, not_after,"
                " revoked_at, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    key.member_id,
                    key.use.value,
                    key.public_bytes,
                    key.not_before,
                    key.not_after,
                    key.revoked_at,
                    key.created,
                ),
            )
        except sqlite3.IntegrityError:
            raise KeyInUse(
                "This key is already registered on the exchange. Every member makes their own keys"
                " ('exchange keys new'); one key never serves two accounts."
            ) from None

    async def revoke_key(self, key_id: str, when: str) -> None:
        await self._db.execute(
            "UPDATE member_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (when, key_id)
        )

    async def remember_nonce(self, key_id: str, nonce: str, expires: str) -> bool:
        cur = await self._db.execute(
            "INSERT OR IGNORE INTO request_nonces (key_id, nonce, expires) VALUES (?, ?, ?)",
            (key_id, nonce, expires),
        )
        fresh = cur.rowcount == 1
        await cur.close()
        return fresh

    async def purge_nonces(self, before: str) -> None:
        await self._db.execute("DELETE FROM request_nonces WHERE expires < ?", (before,))

    async def insert_packet(self, packet: PacketRecord) -> None:
        try:
            await self._db.execute(
                f"INSERT INTO packets ({PACKET_COLUMNS}) VALUES ({', '.join('?' * 25)})",  # noqa: S608 - fixed columns
                packet_values(packet),
            )
        except sqlite3.IntegrityError:
            raise Conflict("A packet with this id or manifest was already submitted.") from None

    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        async with self._db.execute("SELECT * FROM packets WHERE id = ?", (packet_id,)) as cur:
            row = await cur.fetchone()
        return read_packet(row) if row is not None else None

    async def set_packet_state(
        self,
        packet_id: str,
        expected: PacketState,
        new: PacketState,
        *,
        superseded_by: str | None = None,
        corrected_fields: Sequence[str] | None = None,
    ) -> None:
        fields = json.dumps(list(corrected_fields)) if corrected_fields else None
        cur = await self._db.execute(
            "UPDATE packets SET status = ?, superseded_by = COALESCE(?, superseded_by),"
            " corrected_fields = COALESCE(?, corrected_fields) WHERE id = ? AND status = ?",
            (new.value, superseded_by, fields, packet_id, expected.value),
        )
        _changed_one(cur, "packet")

    async def set_approval_state(
        self, packet_id: str, expected: ApprovalState, new: ApprovalState, approval: Mapping[str, Any] | None
    ) -> None:
        cur = await self._db.execute(
            "UPDATE packets SET approval_state = ?, approval = COALESCE(?, approval)"
            " WHERE id = ? AND approval_state = ?",
            (new.value, json.dumps(dict(approval)) if approval else None, packet_id, expected.value),
        )
        _changed_one(cur, "approval")

    async def set_packet_dues(self, packet_id: str, ack_due: str | None, action_due: str | None) -> None:
        await self._db.execute(
            "UPDATE packets SET ack_due = ?, action_due = ? WHERE id = ?", (ack_due, action_due, packet_id)
        )

    async def remove_content(self, packet_id: str, when: str) -> None:
        await self._db.execute(
            "UPDATE packets SET body = X'', content_removed_at = ? WHERE id = ? AND content_removed_at IS NULL",
            (when, packet_id),
        )
        await self._db.execute("UPDATE deliveries SET sealed_key = X'' WHERE packet_id = ?", (packet_id,))
        await self._db.execute("UPDATE loop_statements SET sealed_note = NULL WHERE packet_id = ?", (packet_id,))

    async def remove_sealed_key(self, packet_id: str, member_id: str) -> None:
        await self._db.execute(
            "UPDATE deliveries SET sealed_key = X'' WHERE packet_id = ? AND recipient_member = ?",
            (packet_id, member_id),
        )

    async def insert_delivery(self, delivery: DeliveryRecord) -> None:
        await self._db.execute(
            "INSERT INTO deliveries (packet_id, recipient_member, recipient_agency, encryption_key, sealed_key,"
            " status, delivered_at, opened_at, acknowledged_at, ack_signature, updated, packet_created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT created FROM packets WHERE id = ?))",
            (
                delivery.packet_id,
                delivery.recipient_member,
                delivery.recipient_agency,
                delivery.encryption_key,
                delivery.sealed_key,
                delivery.state.value,
                delivery.delivered_at,
                delivery.opened_at,
                delivery.acknowledged_at,
                delivery.ack_signature,
                delivery.updated,
                delivery.packet_id,
            ),
        )

    async def get_delivery(self, packet_id: str, member_id: str) -> DeliveryRecord | None:
        async with self._db.execute(
            "SELECT * FROM deliveries WHERE packet_id = ? AND recipient_member = ?", (packet_id, member_id)
        ) as cur:
            row = await cur.fetchone()
        return read_delivery(row) if row is not None else None

    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        async with self._db.execute(
            "SELECT * FROM deliveries WHERE packet_id = ? ORDER BY recipient_member", (packet_id,)
        ) as cur:
            return [read_delivery(r) for r in await cur.fetchall()]

    async def set_delivery_state(
        self,
        packet_id: str,
        member_id: str,
        expected: DeliveryState,
        new: DeliveryState,
        *,
        when: str,
        times: Mapping[str, str] | None = None,
        ack_signature: bytes | None = None,
        ack_key: str | None = None,
    ) -> None:
        times = dict(times or {})
        unknown = set(times) - DELIVERY_TIMES
        if unknown:
            raise ValueError(f"not delivery times: {sorted(unknown)}")
        sets = ["status = ?", "updated = ?"] + [f"{name} = COALESCE({name}, ?)" for name in times]
        params: list[Any] = [new.value, when, *times.values()]
        if ack_signature is not None:
            sets += ["ack_signature = ?", "ack_key = ?"]
            params += [ack_signature, ack_key]
        cur = await self._db.execute(
            f"UPDATE deliveries SET {', '.join(sets)} WHERE packet_id = ? AND recipient_member = ? AND status = ?",  # noqa: S608 - names from DELIVERY_TIMES
            [*params, packet_id, member_id, expected.value],
        )
        _changed_one(cur, "packet's delivery")

    async def insert_statement(self, statement: LoopStatement) -> None:
        names = list(LoopStatement.__dataclass_fields__)
        await self._db.execute(_insert("loop_statements", names), [getattr(statement, n) for n in names])

    async def statements_for(self, packet_id: str, recipient_member: str) -> list[LoopStatement]:
        async with self._db.execute(
            "SELECT * FROM loop_statements WHERE packet_id = ? AND recipient_member = ? ORDER BY created, id",
            (packet_id, recipient_member),
        ) as cur:
            return [read_statement(r) for r in await cur.fetchall()]

    async def insert_request(self, request: InfoRequest) -> None:
        try:
            await self._db.execute(
                "INSERT INTO info_requests (id, requester_member, requester_agency, holder_agency, holder_member,"
                " document, digest, key_id, signature, sealed, purpose, urgency, subject, state, created, answer_due)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.id,
                    request.requester_member,
                    request.requester_agency,
                    request.holder_agency,
                    request.holder_member,
                    request.document,
                    request.digest,
                    request.key_id,
                    request.signature,
                    sealed_details(request),
                    request.purpose,
                    request.urgency,
                    request.subject,
                    request.state.value,
                    request.created,
                    request.answer_due,
                ),
            )
        except sqlite3.IntegrityError:
            raise Conflict("A request with this id or document was already submitted.") from None

    async def get_request(self, request_id: str) -> InfoRequest | None:
        async with self._db.execute("SELECT * FROM info_requests WHERE id = ?", (request_id,)) as cur:
            row = await cur.fetchone()
        return read_request(row) if row is not None else None

    async def set_request_state(
        self,
        request_id: str,
        expected: RequestState,
        new: RequestState,
        *,
        when: str,
        answered_by: str | None = None,
        decline: RequestDecline | None = None,
    ) -> None:
        declined = decline_text(decline) if decline is not None else None
        cur = await self._db.execute(
            # A correction of the answer replaces answered_by; answered_at stays the first answer's time.
            "UPDATE info_requests SET state = ?, answered_by = COALESCE(?, answered_by),"
            " answered_at = CASE WHEN ? IS NULL THEN answered_at ELSE COALESCE(answered_at, ?) END,"
            " decline = COALESCE(?, decline), decline_sealed = COALESCE(?, decline_sealed)"
            " WHERE id = ? AND state = ?",
            (
                new.value,
                answered_by,
                answered_by,
                when,
                declined,
                decline.explanation.sealed if decline is not None else None,
                request_id,
                expected.value,
            ),
        )
        _changed_one(cur, "request")

    async def insert_share_decision(self, decision: ShareDecision) -> None:
        try:
            await self._db.execute(
                "INSERT INTO share_decisions (id, member, agency, document, key_id, signature, sealed_note, subject,"
                " request_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision.id,
                    decision.member,
                    decision.agency,
                    decision.document,
                    decision.key_id,
                    decision.signature,
                    decision.note.sealed,
                    decision.subject,
                    decision.request_id,
                    decision.created,
                ),
            )
        except sqlite3.IntegrityError:
            raise Conflict("A decision with this id was already recorded.") from None

    async def add_obligation(self, obligation: Obligation) -> None:
        names = list(Obligation.__dataclass_fields__)
        await self._db.execute(
            _insert("obligations", names).replace("INSERT", "INSERT OR IGNORE", 1),
            [getattr(obligation, n) for n in names],
        )

    async def settle_obligations(
        self,
        kinds: Sequence[str],
        *,
        packet_id: str | None = None,
        request_id: str | None = None,
        owed_by_member: str | None = None,
        state: str,
        when: str,
    ) -> list[str]:
        if state not in ("met", "cancelled"):
            raise ValueError(f"an obligation is settled as met or cancelled, not {state!r}")
        clauses = [f"kind IN ({', '.join('?' for _ in kinds)})", "state IN ('open', 'fired')"]
        params: list[Any] = list(kinds)
        for column, value in (
            ("packet_id", packet_id),
            ("request_id", request_id),
            ("owed_by_member", owed_by_member),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        async with self._db.execute(f"SELECT id, state FROM obligations WHERE {where}", params) as cur:  # noqa: S608 - fixed clauses
            rows = [(r[0], r[1]) for r in await cur.fetchall()]
        settled = [oid for oid, current in rows if current == "open"]
        if settled:
            marks = ", ".join("?" for _ in settled)
            await self._db.execute(
                f"UPDATE obligations SET state = ?, settled_at = ? WHERE id IN ({marks}) AND state = 'open'",  # noqa: S608
                [state, when, *settled],
            )
        fired = [oid for oid, current in rows if current == "fired"]
        if fired:
            marks = ", ".join("?" for _ in fired)
            # A late answer resolves its escalation; the obligation itself stays "fired" on record.
            await self._db.execute(
                f"UPDATE escalations SET resolved_at = ? WHERE obligation_id IN ({marks}) AND resolved_at IS NULL",  # noqa: S608
                [when, *fired],
            )
            await self._db.execute(
                f"UPDATE obligations SET settled_at = COALESCE(settled_at, ?) WHERE id IN ({marks})",  # noqa: S608
                [when, *fired],
            )
        return settled + fired

    async def due_obligations(self, now: str, limit: int) -> list[Obligation]:
        async with self._db.execute(
            "SELECT * FROM obligations WHERE state = 'open' AND due <= ? ORDER BY due, id LIMIT ?", (now, limit)
        ) as cur:
            return [read_obligation(r) for r in await cur.fetchall()]

    async def fire_obligation(self, obligation_id: str, when: str) -> bool:
        cur = await self._db.execute(
            "UPDATE obligations SET state = 'fired', settled_at = ? WHERE id = ? AND state = 'open'",
            (when, obligation_id),
        )
        return cur.rowcount == 1

    async def get_obligation(self, obligation_id: str) -> Obligation | None:
        async with self._db.execute("SELECT * FROM obligations WHERE id = ?", (obligation_id,)) as cur:
            row = await cur.fetchone()
        return read_obligation(row) if row is not None else None

    async def settle_obligation(self, obligation_id: str, state: str, when: str) -> bool:
        if state not in ("met", "cancelled"):
            raise ValueError(f"an obligation is settled as met or cancelled, not {state!r}")
        cur = await self._db.execute(
            "UPDATE obligations SET state = ?, settled_at = ? WHERE id = ? AND state = 'open'",
            (state, when, obligation_id),
        )
        return cur.rowcount == 1

    async def info_request_state(self, request_id: str) -> str | None:
        async with self._db.execute("SELECT state FROM info_requests WHERE id = ?", (request_id,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row is not None else None

    async def insert_escalation(self, escalation: Escalation) -> None:
        names = list(Escalation.__dataclass_fields__)
        await self._db.execute(_insert("escalations", names), [getattr(escalation, n) for n in names])

    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        async with self._db.execute("SELECT * FROM escalations WHERE id = ?", (escalation_id,)) as cur:
            row = await cur.fetchone()
        return read_escalation(row) if row is not None else None

    async def acknowledge_escalation(self, escalation_id: str, member_id: str, when: str) -> bool:
        cur = await self._db.execute(
            "UPDATE escalations SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ? AND acknowledged_at IS NULL",
            (when, member_id, escalation_id),
        )
        return cur.rowcount == 1

    async def take_lease(self, name: str, holder: str, now: str, expires: str) -> bool:
        cur = await self._db.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
            " WHERE leases.holder = excluded.holder OR leases.expires <= ?",
            (name, holder, expires, now),
        )
        return cur.rowcount == 1

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    async def lock_ledger(self) -> int:
        # The writer's transaction holds SQLite's one write lock (BEGIN IMMEDIATE): that is the ledger lock.
        async with self._db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def ledger_frontier(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return await _nodes(self._db, keys)

    async def store_ledger_entries(self, appended: Sequence[Appended]) -> None:
        await self._db.executemany(
            "INSERT INTO ledger_entries (seq, entry, leaf_hash) VALUES (?, ?, ?)",
            [(a.seq, a.entry, a.leaf_hash) for a in appended],
        )
        await self._db.executemany(
            "INSERT INTO ledger_refs (kind, value, seq) VALUES (?, ?, ?)",
            [(kind, value, a.seq) for a in appended for kind, value in a.refs],
        )
        await self._db.executemany(
            "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)", [n for a in appended for n in a.nodes]
        )

    async def insert_tree_head(self, head: TreeHead) -> None:
        await self._db.execute(
            "INSERT OR IGNORE INTO tree_heads (size, root_hash, timestamp, key_id, signature) VALUES (?, ?, ?, ?, ?)",
            (head.size, head.root_hash, head.timestamp, head.key_id, head.signature),
        )


#: At most this many changes share one commit, so a steady stream of writers still commits often.
GROUP_COMMIT_LIMIT = 64


@dataclass
class _Group:
    """Changes sharing one SQLite transaction; ``committed`` resolves when it is durable (or failed)."""

    committed: asyncio.Future[None]
    members: int = 0
    #: What must succeed before the COMMIT (the record log's sync), registered by the changes.
    before_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class SqliteStore(Store):
    """SQLite store; open with :meth:`open`."""

    def __init__(
        self, path: Path, writer: InlineConnection, reader: aiosqlite.Connection, lookups: InlineConnection
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        #: Reads of one row by its key, run in place like the writer's statements (exchange.store.inline):
        #: a request's key, member and nonce look-ups took a thread round trip each.
        self._lookups = lookups
        self._lock = asyncio.Lock()
        #: Writers waiting for the lock, and the transaction they will join (group commit; see write()).
        self._waiting = 0
        self._group: _Group | None = None
        #: Commits for groups whose last writer was cancelled (kept so they are not collected mid-way).
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        # The database holds sealed content and who shared with whom: readable by its owner only
        # (SQLite gives its -wal and -shm files the database file's mode).
        crypto.private_folder(path.parent)
        crypto.create_private(path)
        writer = await InlineConnection.connect(path)
        writer.row_factory = sqlite3.Row
        try:
            for pragma in _PRAGMAS:
                await writer.execute(pragma)
            await _migrate(writer)
        except BaseException:
            await writer.close()
            raise
        reader = await aiosqlite.connect(path, isolation_level=None)
        reader.row_factory = sqlite3.Row
        for pragma in _PRAGMAS[1:]:
            await reader.execute(pragma)
        await reader.execute("PRAGMA query_only=ON")
        lookups = await InlineConnection.connect(path)
        lookups.row_factory = sqlite3.Row
        for pragma in (*_PRAGMAS[1:], "PRAGMA query_only=ON"):
            await lookups.execute(pragma)
        return cls(path, writer, reader, lookups)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_SqliteTransaction]:
        """One write transaction, durable when this returns; a full disk or an unwritable file raises
        ReadOnly (503), not a 500.

        Group commit: while other writers are waiting, the next one continues the same SQLite
        transaction inside a savepoint of its own, and the last of them (or the
        :data:`GROUP_COMMIT_LIMIT`-th) commits for all, so many changes share one fsync. Each
        caller still returns only after the commit that makes its change durable, and a change that
        fails is rolled back to its savepoint alone. With nobody waiting this is one transaction per
        change, as before. A failed COMMIT fails every change of the group, rolled back explicitly:
        SQLite may leave the transaction open after one, and the next BEGIN would then fail.

        Cancellation never leaves the store half-way: once a statement of this machinery has started
        it is finished (the cancellation is raised after), the writer that commits for a group
        finishes that commit, and a group left by a writer that was cancelled while waiting is
        committed by a task of the store's own. A caller cancelled after its body finds the outcome
        in ``tx.committed``.
        """
        self._waiting += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._waiting -= 1
            self._commit_abandoned_group()
            raise
        self._waiting -= 1
        group = self._group
        try:
            if group is None:
                group = await self._begin()
            # The savepoint statements run in place (see exchange.store.inline): nothing to interrupt.
            await self._writer.execute("SAVEPOINT change")
            tx = _SqliteTransaction(self._writer, group)
            try:
                yield tx
            except BaseException as exc:
                await self._undo_savepoint(group)
                if isinstance(exc, sqlite3.Error):
                    _raise_unwritable(exc)
                raise
            try:
                await self._writer.execute("RELEASE change")
            except sqlite3.Error as exc:
                await self._undo_savepoint(group)
                _raise_unwritable(exc)
                raise
            group.members += 1
        finally:
            try:
                if self._group is not None and (self._waiting == 0 or self._group.members >= GROUP_COMMIT_LIMIT):
                    await _uninterrupted(self._commit_group())
            finally:  # a cancellation raised after the commit must not keep the lock
                self._lock.release()
        outcome = group.committed
        try:
            await _uninterrupted(outcome)
        except asyncio.CancelledError:
            tx.committed = outcome.done() and not outcome.cancelled() and outcome.exception() is None
            raise
        tx.committed = True

    async def _begin(self) -> _Group:
        try:
            await _uninterrupted(self._writer.execute_waiting("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            _raise_unwritable(exc)
            raise
        finally:
            # Begun even if this writer was cancelled meanwhile: the group exists, to be committed.
            if self._writer.in_transaction:
                self._group = _Group(asyncio.get_running_loop().create_future())
        assert self._group is not None
        return self._group

    def _commit_abandoned_group(self) -> None:
        """A writer gave up waiting for the lock: if the writers before it left the commit to it, commit."""
        if self._group is not None and self._waiting == 0:
            task = asyncio.get_running_loop().create_task(self._commit_when_idle(), name="store-group-commit")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _commit_when_idle(self) -> None:
        async with self._lock:
            if self._group is not None and self._waiting == 0:
                await _uninterrupted(self._commit_group())

    async def _undo_savepoint(self, group: _Group) -> None:
        """Undo one change of the group; if the transaction itself is gone, the whole group fails."""
        try:
            await self._writer.execute("ROLLBACK TO change")
            await self._writer.execute("RELEASE change")
        except sqlite3.Error:
            await self._fail_group(group)

    async def _commit_group(self) -> None:
        group, self._group = self._group, None
        assert group is not None
        try:
            for action in group.before_commit:
                await action()
            await self._writer.execute_waiting("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - every change of the group learns why
            await self._rollback()
            error: BaseException = exc
            if not isinstance(exc, Exception):
                error = StoreUnwritable("The commit was interrupted; nothing in it was kept.")
            elif isinstance(exc, sqlite3.Error):
                try:
                    _raise_unwritable(exc)
                except ReadOnly as unwritable:
                    error = unwritable
            group.committed.set_exception(error)
            group.committed.exception()  # marked retrieved: a member may have been cancelled
            return
        group.committed.set_result(None)

    async def _fail_group(self, group: _Group) -> None:
        if self._group is group:
            self._group = None
        await self._rollback()
        if not group.committed.done():
            group.committed.set_exception(StoreUnwritable("The store lost a transaction; nothing in it was kept."))
            group.committed.exception()

    async def _rollback(self) -> None:
        if self._writer.in_transaction:
            # SQLite may have rolled back by itself (it does after some I/O errors).
            with contextlib.suppress(sqlite3.Error):
                await self._writer.execute("ROLLBACK")

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._reader.close()
        await self._lookups.close()
        await self._writer.close()

    async def ping(self) -> None:
        try:
            async with self._reader.execute("SELECT 1") as cur:
                await cur.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise StoreUnavailable("The database cannot be reached.") from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return await _first_row(self._reader, sql, params)

    async def _by_key(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """One row found through an index: read in place, without a thread round trip."""
        return await _first_row(self._lookups, sql, params)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def get_agency(self, agency_id: str) -> Agency | None:
        row = await self._by_key("SELECT * FROM agencies WHERE id = ?", (agency_id,))
        return read_agency(row) if row else None

    async def list_agencies(self) -> list[Agency]:
        return [read_agency(r) for r in await self._all("SELECT * FROM agencies ORDER BY name")]

    async def get_member(self, member_id: str) -> Member | None:
        row = await self._by_key("SELECT * FROM members WHERE id = ?", (member_id,))
        return read_member(row) if row else None

    async def list_members(self, agency_id: str | None = None) -> list[Member]:
        if agency_id is None:
            rows = await self._all("SELECT * FROM members ORDER BY agency_id, display_name")
        else:
            rows = await self._all("SELECT * FROM members WHERE agency_id = ? ORDER BY display_name", (agency_id,))
        return [read_member(r) for r in rows]

    async def count_members(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM members")
        return int(row[0]) if row else 0

    async def nonce_seen(self, key_id: str, nonce: str) -> bool:
        row = await self._by_key("SELECT 1 FROM request_nonces WHERE key_id = ? AND nonce = ?", (key_id, nonce))
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
        clauses, params = ["active = 1"], []
        if after is not None:
            clauses.append("(created, id) > (?, ?)")
            params += [after.after_created, after.after_id]
        if agency_id is not None:
            clauses.append("agency_id = ?")
            params.append(agency_id)
        if member_ids is not None:
            wanted = list(dict.fromkeys(member_ids))
            if not wanted:
                return []
            clauses.append(f"id IN ({', '.join('?' for _ in wanted)})")
            params += wanted
        if roles:
            chosen = sorted(r.value for r in roles)
            marks = ", ".join("?" for _ in chosen)
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(members.roles) WHERE value IN ({marks}))")  # noqa: S608 - only placeholders
            params += chosen
        rows = await self._all(
            f"SELECT * FROM members WHERE {' AND '.join(clauses)} ORDER BY created, id LIMIT ?",  # noqa: S608 - fixed clauses, values bound
            [*params, limit],
        )
        return [read_member(r) for r in rows]

    async def keys_of_members(self, member_ids: Sequence[str]) -> dict[str, list[MemberKey]]:
        found: dict[str, list[MemberKey]] = {}
        wanted = list(dict.fromkeys(member_ids))
        # Chunked to stay well inside SQLite's limit on bound parameters.
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = await self._all(
                f"SELECT * FROM member_keys WHERE member_id IN ({', '.join('?' for _ in chunk)})"  # noqa: S608 - only placeholders are interpolated
                " ORDER BY created, key_id",
                chunk,
            )
            for row in rows:
                key = read_key(row)
                found.setdefault(key.member_id, []).append(key)
        return found

    async def agencies_page(self, limit: int, after: Page | None = None) -> list[Agency]:
        if after is None:
            rows = await self._all("SELECT * FROM agencies ORDER BY name, id LIMIT ?", (limit,))
        else:
            rows = await self._all(
                "SELECT * FROM agencies WHERE (name, id) > (?, ?) ORDER BY name, id LIMIT ?",
                (after.after_created, after.after_id, limit),
            )
        return [read_agency(r) for r in rows]

    async def get_key(self, key_id: str) -> MemberKey | None:
        row = await self._by_key("SELECT * FROM member_keys WHERE key_id = ?", (key_id,))
        return read_key(row) if row else None

    async def member_keys(self, member_id: str) -> list[MemberKey]:
        rows = await self._all("SELECT * FROM member_keys WHERE member_id = ? ORDER BY created", (member_id,))
        return [read_key(r) for r in rows]

    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        row = await self._by_key("SELECT * FROM packets WHERE id = ?", (packet_id,))
        return read_packet(row) if row else None

    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        rows = await self._all("SELECT * FROM deliveries WHERE packet_id = ? ORDER BY recipient_member", (packet_id,))
        return [read_delivery(r) for r in rows]

    async def inbox(
        self, member_id: str, limit: int, after: Page | None, states: frozenset[DeliveryState]
    ) -> list[tuple[PacketRecord, DeliveryRecord]]:
        page, params = _page_clause(after, "d.packet_created", "d.packet_id")
        wanted = sorted(s.value for s in states)
        state_clause = f" AND d.status IN ({', '.join('?' for _ in wanted)})"
        rows = await self._all(
            "SELECT p.*, d.packet_id AS d_packet_id, d.recipient_member AS d_recipient_member,"  # noqa: S608 - fixed clauses, values bound
            " d.recipient_agency AS d_recipient_agency, d.encryption_key AS d_encryption_key,"
            " d.sealed_key AS d_sealed_key, d.status AS d_status, d.delivered_at AS d_delivered_at,"
            " d.opened_at AS d_opened_at, d.acknowledged_at AS d_acknowledged_at,"
            " d.ack_signature AS d_ack_signature, d.ack_key AS d_ack_key, d.reported_at AS d_reported_at,"
            " d.confirmed_at AS d_confirmed_at, d.updated AS d_updated"
            " FROM deliveries d JOIN packets p ON p.id = d.packet_id"
            " WHERE d.recipient_member = ?"
            # Recalled while held for approval: it never reached the recipient.
            " AND NOT (d.status = 'recalled' AND d.delivered_at IS NULL)"
            f"{state_clause}{page} ORDER BY d.packet_created DESC, d.packet_id DESC LIMIT ?",
            [member_id, *wanted, *params, limit],
        )
        return [(read_packet(r), read_delivery(Prefixed(r, "d_"))) for r in rows]

    async def outbox(
        self, member_id: str, limit: int, after: Page | None = None, states: frozenset[PacketState] | None = None
    ) -> list[PacketRecord]:
        page, params = _page_clause(after, "created", "id")
        wanted = sorted(s.value for s in states) if states else None
        state_clause = f" AND status IN ({', '.join('?' for _ in wanted)})" if wanted else ""
        rows = await self._all(
            f"SELECT * FROM packets WHERE sender_member = ?{state_clause}{page}"  # noqa: S608 - fixed clauses
            " ORDER BY created DESC, id DESC LIMIT ?",
            [member_id, *(wanted or []), *params, limit],
        )
        return [read_packet(r) for r in rows]

    async def packets_awaiting_approval(
        self, agency_id: str, limit: int, after: Page | None, states: frozenset[ApprovalState]
    ) -> list[PacketRecord]:
        page, params = _page_clause(after, "created", "id")
        wanted = sorted(s.value for s in states)
        rows = await self._all(
            f"SELECT * FROM packets WHERE sender_agency = ? AND approval_state IN ({', '.join('?' for _ in wanted)})"  # noqa: S608
            f"{page} ORDER BY created DESC, id DESC LIMIT ?",
            [agency_id, *wanted, *params, limit],
        )
        return [read_packet(r) for r in rows]

    async def statements_for(self, packet_id: str, recipient_member: str | None = None) -> list[LoopStatement]:
        if recipient_member is None:
            rows = await self._all(
                "SELECT * FROM loop_statements WHERE packet_id = ? ORDER BY created, id", (packet_id,)
            )
        else:
            rows = await self._all(
                "SELECT * FROM loop_statements WHERE packet_id = ? AND recipient_member = ? ORDER BY created, id",
                (packet_id, recipient_member),
            )
        return [read_statement(r) for r in rows]

    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        row = await self._by_key("SELECT * FROM escalations WHERE id = ?", (escalation_id,))
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
        def among(column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
            if not values:
                return "0", []
            return f"{column} IN ({', '.join('?' for _ in values)})", list(values)

        parts = [
            among("owed_to_member", members),
            among("owed_by_member", members),
            among("owed_to_agency", agencies_as_sender),
            among("owed_by_agency", agencies_as_owing),
        ]
        who = " OR ".join(clause for clause, _ in parts)
        params = [value for _, values in parts for value in values]
        page, page_params = _page_clause(after, "raised_at", "id")
        still_open = " AND acknowledged_at IS NULL AND resolved_at IS NULL" if open_only else ""
        rows = await self._all(
            f"SELECT * FROM escalations WHERE ({who}){still_open}{page} ORDER BY raised_at DESC, id DESC LIMIT ?",  # noqa: S608
            [*params, *page_params, limit],
        )
        return [read_escalation(r) for r in rows]

    async def oldest_due_obligation(self, now: str) -> tuple[int, str | None]:
        row = await self._one("SELECT COUNT(*), MIN(due) FROM obligations WHERE state = 'open' AND due <= ?", (now,))
        return (int(row[0]), row[1]) if row else (0, None)

    async def obligations_for(self, packet_id: str) -> list[Obligation]:
        rows = await self._all("SELECT * FROM obligations WHERE packet_id = ? ORDER BY due, id", (packet_id,))
        return [read_obligation(r) for r in rows]

    async def get_request(self, request_id: str) -> InfoRequest | None:
        row = await self._by_key("SELECT * FROM info_requests WHERE id = ?", (request_id,))
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
        sent = ("requester_member = ?", [member_id])
        received = (
            "(holder_agency = ? AND EXISTS (SELECT 1 FROM json_each(info_requests.sealed) WHERE json_each.key = ?))",
            [agency_id, member_id],
        )
        chosen = {"sent": [sent], "received": [received], "all": [sent, received]}[role]
        who = " OR ".join(clause for clause, _ in chosen)
        params: list[Any] = [value for _, values in chosen for value in values]
        wanted = sorted(s.value for s in states) if states else None
        state_clause = f" AND state IN ({', '.join('?' for _ in wanted)})" if wanted else ""
        page, page_params = _page_clause(after, "created", "id")
        rows = await self._all(
            f"SELECT * FROM info_requests WHERE ({who}){state_clause}{page}"  # noqa: S608 - fixed clauses, values bound
            " ORDER BY created DESC, id DESC LIMIT ?",
            [*params, *(wanted or []), *page_params, limit],
        )
        return [read_request(r) for r in rows]

    async def share_decisions(
        self, *, member_id: str | None, agency_id: str | None, limit: int, after: Page | None = None
    ) -> list[ShareDecision]:
        if member_id is not None:
            who, params = "member = ?", [member_id]
        elif agency_id is not None:
            who, params = "agency = ?", [agency_id]
        else:
            return []
        page, page_params = _page_clause(after, "created", "id")
        rows = await self._all(
            f"SELECT * FROM share_decisions WHERE {who}{page} ORDER BY created DESC, id DESC LIMIT ?",  # noqa: S608
            [*params, *page_params, limit],
        )
        return [read_share_decision(r) for r in rows]

    async def packets_for_subject(self, pseudonym: str) -> list[PacketRecord]:
        rows = await self._all("SELECT * FROM packets WHERE subject = ? ORDER BY created, id", (pseudonym,))
        return [read_packet(r) for r in rows]

    async def subject_ledger(
        self, pseudonym: str, start: int, limit: int, stop: int | None = None
    ) -> list[tuple[int, bytes, bytes]]:
        rows = await self._all(
            "SELECT seq, entry, leaf_hash FROM ledger_entries WHERE seq >= ? AND seq < ? AND seq IN ("
            " SELECT seq FROM ledger_refs WHERE kind = 'subject' AND value = ?"
            " UNION SELECT r.seq FROM packets p JOIN ledger_refs r ON r.kind = 'packet' AND r.value = p.id"
            "   WHERE p.subject = ?"
            " UNION SELECT r.seq FROM info_requests q JOIN ledger_refs r ON r.kind = 'request' AND r.value = q.id"
            "   WHERE q.subject = ?"
            " UNION SELECT r.seq FROM share_decisions d"
            "   JOIN ledger_refs r ON r.kind = 'request' AND r.value = d.request_id WHERE d.subject = ?"
            ") ORDER BY seq LIMIT ?",
            (start, 2**62 if stop is None else stop, pseudonym, pseudonym, pseudonym, pseudonym, limit),
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    async def ledger_size(self) -> int:
        row = await self._by_key("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries")
        return int(row[0]) if row else 0

    async def ledger_entries(self, start: int, stop: int) -> list[tuple[int, bytes, bytes]]:
        rows = await self._all(
            "SELECT seq, entry, leaf_hash FROM ledger_entries WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, stop),
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    async def search_ledger(self, filters: Mapping[str, str], start: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        clauses = ["seq >= ?"]
        params: list[Any] = [start]
        for kind in ("type", "packet", "member", "agency", "request", "subject"):
            if filters.get(kind):
                clauses.append("seq IN (SELECT seq FROM ledger_refs WHERE kind = ? AND value = ?)")
                params += [kind, filters[kind]]
        if filters.get("since") or filters.get("until"):
            clauses.append("seq IN (SELECT seq FROM ledger_refs WHERE kind = 'time' AND value >= ? AND value < ?)")
            params += [filters.get("since") or "", filters.get("until") or "\uffff"]
        rows = await self._all(
            f"SELECT seq, entry, leaf_hash FROM ledger_entries WHERE {' AND '.join(clauses)}"  # noqa: S608 - fixed clauses, values bound
            " ORDER BY seq LIMIT ?",
            [*params, limit],
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
        return await _nodes(self._reader, keys)

    async def latest_tree_head(self) -> TreeHead | None:
        row = await self._by_key("SELECT * FROM tree_heads ORDER BY size DESC LIMIT 1")
        return read_head(row) if row else None

    async def tree_head(self, size: int) -> TreeHead | None:
        row = await self._by_key("SELECT * FROM tree_heads WHERE size = ?", (size,))
        return read_head(row) if row else None

    async def tree_heads(self, start_size: int = 0, limit: int | None = None) -> list[TreeHead]:
        rows = await self._all(
            "SELECT * FROM tree_heads WHERE size >= ? ORDER BY size LIMIT ?",
            (start_size, -1 if limit is None else limit),
        )
        return [read_head(r) for r in rows]


async def _migrate(db: InlineConnection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StoreUnavailable(
            f"The database is at schema version {version}, newer than this software knows ({len(MIGRATIONS)})."
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await db.execute_waiting("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                await db.execute(statement)
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute_waiting("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (which hold ';') whole."""
    out: list[str] = []
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                out.append(buffer.strip())
            buffer = ""
    return out
