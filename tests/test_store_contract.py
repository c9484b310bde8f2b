"""The store's contract, held by every engine: the same tests on SQLite and on PostgreSQL.

The PostgreSQL cases run on a fresh database of the run's throwaway cluster (tests/pg_fixtures.py). Two
store objects on one database stand for two instances of the exchange.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from throwaway_pg import ThrowawayPostgres

from exchange import crypto
from exchange.domain import (
    Agency,
    AgencyKind,
    DeliveryRecord,
    Escalation,
    Event,
    InfoRequest,
    KeyUse,
    Member,
    MemberKey,
    Obligation,
    PacketRecord,
    Page,
    Role,
    SealedNote,
)
from exchange.errors import KeyInUse, StateChanged, StoreUnavailable
from exchange.ledger import leaf_hash, root_hash, tree
from exchange.lifecycle import AWAITING_DECISION, RECIPIENT_SEES, DeliveryState, PacketState, RequestState
from exchange.service.context import append_to_ledger
from exchange.store import Store, open_store
from tests.conftest import sql_beside

T0 = "2026-01-01T00:00:00.000Z"


@dataclass
class Engine:
    """One engine's database: open store objects on it (instances) and raw SQL past the store."""

    name: str
    target: str
    stores: list[Store]

    async def instance(self) -> Store:
        """Another store object on the same database, as a second exchange instance would open."""
        store = await open_store(self.target)
        self.stores.append(store)
        return store

    async def raw(self, sql: str) -> None:
        """Run ``sql`` on the database directly, as someone with SQL access would."""
        await sql_beside(self.target, sql)


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """A fresh database of each engine; every store opened on it is closed after the test."""
    target = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    opened = Engine(request.param, target or f"sqlite:{tmp_path / 'exchange.sqlite'}", [])
    try:
        yield opened
    finally:
        for store in opened.stores:
            await store.close()


@pytest.fixture
async def store(engine: Engine) -> Store:
    """The first instance's store on a fresh database of each engine."""
    return await engine.instance()


