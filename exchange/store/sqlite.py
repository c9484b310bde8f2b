"""The embedded default store: SQLite through aiosqlite, WAL mode, ``synchronous=FULL``.

One connection writes, serialised by a lock and ``BEGIN IMMEDIATE`` (the datasette pattern);
another reads, so a read never sees another coroutine's uncommitted transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from exchange.domain import (
    Agency,
    AgencyKind,
    DeliveryRecord,
    DeliveryStatus,
    KeyUse,
    Member,
    MemberKey,
    PacketRecord,
    PacketStatus,
    Role,
)
from exchange.errors import Conflict, StoreUnavailable
from exchange.ledger import merkle, tree
from exchange.ledger.heads import TreeHead
from exchange.ledger.index import entry_refs
from exchange.store.base import Store, Transaction
from exchange.store.migrations import MIGRATIONS

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


def _purposes(text: str | None) -> frozenset[str] | None:
    return frozenset(json.loads(text)) if text is not None else None


def _purpose_list(purposes: frozenset[str] | None) -> str | None:
    return json.dumps(sorted(purposes)) if purposes is not None else None


def _agency(row: sqlite3.Row) -> Agency:
    return Agency(
        row["id"],
        row["name"],
        AgencyKind(row["kind"]),
        row["created"],
        _purposes(row["send_purposes"]),
        _purposes(row["receive_purposes"]),
    )


def _member(row: sqlite3.Row) -> Member:
    return Member(
        row["id"],
        row["agency_id"],
        row["display_name"],
        frozenset(Role(r) for r in json.loads(row["roles"])),
        row["created"],
        bool(row["active"]),
    )


def _key(row: sqlite3.Row) -> MemberKey:
    return MemberKey(
        row["key_id"],
        row["member_id"],
        KeyUse(row["use"]),
        bytes(row["public_key"]),
        row["not_before"],
        row["not_after"],
        row["revoked_at"],
        row["created"],
    )


def _packet(row: sqlite3.Row) -> PacketRecord:
    return PacketRecord(
        id=row["id"],
        sender_member=row["sender_member"],
        sender_agency=row["sender_agency"],
        manifest=bytes(row["manifest"]),
        manifest_digest=row["manifest_digest"],
        signature=bytes(row["signature"]),
        body=bytes(row["body"]),
        purpose=row["purpose"],
        kind=row["kind"],
        urgency=row["urgency"],
        status=PacketStatus(row["status"]),
        created=row["created"],
        approval=json.loads(row["approval"]) if row["approval"] else None,
        ack_due=row["ack_due"],
        action_due=row["action_due"],
        approval_due=row["approval_due"],
    )


def _head(row: sqlite3.Row) -> TreeHead:
    return TreeHead(
        size=int(row["size"]),
        root_hash=bytes(row["root_hash"]),
        timestamp=row["timestamp"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
    )


def _delivery(row: sqlite3.Row) -> DeliveryRecord:
    return DeliveryRecord(
        packet_id=row["packet_id"],
        recipient_member=row["recipient_member"],
        recipient_agency=row["recipient_agency"],
        encryption_key=row["encryption_key"],
        sealed_key=bytes(row["sealed_key"]),
        status=DeliveryStatus(row["status"]),
        delivered_at=row["delivered_at"],
        opened_at=row["opened_at"],
        acknowledged_at=row["acknowledged_at"],
        ack_signature=bytes(row["ack_signature"]) if row["ack_signature"] is not None else None,
    )


async def _nodes(db: aiosqlite.Connection, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
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


class _SqliteTransaction(Transaction):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def insert_agency(self, agency: Agency) -> None:
        await self._db.execute(
            "INSERT INTO agencies (id, name, kind, created, send_purposes, receive_purposes) VALUES (?, ?, ?, ?, ?, ?)",
            (
                agency.id,
                agency.name,
                agency.kind.value,
                agency.created,
                _purpose_list(agency.send_purposes),
                _purpose_list(agency.receive_purposes),
            ),
        )

    async def set_agency_purposes(
        self, agency_id: str, send: frozenset[str] | None, receive: frozenset[str] | None
    ) -> None:
        await self._db.execute(
            "UPDATE agencies SET send_purposes = ?, receive_purposes = ? WHERE id = ?",
            (_purpose_list(send), _purpose_list(receive), agency_id),
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
            raise Conflict("That public key is already registered.") from None

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
                "INSERT INTO packets (id, sender_member, sender_agency, manifest, manifest_digest, signature,"
                " body, purpose, kind, urgency, status, created, approval, ack_due, action_due, approval_due)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    packet.id,
                    packet.sender_member,
                    packet.sender_agency,
                    packet.manifest,
                    packet.manifest_digest,
                    packet.signature,
                    packet.body,
                    packet.purpose,
                    packet.kind,
                    packet.urgency,
                    packet.status.value,
                    packet.created,
                    json.dumps(packet.approval) if packet.approval is not None else None,
                    packet.ack_due,
                    packet.action_due,
                    packet.approval_due,
                ),
            )
        except sqlite3.IntegrityError:
            raise Conflict("A packet with this id or manifest was already submitted.") from None

    async def set_packet_status(
        self, packet_id: str, status: PacketStatus, approval: Mapping[str, Any] | None = None
    ) -> None:
        if approval is None:
            await self._db.execute("UPDATE packets SET status = ? WHERE id = ?", (status.value, packet_id))
        else:
            await self._db.execute(
                "UPDATE packets SET status = ?, approval = ? WHERE id = ?",
                (status.value, json.dumps(dict(approval)), packet_id),
            )

    async def insert_delivery(self, delivery: DeliveryRecord) -> None:
        await self._db.execute(
            "INSERT INTO deliveries (packet_id, recipient_member, recipient_agency, encryption_key, sealed_key,"
            " status, delivered_at, opened_at, acknowledged_at, ack_signature)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                delivery.packet_id,
                delivery.recipient_member,
                delivery.recipient_agency,
                delivery.encryption_key,
                delivery.sealed_key,
                delivery.status.value,
                delivery.delivered_at,
                delivery.opened_at,
                delivery.acknowledged_at,
                delivery.ack_signature,
            ),
        )

    async def update_delivery(
        self,
        packet_id: str,
        member_id: str,
        *,
        status: DeliveryStatus,
        delivered_at: str | None = None,
        opened_at: str | None = None,
        acknowledged_at: str | None = None,
        ack_signature: bytes | None = None,
    ) -> None:
        await self._db.execute(
            "UPDATE deliveries SET status = ?,"
            " delivered_at = COALESCE(?, delivered_at), opened_at = COALESCE(?, opened_at),"
            " acknowledged_at = COALESCE(?, acknowledged_at), ack_signature = COALESCE(?, ack_signature)"
            " WHERE packet_id = ? AND recipient_member = ?",
            (status.value, delivered_at, opened_at, acknowledged_at, ack_signature, packet_id, member_id),
        )

    async def get_delivery(self, packet_id: str, member_id: str) -> DeliveryRecord | None:
        async with self._db.execute(
            "SELECT * FROM deliveries WHERE packet_id = ? AND recipient_member = ?", (packet_id, member_id)
        ) as cur:
            row = await cur.fetchone()
        return _delivery(row) if row is not None else None

    async def append_event(self, build_entry: Callable[[int], bytes]) -> tuple[int, bytes, bytes]:
        async with self._db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries") as cur:
            row = await cur.fetchone()
        seq = int(row[0]) if row is not None else 0
        entry = build_entry(seq)
        leaf = merkle.leaf_hash(entry)
        await self._db.execute(
            "INSERT INTO ledger_entries (seq, entry, leaf_hash) VALUES (?, ?, ?)", (seq, entry, leaf)
        )
        await self._db.executemany(
            "INSERT INTO ledger_refs (kind, value, seq) VALUES (?, ?, ?)",
            [(kind, value, seq) for kind, value in entry_refs(json.loads(entry))],
        )
        # RFC 9162 2.1.1: store every perfect subtree this leaf completes, so any proof later
        # needs only O(log n) stored hashes instead of rehashing the ledger.
        existing = await _nodes(self._db, tree.needed_nodes_for_append(seq))
        added = tree.compute_append(seq, leaf, existing)
        await self._db.executemany("INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)", added)
        return seq, entry, leaf

    async def insert_tree_head(self, head: TreeHead) -> None:
        await self._db.execute(
            "INSERT OR IGNORE INTO tree_heads (size, root_hash, timestamp, key_id, signature) VALUES (?, ?, ?, ?, ?)",
            (head.size, head.root_hash, head.timestamp, head.key_id, head.signature),
        )


class SqliteStore(Store):
    """SQLite store; open with :meth:`open`."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
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
        return cls(path, writer, reader)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_SqliteTransaction]:
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    async def ping(self) -> None:
        try:
            async with self._reader.execute("SELECT 1") as cur:
                await cur.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise StoreUnavailable("The database cannot be reached.") from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._reader.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def get_agency(self, agency_id: str) -> Agency | None:
        row = await self._one("SELECT * FROM agencies WHERE id = ?", (agency_id,))
        return _agency(row) if row else None

    async def list_agencies(self) -> list[Agency]:
        return [_agency(r) for r in await self._all("SELECT * FROM agencies ORDER BY name")]

    async def get_member(self, member_id: str) -> Member | None:
        row = await self._one("SELECT * FROM members WHERE id = ?", (member_id,))
        return _member(row) if row else None

    async def list_members(self, agency_id: str | None = None) -> list[Member]:
        if agency_id is None:
            rows = await self._all("SELECT * FROM members ORDER BY agency_id, display_name")
        else:
            rows = await self._all("SELECT * FROM members WHERE agency_id = ? ORDER BY display_name", (agency_id,))
        return [_member(r) for r in rows]

    async def count_members(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM members")
        return int(row[0]) if row else 0

    async def get_key(self, key_id: str) -> MemberKey | None:
        row = await self._one("SELECT * FROM member_keys WHERE key_id = ?", (key_id,))
        return _key(row) if row else None

    async def member_keys(self, member_id: str) -> list[MemberKey]:
        rows = await self._all("SELECT * FROM member_keys WHERE member_id = ? ORDER BY created", (member_id,))
        return [_key(r) for r in rows]

    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        row = await self._one("SELECT * FROM packets WHERE id = ?", (packet_id,))
        return _packet(row) if row else None

    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        rows = await self._all("SELECT * FROM deliveries WHERE packet_id = ? ORDER BY recipient_member", (packet_id,))
        return [_delivery(r) for r in rows]

    async def inbox(self, member_id: str, limit: int) -> list[tuple[PacketRecord, DeliveryRecord]]:
        deliveries = await self._all(
            "SELECT d.* FROM deliveries d JOIN packets p ON p.id = d.packet_id"
            " WHERE d.recipient_member = ? AND d.status NOT IN ('pending', 'withdrawn')"
            " ORDER BY p.created DESC LIMIT ?",
            (member_id, limit),
        )
        out = []
        for row in deliveries:
            packet = await self.get_packet(row["packet_id"])
            assert packet is not None  # foreign key
            out.append((packet, _delivery(row)))
        return out

    async def outbox(self, member_id: str, limit: int) -> list[PacketRecord]:
        rows = await self._all(
            "SELECT * FROM packets WHERE sender_member = ? ORDER BY created DESC LIMIT ?", (member_id, limit)
        )
        return [_packet(r) for r in rows]

    async def packets_awaiting_approval(self, agency_id: str, limit: int) -> list[PacketRecord]:
        rows = await self._all(
            "SELECT * FROM packets WHERE sender_agency = ? AND (status = 'awaiting_approval'"
            " OR (status = 'delivered' AND approval IS NULL AND approval_due IS NOT NULL))"
            " ORDER BY created LIMIT ?",
            (agency_id, limit),
        )
        return [_packet(r) for r in rows]

    async def ledger_size(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries")
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
        for kind in ("type", "packet", "member", "agency"):
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
        row = await self._one("SELECT * FROM tree_heads ORDER BY size DESC LIMIT 1")
        return _head(row) if row else None

    async def tree_head(self, size: int) -> TreeHead | None:
        row = await self._one("SELECT * FROM tree_heads WHERE size = ?", (size,))
        return _head(row) if row else None

    async def tree_heads(self, start_size: int = 0, limit: int | None = None) -> list[TreeHead]:
        rows = await self._all(
            "SELECT * FROM tree_heads WHERE size >= ? ORDER BY size LIMIT ?",
            (start_size, -1 if limit is None else limit),
        )
        return [_head(r) for r in rows]


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StoreUnavailable(
            f"The database is at schema version {version}, newer than this software knows ({len(MIGRATIONS)})."
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await db.execute("BEGIN IMMEDIATE")
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
        await db.execute("COMMIT")


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
