"""Writes inside one PostgreSQL transaction (READ COMMITTED), on one pooled connection.

Every query here means what its counterpart in exchange.store.sqlite means. What SQLite gets from
its one writer, PostgreSQL gets row by row, since several instances write at once:

* a row the service reads in order to decide a change (``get_packet``, ``get_delivery``...) is read
  ``FOR NO KEY UPDATE``, so it is the newest committed version and nobody else changes it until this
  transaction ends: a racing transition waits, then reads the new state and is refused by the
  service's own rules, exactly as it would behind SQLite's write lock;
* every transition is still a compare-and-set (``UPDATE ... WHERE state = expected``), which under
  READ COMMITTED re-reads a row another transaction changed meanwhile, so of two racers one wins;
* the ledger's append lock is a transaction-scoped advisory lock held to COMMIT or ROLLBACK.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

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
    RequestDecline,
    ShareDecision,
)
from exchange.errors import Conflict, KeyInUse, StateChanged
from exchange.ledger.append import Appended
from exchange.ledger.heads import TreeHead
from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, RequestState
from exchange.store.base import Transaction
from exchange.store.rows import (
    PACKET_COLUMNS,
    decline_text,
    packet_values,
    purpose_list,
    read_delivery,
    read_escalation,
    read_obligation,
    read_packet,
    read_request,
    read_statement,
    sealed_details,
)

#: The ledger's append lock (pg_advisory_xact_lock): b"sgxledgr" as a signed 64-bit key. Fixed, so every
#: instance sharing the database takes the same lock; another application using advisory locks on the
#: same database must not use it.
LEDGER_LOCK = int.from_bytes(b"sgxledgr", "big", signed=True)

_PACKET_MARKS = ", ".join(f"${n}" for n in range(1, 26))


def changed_rows(status: str) -> int:
    """The row count of a command tag (``UPDATE 1``, ``INSERT 0 1``, ``DELETE 3``)."""
    return int(status.rsplit(" ", 1)[-1])


def _changed_one(status: str, what: str) -> None:
    """The compare-and-set rule: exactly one row must have moved from the expected state."""
    if changed_rows(status) != 1:
        raise StateChanged(f"The {what} changed while this request was being handled; nothing was done.")


async def nodes(db: Any, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored ledger nodes among ``keys``, read through ``db`` (a connection or the pool)."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    rows = await db.fetch(
        "SELECT n.level, n.idx, n.hash FROM ledger_nodes n"
        " JOIN unnest($1::bigint[], $2::bigint[]) AS k(level, idx) ON n.level = k.level AND n.idx = k.idx",
        [level for level, _ in wanted],
        [idx for _, idx in wanted],
    )
    return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}


def _insert(table: str, names: Sequence[str]) -> str:
    marks = ", ".join(f"${n}" for n in range(1, len(names) + 1))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"  # noqa: S608 - fixed names


class PostgresTransaction(Transaction):
    def __init__(self, db: asyncpg.Connection) -> None:
        self._db = db
        #: Run just before COMMIT, each once (see Transaction.before_commit).
        self.before_commit_actions: list[Callable[[], Awaitable[None]]] = []

    def before_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        if action not in self.before_commit_actions:
            self.before_commit_actions.append(action)

    async def insert_agency(self, agency: Agency) -> None:
        await self._db.execute(
            "INSERT INTO agencies (id, name, kind, created, send_purposes, receive_purposes)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            agency.id,
            agency.name,
            agency.kind.value,
            agency.created,
            purpose_list(agency.send_purposes),
            purpose_list(agency.receive_purposes),
        )

    async def set_agency_purposes(
        self, agency_id: str, send: frozenset[str] | None, receive: frozenset[str] | None
    ) -> None:
        await self._db.execute(
            "UPDATE agencies SET send_purposes = $1, receive_purposes = $2 WHERE id = $3",
            purpose_list(send),
            purpose_list(receive),
            agency_id,
        )

    async def insert_member(self, member: Member) -> None:
        await self._db.execute(
            "INSERT INTO members (id, agency_id, display_name, roles, created, active) VALUES ($1, $2, $3, $4, $5, $6)",
            member.id,
            member.agency_id,
            member.display_name,
            json.dumps(sorted(r.value for r in member.roles)),
            member.created,
            member.active,
        )

    async def insert_key(self, key: MemberKey) -> None:
        try:
            await self._db.execute(
                "INSERT INTO member_keys (key_id, member_id, use, public_key, not_before, not_after,"
                " revoked_at, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                key.key_id,
                key.member_id,
                key.use.value,
                key.public_bytes,
                key.not_before,
                key.not_after,
                key.revoked_at,
                key.created,
            )
        except asyncpg.IntegrityConstraintViolationError:
            raise KeyInUse(
                "This key is already registered on the exchange. Every member makes their own keys"
                " ('exchange keys new'); one key never serves two accounts."
            ) from None

    async def revoke_key(self, key_id: str, when: str) -> None:
        await self._db.execute(
            "UPDATE member_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL", when, key_id
        )

    async def remember_nonce(self, key_id: str, nonce: str, expires: str) -> bool:
        # A nonce another instance is storing at this moment makes this insert wait for its commit,
        # then do nothing: a replay sent to a second instance is refused there too.
        status = await self._db.execute(
            "INSERT INTO request_nonces (key_id, nonce, expires) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            key_id,
            nonce,
            expires,
        )
        return changed_rows(status) == 1

    async def purge_nonces(self, before: str) -> None:
        await self._db.execute("DELETE FROM request_nonces WHERE expires < $1", before)

    async def insert_packet(self, packet: PacketRecord) -> None:
        try:
            await self._db.execute(
                f"INSERT INTO packets ({PACKET_COLUMNS}) VALUES ({_PACKET_MARKS})",  # noqa: S608 - fixed columns
                *packet_values(packet),
            )
        except asyncpg.IntegrityConstraintViolationError:
            raise Conflict("A packet with this id or manifest was already submitted.") from None

    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        row = await self._db.fetchrow("SELECT * FROM packets WHERE id = $1 FOR NO KEY UPDATE", packet_id)
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
        status = await self._db.execute(
            "UPDATE packets SET status = $1, superseded_by = COALESCE($2, superseded_by),"
            " corrected_fields = COALESCE($3, corrected_fields) WHERE id = $4 AND status = $5",
            new.value,
            superseded_by,
            fields,
            packet_id,
            expected.value,
        )
        _changed_one(status, "packet")

    async def set_approval_state(
        self, packet_id: str, expected: ApprovalState, new: ApprovalState, approval: Mapping[str, Any] | None
    ) -> None:
        status = await self._db.execute(
            "UPDATE packets SET approval_state = $1, approval = COALESCE($2, approval)"
            " WHERE id = $3 AND approval_state = $4",
            new.value,
            json.dumps(dict(approval)) if approval else None,
            packet_id,
            expected.value,
        )
        _changed_one(status, "approval")

    async def set_packet_dues(self, packet_id: str, ack_due: str | None, action_due: str | None) -> None:
        await self._db.execute(
            "UPDATE packets SET ack_due = $1, action_due = $2 WHERE id = $3", ack_due, action_due, packet_id
        )

    async def remove_content(self, packet_id: str, when: str) -> None:
        await self._db.execute(
            "UPDATE packets SET body = ''::bytea, content_removed_at = $1 WHERE id = $2 AND content_removed_at IS NULL",
            when,
            packet_id,
        )
        await self._db.execute("UPDATE deliveries SET sealed_key = ''::bytea WHERE packet_id = $1", packet_id)
        await self._db.execute("UPDATE loop_statements SET sealed_note = NULL WHERE packet_id = $1", packet_id)

    async def remove_sealed_key(self, packet_id: str, member_id: str) -> None:
        await self._db.execute(
            "UPDATE deliveries SET sealed_key = ''::bytea WHERE packet_id = $1 AND recipient_member = $2",
            packet_id,
            member_id,
        )

    async def insert_delivery(self, delivery: DeliveryRecord) -> None:
        await self._db.execute(
            "INSERT INTO deliveries (packet_id, recipient_member, recipient_agency, encryption_key, sealed_key,"
            " status, delivered_at, opened_at, acknowledged_at, ack_signature, updated, packet_created)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, (SELECT created FROM packets WHERE id = $1))",
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
        )

    async def get_delivery(self, packet_id: str, member_id: str) -> DeliveryRecord | None:
        row = await self._db.fetchrow(
            "SELECT * FROM deliveries WHERE packet_id = $1 AND recipient_member = $2 FOR NO KEY UPDATE",
            packet_id,
            member_id,
        )
        return read_delivery(row) if row is not None else None

    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        rows = await self._db.fetch(
            "SELECT * FROM deliveries WHERE packet_id = $1 ORDER BY recipient_member FOR NO KEY UPDATE", packet_id
        )
        return [read_delivery(r) for r in rows]

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
        params: list[Any] = [new.value, when, *times.values()]
        sets = ["status = $1", "updated = $2"] + [
            f"{name} = COALESCE({name}, ${n})" for n, name in enumerate(times, start=3)
        ]
        if ack_signature is not None:
            sets += [f"ack_signature = ${len(params) + 1}", f"ack_key = ${len(params) + 2}"]
            params += [ack_signature, ack_key]
        n = len(params)
        status = await self._db.execute(
            f"UPDATE deliveries SET {', '.join(sets)}"  # noqa: S608 - names from DELIVERY_TIMES
            f" WHERE packet_id = ${n + 1} AND recipient_member = ${n + 2} AND status = ${n + 3}",
            *params,
            packet_id,
            member_id,
            expected.value,
        )
        _changed_one(status, "packet's delivery")

    async def insert_statement(self, statement: LoopStatement) -> None:
        names = list(LoopStatement.__dataclass_fields__)
        await self._db.execute(_insert("loop_statements", names), *[getattr(statement, n) for n in names])

    async def statements_for(self, packet_id: str, recipient_member: str) -> list[LoopStatement]:
        rows = await self._db.fetch(
            "SELECT * FROM loop_statements WHERE packet_id = $1 AND recipient_member = $2 ORDER BY created, id",
            packet_id,
            recipient_member,
        )
        return [read_statement(r) for r in rows]

    async def insert_request(self, request: InfoRequest) -> None:
        try:
            await self._db.execute(
                "INSERT INTO info_requests (id, requester_member, requester_agency, holder_agency, holder_member,"
                " document, digest, key_id, signature, sealed, purpose, urgency, subject, state, created, answer_due)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
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
            )
        except asyncpg.IntegrityConstraintViolationError:
            raise Conflict("A request with this id or document was already submitted.") from None

    async def get_request(self, request_id: str) -> InfoRequest | None:
        row = await self._db.fetchrow("SELECT * FROM info_requests WHERE id = $1 FOR NO KEY UPDATE", request_id)
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
        status = await self._db.execute(
            # A correction of the answer replaces answered_by; answered_at stays the first answer's time.
            "UPDATE info_requests SET state = $1, answered_by = COALESCE($2::text, answered_by),"
            " answered_at = CASE WHEN $2::text IS NULL THEN answered_at ELSE COALESCE(answered_at, $3) END,"
            " decline = COALESCE($4, decline), decline_sealed = COALESCE($5, decline_sealed)"
            " WHERE id = $6 AND state = $7",
            new.value,
            answered_by,
            when,
            decline_text(decline) if decline is not None else None,
            decline.explanation.sealed if decline is not None else None,
            request_id,
            expected.value,
        )
        _changed_one(status, "request")

    async def insert_share_decision(self, decision: ShareDecision) -> None:
        try:
            await self._db.execute(
                "INSERT INTO share_decisions (id, member, agency, document, key_id, signature, sealed_note, subject,"
                " request_id, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            )
        except asyncpg.IntegrityConstraintViolationError:
            raise Conflict("A decision with this id was already recorded.") from None

    async def add_obligation(self, obligation: Obligation) -> None:
        names = list(Obligation.__dataclass_fields__)
        await self._db.execute(
            _insert("obligations", names) + " ON CONFLICT (id) DO NOTHING", *[getattr(obligation, n) for n in names]
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
        clauses = ["kind = ANY($1::text[])", "state IN ('open', 'fired')"]
        params: list[Any] = [list(kinds)]
        for column, value in (
            ("packet_id", packet_id),
            ("request_id", request_id),
            ("owed_by_member", owed_by_member),
        ):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        rows = await self._db.fetch(
            f"SELECT id, state FROM obligations WHERE {' AND '.join(clauses)} ORDER BY id FOR NO KEY UPDATE",  # noqa: S608 - fixed clauses
            *params,
        )
        settled = [r[0] for r in rows if r[1] == "open"]
        if settled:
            await self._db.execute(
                "UPDATE obligations SET state = $1, settled_at = $2 WHERE id = ANY($3::text[]) AND state = 'open'",
                state,
                when,
                settled,
            )
        fired = [r[0] for r in rows if r[1] == "fired"]
        if fired:
            # A late answer resolves its escalation; the obligation itself stays "fired" on record.
            await self._db.execute(
                "UPDATE escalations SET resolved_at = $1 WHERE obligation_id = ANY($2::text[]) AND resolved_at IS NULL",
                when,
                fired,
            )
            await self._db.execute(
                "UPDATE obligations SET settled_at = COALESCE(settled_at, $1) WHERE id = ANY($2::text[])", when, fired
            )
        return settled + fired

    async def due_obligations(self, now: str, limit: int) -> list[Obligation]:
        rows = await self._db.fetch(
            "SELECT * FROM obligations WHERE state = 'open' AND due <= $1 ORDER BY due, id LIMIT $2", now, limit
        )
        return [read_obligation(r) for r in rows]

    async def fire_obligation(self, obligation_id: str, when: str) -> bool:
        status = await self._db.execute(
            "UPDATE obligations SET state = 'fired', settled_at = $1 WHERE id = $2 AND state = 'open'",
            when,
            obligation_id,
        )
        return changed_rows(status) == 1

    async def get_obligation(self, obligation_id: str) -> Obligation | None:
        row = await self._db.fetchrow("SELECT * FROM obligations WHERE id = $1 FOR NO KEY UPDATE", obligation_id)
        return read_obligation(row) if row is not None else None

    async def settle_obligation(self, obligation_id: str, state: str, when: str) -> bool:
        if state not in ("met", "cancelled"):
            raise ValueError(f"an obligation is settled as met or cancelled, not {state!r}")
        status = await self._db.execute(
            "UPDATE obligations SET state = $1, settled_at = $2 WHERE id = $3 AND state = 'open'",
            state,
            when,
            obligation_id,
        )
        return changed_rows(status) == 1

    async def info_request_state(self, request_id: str) -> str | None:
        value = await self._db.fetchval("SELECT state FROM info_requests WHERE id = $1", request_id)
        return str(value) if value is not None else None

    async def insert_escalation(self, escalation: Escalation) -> None:
        names = list(Escalation.__dataclass_fields__)
        await self._db.execute(_insert("escalations", names), *[getattr(escalation, n) for n in names])

    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        row = await self._db.fetchrow("SELECT * FROM escalations WHERE id = $1 FOR NO KEY UPDATE", escalation_id)
        return read_escalation(row) if row is not None else None

    async def acknowledge_escalation(self, escalation_id: str, member_id: str, when: str) -> bool:
        status = await self._db.execute(
            "UPDATE escalations SET acknowledged_at = $1, acknowledged_by = $2"
            " WHERE id = $3 AND acknowledged_at IS NULL",
            when,
            member_id,
            escalation_id,
        )
        return changed_rows(status) == 1

    async def take_lease(self, name: str, holder: str, now: str, expires: str) -> bool:
        # Two instances taking a free lease at once: the second insert waits for the first's commit,
        # then finds the row and the WHERE (checked on the committed row) refuses it.
        status = await self._db.execute(
            "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
            " WHERE leases.holder = excluded.holder OR leases.expires <= $4",
            name,
            holder,
            expires,
            now,
        )
        return changed_rows(status) == 1

    async def release_lease(self, name: str, holder: str) -> None:
        await self._db.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

    async def lock_ledger(self) -> int:
        # One round trip: the function takes the lock, then reads the size in a statement of its own, which
        # under READ COMMITTED sees every entry committed by the lock's previous holder (migration 2).
        size = await self._db.fetchval("SELECT exchange_lock_ledger($1)", LEDGER_LOCK)
        return int(size)

    async def ledger_frontier(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return await nodes(self._db, keys)

    async def store_ledger_entries(self, appended: Sequence[Appended]) -> None:
        # One statement for every row of every entry: the ledger lock is held until the commit, so each
        # round trip inside it is one every other instance's change waits for.
        refs = [(kind, value, a.seq) for a in appended for kind, value in a.refs]
        created = [node for a in appended for node in a.nodes]
        await self._db.execute(
            "WITH entries AS ("
            " INSERT INTO ledger_entries (seq, entry, leaf_hash)"
            " SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])"
            "), refs AS ("
            " INSERT INTO ledger_refs (kind, value, seq) SELECT * FROM unnest($4::text[], $5::text[], $6::bigint[])"
            ") INSERT INTO ledger_nodes (level, idx, hash)"
            " SELECT * FROM unnest($7::bigint[], $8::bigint[], $9::bytea[])",
            [a.seq for a in appended],
            [a.entry for a in appended],
            [a.leaf_hash for a in appended],
            [kind for kind, _, _ in refs],
            [value for _, value, _ in refs],
            [seq for _, _, seq in refs],
            [level for level, _, _ in created],
            [index for _, index, _ in created],
            [digest for _, _, digest in created],
        )

    async def insert_tree_head(self, head: TreeHead) -> None:
        await self._db.execute(
            "INSERT INTO tree_heads (size, root_hash, timestamp, key_id, signature) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (size) DO NOTHING",
            head.size,
            head.root_hash,
            head.timestamp,
            head.key_id,
            head.signature,
        )