@pytest.fixture
async def both(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """A SQLite store and a PostgreSQL store, both fresh, to compare results."""
    lite = await open_store(f"sqlite:{tmp_path / 'exchange.sqlite'}")
    try:
        pg = await open_store(postgres_dsn)
    except BaseException:
        await lite.close()
        raise
    try:
        yield lite, pg
    finally:
        await lite.close()
        await pg.close()


# -- a small directory and packets, the same rows for every engine


def agency(n: int, name: str | None = None) -> Agency:
    return Agency(f"agy_{n:02d}", name or f"Agency {n:02d}", AgencyKind.EDUCATION, T0)


def member(n: int, agency_n: int = 1, created: str = T0, roles: frozenset[Role] | None = None) -> Member:
    roles = roles or frozenset({Role.PRACTITIONER})
    return Member(f"mem_{n:02d}", f"agy_{agency_n:02d}", f"Member {n % 3}", roles, created)


def packet(n: int, created: str, sender: int = 1, subject: str | None = None) -> PacketRecord:
    return PacketRecord(
        id=f"pkt_{n:02d}",
        sender_member=f"mem_{sender:02d}",
        sender_agency="agy_01",
        manifest=b'{"m":%d}' % n,
        manifest_digest=f"sha256:{n:02d}",
        signature=b"s" * 64,
        body=b"sealed body",
        purpose="child_protection",
        kind="referral",
        urgency="routine",
        state=PacketState.DELIVERED,
        created=created,
        approval=None,
        ack_due=None,
        action_due=None,
        approval_due=None,
        subject=subject,
    )


def delivery(packet_n: int, recipient: int, state: DeliveryState = DeliveryState.DELIVERED) -> DeliveryRecord:
    return DeliveryRecord(
        f"pkt_{packet_n:02d}", f"mem_{recipient:02d}", "agy_02", "x25519:k", b"sealed key", state, T0, None, None, None
    )


async def seed_directory(store: Store) -> None:
    async with store.write() as tx:
        for n in (1, 2, 3):
            await tx.insert_agency(agency(n, name="Same name" if n != 1 else "Another"))
        for n in range(1, 7):
            created = T0 if n < 4 else "2026-01-02T00:00:00.000Z"
            roles = frozenset({Role.MANAGER}) if n % 2 else frozenset({Role.PRACTITIONER, Role.SAFEGUARDING_LEAD})
            await tx.insert_member(member(n, 1 if n < 4 else 2, created, roles))


async def seed_packets(store: Store) -> None:
    """Packets with equal creation times (the id breaks ties), delivered to two members."""
    await seed_directory(store)
    async with store.write() as tx:
        for n in range(1, 13):
            created = f"2026-01-0{1 + n // 4}T00:00:00.000Z"
            await tx.insert_packet(packet(n, created, sender=1 + n % 2, subject="ab" * 32 if n % 3 == 0 else None))
            for recipient in (4, 5):
                state = DeliveryState.PENDING if n == 7 and recipient == 4 else DeliveryState.DELIVERED
                await tx.insert_delivery(delivery(n, recipient, state))


async def transition(store: Store, gate: asyncio.Event | None = None) -> str:
    """Move pkt_01 from delivered to recalled, recording it; wait for ``gate`` before committing."""
    try:
        async with store.write() as tx:
            await tx.set_packet_state("pkt_01", PacketState.DELIVERED, PacketState.RECALLED)
            await append_to_ledger(tx, [lambda seq: {"seq": seq, "type": "packet.recalled", "packet": "pkt_01"}])
            if gate is not None:
                await gate.wait()
    except StateChanged:
        return "lost"
    return "won"


# -- transactions


async def test_a_failed_change_leaves_neither_state_nor_event(store: Store) -> None:
    """State change and ledger entry commit together or not at all."""
    event = Event("agency.created", None, None)

    async def crash_mid_change() -> None:
        async with store.write() as tx:
            await tx.insert_agency(agency(1))
            await append_to_ledger(tx, [lambda seq: event.entry(seq, "t")])
            raise RuntimeError("crash between the change and the commit")

    with pytest.raises(RuntimeError):
        await crash_mid_change()
    assert await store.list_agencies() == []
    assert await store.ledger_size() == 0
    async with store.write() as tx:
        await tx.insert_agency(agency(1))
        await append_to_ledger(tx, [lambda seq: event.entry(seq, "t")])
    assert [a.id for a in await store.list_agencies()] == ["agy_01"]
    assert await store.ledger_size() == 1


async def test_a_failing_before_commit_action_commits_nothing(store: Store) -> None:
    """An action registered to run before COMMIT that raises rolls the change back and its error propagates."""
    ran: list[str] = []

    async def sync_record() -> None:
        ran.append("sync")

    async def broken_sync() -> None:
        raise OSError("the record log's disk went away")

    async def change_with_broken_sync() -> None:
        async with store.write() as tx:
            await tx.insert_agency(agency(1))
            tx.before_commit(broken_sync)

    with pytest.raises(OSError, match="went away"):
        await change_with_broken_sync()
    assert await store.list_agencies() == []
    async with store.write() as tx:
        await tx.insert_agency(agency(1))
        tx.before_commit(sync_record)
        tx.before_commit(sync_record)
    assert ran == ["sync"]
    assert tx.committed
    assert [a.id for a in await store.list_agencies()] == ["agy_01"]


async def test_duplicate_key_is_key_in_use_and_the_first_stays(store: Store) -> None:
    """Registering the same public key twice is KeyInUse (409), and the first stays intact."""
    await seed_directory(store)
    key = MemberKey("ed25519:x", "mem_01", KeyUse.SIGNING, b"k" * 32, T0, None, None, T0)
    async with store.write() as tx:
        await tx.insert_key(key)
    with pytest.raises(KeyInUse):
        async with store.write() as tx:
            await tx.insert_key(replace(key, member_id="mem_02"))
    assert await store.get_key("ed25519:x") == key
    assert await store.member_keys("mem_02") == []


async def test_a_transition_from_a_state_no_longer_held_is_state_changed(store: Store) -> None:
    """A compare-and-set on a state the row no longer has raises StateChanged and changes nothing."""
    await seed_packets(store)
    assert await transition(store) == "won"
    assert await transition(store) == "lost"
    stored = await store.get_packet("pkt_01")
    assert stored is not None and stored.state is PacketState.RECALLED
    assert await store.ledger_size() == 1


# -- the ledger


async def test_the_ledger_gives_rfc_9162_roots_at_every_size(store: Store) -> None:
    """After many appends the stored perfect subtrees reproduce RFC 9162's root at every size."""
    for _ in range(37):
        async with store.write() as tx:
            await append_to_ledger(tx, [lambda seq: {"seq": seq, "type": "test"}])
    leaves = [leaf for _, _, leaf in await store.ledger_entries(0, 37)]
    for size in range(38):
        nodes = await store.ledger_nodes(tree.needed_nodes_for_root(size))
        assert tree.compute_root(size, nodes) == root_hash(leaves[:size])


async def test_entries_appended_together_make_the_tree_they_make_one_by_one(engine: Engine, store: Store) -> None:
    """A change's entries are appended in one batch (one round trip on PostgreSQL), each next frontier taken
    from the entry before it: batches of every size give RFC 9162's roots at every size, as single appends do."""
    other = await engine.instance()
    sizes = [1, 3, 2, 5, 1, 8, 4, 7, 2]
    for batch in sizes:
        async with store.write() as tx:
            await append_to_ledger(tx, [lambda seq: {"seq": seq, "type": "test"}] * batch)
    for _ in range(sum(sizes)):
        async with other.write() as tx:
            await append_to_ledger(tx, [lambda seq: {"seq": seq, "type": "test"}])
    total = sum(sizes)
    batched = [leaf for _, _, leaf in await store.ledger_entries(0, total)]
    single = [leaf for _, _, leaf in await store.ledger_entries(total, 2 * total)]
    assert [leaf_hash(crypto.canonical_json({"seq": s, "type": "test"})) for s in range(total)] == batched
    for size in range(2 * total + 1):
        nodes = await store.ledger_nodes(tree.needed_nodes_for_root(size))
        assert tree.compute_root(size, nodes) == root_hash((batched + single)[:size])


async def test_the_database_refuses_to_edit_or_delete_ledger_entries(engine: Engine, store: Store) -> None:
    """Triggers make the ledger append-only even for someone with SQL access through the app's schema."""
    async with store.write() as tx:
        await append_to_ledger(tx, [lambda seq: {"seq": seq}])
    errors: tuple[type[BaseException], ...] = (sqlite3.DatabaseError,)
    if engine.name == "postgres":
        import asyncpg

        errors = (asyncpg.PostgresError,)
    for sql in (
        "UPDATE ledger_entries SET entry = ledger_entries.leaf_hash WHERE seq = 0",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_nodes SET hash = ledger_nodes.hash",
    ):
        with pytest.raises(errors, match="append-only"):
            await engine.raw(sql)
    assert await store.ledger_size() == 1


async def test_a_ledger_appended_from_two_instances_stays_gap_free(engine: Engine, store: Store) -> None:
    """Appends racing from two instances make one gap-free sequence whose roots are RFC 9162's."""
    other = await engine.instance()

    async def append(on: Store, n: int) -> int:
        async with on.write() as tx:
            [appended] = await append_to_ledger(tx, [lambda seq: {"seq": seq, "type": "test", "n": n}])
        return appended.seq

    seqs = await asyncio.gather(*(append(store if n % 2 else other, n) for n in range(40)))
    assert sorted(seqs) == list(range(40))
    entries = await other.ledger_entries(0, 100)
    assert [seq for seq, _, _ in entries] == list(range(40))
    leaves = [leaf for _, _, leaf in entries]
    assert leaves == [leaf_hash(entry) for _, entry, _ in entries]
    for size in (1, 2, 3, 8, 13, 32, 40):
        assert tree.compute_root(size, await store.ledger_nodes(tree.needed_nodes_for_root(size))) == root_hash(
            leaves[:size]
        )


async def test_the_ledger_is_byte_for_byte_the_same_on_both_engines(both: tuple[Store, Store]) -> None:
    """Entries appended through append_to_ledger give the same bytes, leaves, nodes, refs and roots."""
    events = [
        Event(
            "packet.delivered",
            f"mem_{n % 3:02d}",
            "agy_01",
            packet=f"pkt_{n % 5:02d}",
            details={"recipient": f"mem_{n % 4:02d}", "subject": "ab" * 32 if n % 7 == 0 else None},
        )
        for n in range(29)
    ]
    for store in both:
        for n, event in enumerate(events):
            async with store.write() as tx:
                await append_to_ledger(tx, [partial(_entry, event, f"2026-01-01T00:00:{n:02d}.000Z")])
    lite, pg = both
    assert await lite.ledger_entries(0, 100) == await pg.ledger_entries(0, 100)
    every_node = [key for size in range(30) for key in tree.needed_nodes_for_root(size)]
    assert await lite.ledger_nodes(every_node) == await pg.ledger_nodes(every_node)
    leaves = [leaf for _, _, leaf in await pg.ledger_entries(0, 100)]
    for size in range(30):
        nodes = await pg.ledger_nodes(tree.needed_nodes_for_root(size))
        assert tree.compute_root(size, nodes) == root_hash(leaves[:size])
    for filters in (
        {"type": "packet.delivered"},
        {"packet": "pkt_03"},
        {"member": "mem_02"},
        {"agency": "agy_01"},
        {"since": "2026-01-01T00:00:10.000Z", "until": "2026-01-01T00:00:20.000Z"},
        {"member": "mem_01", "packet": "pkt_01"},
    ):
        assert await lite.search_ledger(filters, 3, 7) == await pg.search_ledger(filters, 3, 7), filters
    assert [r async for r in lite.iter_ledger(2, 20, batch=4)] == [r async for r in pg.iter_ledger(2, 20, batch=4)]


def _entry(event: Event, time: str, seq: int) -> dict[str, Any]:
    return event.entry(seq, time)


# -- several instances


async def test_of_two_instances_racing_on_one_transition_exactly_one_wins(engine: Engine, store: Store) -> None:
    """Two instances move the same packet at once: one wins, the other gets StateChanged; one ledger entry."""
    await seed_packets(store)
    other = await engine.instance()
    gate = asyncio.Event()
    first = asyncio.create_task(transition(store, gate))
    await asyncio.sleep(0.2)  # the first holds its change open, the second tries meanwhile
    second = asyncio.create_task(transition(other))
    await asyncio.sleep(0.2)
    gate.set()
    assert sorted(await asyncio.gather(first, second)) == ["lost", "won"]
    assert await store.ledger_size() == 1
    stored = await other.get_packet("pkt_01")
    assert stored is not None and stored.state is PacketState.RECALLED


async def test_a_nonce_stored_by_one_instance_is_refused_by_another(engine: Engine, store: Store) -> None:
    """Replay attack across instances: a nonce remembered on one is seen, and refused, on the other."""
    other = await engine.instance()
    async with store.write() as tx:
        assert await tx.remember_nonce("ed25519:k", "n-1", "2026-01-01T00:05:00.000Z")
    assert await other.nonce_seen("ed25519:k", "n-1")
    assert not await other.nonce_seen("ed25519:k", "n-2")
    async with other.write() as tx:
        assert not await tx.remember_nonce("ed25519:k", "n-1", "2026-01-01T00:05:00.000Z")
        assert await tx.remember_nonce("ed25519:k", "n-2", "2026-01-01T00:05:00.000Z")
    async with store.write() as tx:
        await tx.purge_nonces("2026-01-01T00:06:00.000Z")
    assert not await other.nonce_seen("ed25519:k", "n-1")


async def test_a_lease_is_held_by_one_instance_until_released_or_expired(engine: Engine, store: Store) -> None:
    """Background work runs on one instance: the lease is exclusive, renewable, and taken over after expiry."""
    other = await engine.instance()

    async def take(on: Store, holder: str, now: str, expires: str) -> bool:
        async with on.write() as tx:
            return await tx.take_lease("deadlines", holder, now, expires)

    assert await take(store, "a", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")
    assert not await take(other, "b", "2026-01-01T00:00:30Z", "2026-01-01T00:01:30Z")
    assert await take(store, "a", "2026-01-01T00:00:40Z", "2026-01-01T00:01:40Z")  # renewed
    assert not await take(other, "b", "2026-01-01T00:01:30Z", "2026-01-01T00:02:30Z")
    assert await take(other, "b", "2026-01-01T00:01:40Z", "2026-01-01T00:02:40Z")  # expired: taken over
    assert not await take(store, "a", "2026-01-01T00:01:41Z", "2026-01-01T00:02:41Z")
    async with store.write() as tx:
        await tx.release_lease("deadlines", "a")  # not a's any more: nothing happens
    assert not await take(store, "a", "2026-01-01T00:01:42Z", "2026-01-01T00:02:42Z")
    async with other.write() as tx:
        await tx.release_lease("deadlines", "b")
    assert await take(store, "a", "2026-01-01T00:01:43Z", "2026-01-01T00:02:43Z")


async def test_two_instances_taking_a_free_lease_at_once_give_one_holder(engine: Engine, store: Store) -> None:
    """Race: two instances take the same free lease together; exactly one holds it."""
    other = await engine.instance()

    async def take(on: Store, holder: str) -> bool:
        async with on.write() as tx:
            return await tx.take_lease("heads", holder, "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")

    assert sorted(await asyncio.gather(take(store, "a"), take(other, "b"))) == [False, True]


# -- the same listings on both engines


async def _listings(store: Store) -> dict[str, Any]:
    """Every listing, paged, as plain values to compare."""
    out: dict[str, Any] = {
        "agencies": await store.list_agencies(),
        "members": await store.list_members(),
        "members_1": await store.list_members("agy_01"),
        "agencies_page": await store.agencies_page(2, Page("Another", "agy_01")),
        "directory": await store.directory_members(4),
        "directory_after": await store.directory_members(3, Page(T0, "mem_02")),
        "directory_roles": await store.directory_members(10, roles=frozenset({Role.MANAGER})),
        "directory_ids": await store.directory_members(
            10, member_ids=["mem_05", "mem_01", "mem_05"], agency_id="agy_02"
        ),
        "subject": await store.packets_for_subject("ab" * 32),
        "deliveries": await store.deliveries_for_packet("pkt_03"),
    }
    for name, page in (("first", None), ("middle", Page("2026-01-02T00:00:00.000Z", "pkt_06"))):
        out[f"inbox_{name}"] = await store.inbox("mem_04", 5, page, RECIPIENT_SEES)
        out[f"queue_{name}"] = await store.packets_awaiting_approval("agy_01", 5, page, AWAITING_DECISION)
        out[f"inbox_states_{name}"] = await store.inbox("mem_05", 3, page, frozenset({DeliveryState.DELIVERED}))
        out[f"outbox_{name}"] = await store.outbox("mem_01", 4, page)
        out[f"outbox_states_{name}"] = await store.outbox("mem_02", 4, page, frozenset({PacketState.DELIVERED}))
        out[f"escalations_{name}"] = await store.escalations(
            members=["mem_04"], agencies_as_sender=["agy_01"], agencies_as_owing=[], limit=3, after=page
        )
        out[f"requests_sent_{name}"] = await store.requests_for("mem_01", "agy_01", role="sent", limit=3, after=page)
        out[f"requests_received_{name}"] = await store.requests_for(
            "mem_04", "agy_02", role="received", limit=3, after=page
        )
        out[f"requests_all_{name}"] = await store.requests_for(
            "mem_04", "agy_02", role="all", limit=10, after=page, states=frozenset({RequestState.OPEN})
        )
    out["obligations"] = await store.obligations_for("pkt_02")
    out["oldest_due"] = await store.oldest_due_obligation("2026-01-03T00:00:00.000Z")
    return out


async def _seed_everything(store: Store) -> None:
    await seed_packets(store)
    async with store.write() as tx:
        for n in range(1, 9):
            day = f"2026-01-0{1 + n // 3}T00:00:00.000Z"
            obligation = Obligation(
                f"obl_{n:02d}", "ack", day, T0, packet_id=f"pkt_{1 + n % 2:02d}", owed_by_member="mem_04"
            )
            await tx.add_obligation(obligation)
            await tx.insert_escalation(
                Escalation(
                    f"esc_{n:02d}",
                    obligation.id,
                    "ack",
                    day,
                    day,
                    owed_by_member="mem_04" if n % 2 else "mem_05",
                    owed_to_agency="agy_01" if n % 3 == 0 else "agy_03",
                )
            )
            holders = ("mem_04",) if n % 2 else ("mem_05", "mem_06")
            await tx.insert_request(
                InfoRequest(
                    id=f"req_{n:02d}",
                    requester_member="mem_01" if n < 6 else "mem_04",
                    requester_agency="agy_01",
                    holder_agency="agy_02",
                    holder_member=None,
                    document=b"{}",
                    digest=f"sha256:r{n:02d}",
                    key_id="ed25519:k",
                    signature=b"s",
                    details=tuple(SealedNote(h, "x25519:k", b"sealed") for h in holders),
                    purpose="child_protection",
                    urgency="routine",
                    subject=None,
                    state=RequestState.OPEN if n != 4 else RequestState.DECLINED,
                    created=day,
                    answer_due=None,
                )
            )


async def test_listings_and_pages_are_the_same_on_both_engines(both: tuple[Store, Store]) -> None:
    """The same rows give the same listings, in the same order with the same tie-breaks, page by page."""
    lite, pg = both
    for store in both:
        await _seed_everything(store)
    expected, got = await _listings(lite), await _listings(pg)
    assert expected["inbox_first"] and expected["requests_received_first"] and expected["escalations_first"]
    for name in expected:
        assert got[name] == expected[name], name


# -- reaching the database


async def test_ping_answers_while_the_database_is_there(store: Store) -> None:
    """A reachable store pings without error."""
    await store.ping()


async def test_ping_on_a_database_gone_away_is_store_unavailable(
    postgres_cluster: ThrowawayPostgres, postgres_dsn: str
) -> None:
    """When the server no longer lets the instance in, ping raises StoreUnavailable (503), not a crash."""
    import asyncpg

    store = await open_store(postgres_dsn)
    try:
        await store.ping()
        name = postgres_dsn.rsplit("/", 1)[1]
        admin = await asyncpg.connect(postgres_cluster.dsn)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        finally:
            await admin.close()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            async with store.write() as tx:
                await tx.insert_agency(agency(1))
    finally:
        await store.close()


async def test_opening_an_unreachable_server_is_store_unavailable() -> None:
    """A PostgreSQL URL nobody answers at gives StoreUnavailable, promptly."""
    pytest.importorskip("asyncpg")
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(open_store("postgresql://nobody@127.0.0.1:9/none"), 30)




def test_every_method_of_the_contract_says_what_it_promises() -> None:
    """The store's interface is the domain's: each abstract method states its contract for every backend."""
    from exchange.store.base import Store as StoreInterface
    from exchange.store.base import Transaction

    silent = [
        f"{interface.__name__}.{name}"
        for interface in (Transaction, StoreInterface)
        for name in sorted(interface.__abstractmethods__)
        if not (getattr(interface, name).__doc__ or "").strip()
    ]
    assert silent == []
