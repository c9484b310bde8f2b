"""The SQLite store: WAL and FULL sync, migrations, one transaction per change, an append-only ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exchange import crypto
from exchange.domain import Agency, AgencyKind, Event
from exchange.errors import Conflict
from exchange.ledger import leaf_hash, root_hash, tree
from exchange.service.context import append_to_ledger
from exchange.store.migrations import MIGRATIONS
from exchange.store.sqlite import SqliteStore, _statements


async def _store(tmp_path: Path) -> SqliteStore:
    return await SqliteStore.open(tmp_path / "exchange.sqlite")


async def test_database_uses_wal_full_sync_and_records_its_schema_version(tmp_path: Path) -> None:
    """The pragmas the design requires are in force, and the schema version is recorded."""
    store = await _store(tmp_path)
    await store.close()
    db = sqlite3.connect(tmp_path / "exchange.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(len(MIGRATIONS))
    db.close()


async def test_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    """Opening an existing database keeps its data and version."""
    store = await _store(tmp_path)
    async with store.write() as tx:
        await tx.insert_agency(Agency("agy_1", "School", AgencyKind.EDUCATION, "2026-01-01T00:00:00.000Z"))
    await store.close()
    store = await _store(tmp_path)
    assert [a.id for a in await store.list_agencies()] == ["agy_1"]
    await store.close()


async def test_a_failed_change_leaves_neither_state_nor_event(tmp_path: Path) -> None:
    """State change and ledger entry commit together or not at all."""
    store = await _store(tmp_path)
    agency = Agency("agy_1", "School", AgencyKind.EDUCATION, "2026-01-01T00:00:00.000Z")
    event = Event("agency.created", None, None)

    async def crash_mid_change() -> None:
        async with store.write() as tx:
            await tx.insert_agency(agency)
            await append_to_ledger(tx, [lambda seq: event.entry(seq, "t")])
            raise RuntimeError("crash between the change and the commit")

    with pytest.raises(RuntimeError):
        await crash_mid_change()
    assert await store.list_agencies() == []
    assert await store.ledger_size() == 0
    await store.close()


async def test_duplicate_key_is_a_conflict_not_a_crash(tmp_path: Path) -> None:
    """Registering the same public key twice is a clear 409, and the first stays intact."""
    from exchange.domain import KeyUse, Member, MemberKey, Role

    store = await _store(tmp_path)
    async with store.write() as tx:
        await tx.insert_agency(Agency("agy_1", "School", AgencyKind.EDUCATION, "t"))
        await tx.insert_member(Member("mem_1", "agy_1", "A", frozenset({Role.PRACTITIONER}), "t"))
        key = MemberKey("ed25519:x", "mem_1", KeyUse.SIGNING, b"k" * 32, "t", None, None, "t")
        await tx.insert_key(key)
    with pytest.raises(Conflict):
        async with store.write() as tx:
            await tx.insert_key(key)
    assert await store.get_key("ed25519:x") == key
    await store.close()


async def test_ledger_nodes_give_the_same_root_as_rehashing(tmp_path: Path) -> None:
    """After many appends the stored perfect subtrees reproduce RFC 9162's root at every size."""
    store = await _store(tmp_path)
    entries = [crypto.canonical_json({"seq": i, "type": "test"}) for i in range(37)]
    for i in range(37):
        async with store.write() as tx:
            assert (await append_to_ledger(tx, [lambda seq: {"seq": seq, "type": "test"}]))[0].entry == entries[i]
    leaves = [leaf_hash(e) for e in entries]
    for size in (0, 1, 2, 3, 8, 17, 32, 37):
        nodes = await store.ledger_nodes(tree.needed_nodes_for_root(size))
        assert tree.compute_root(size, nodes) == root_hash(leaves[:size])
    await store.close()


async def test_the_database_refuses_to_edit_or_delete_ledger_entries(tmp_path: Path) -> None:
    """Triggers make the ledger append-only even for someone with SQL access through the app's schema."""
    store = await _store(tmp_path)
    async with store.write() as tx:
        await append_to_ledger(tx, [lambda seq: {"seq": seq}])
    await store.close()
    db = sqlite3.connect(tmp_path / "exchange.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE ledger_entries SET entry = x'00' WHERE seq = 0")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM ledger_entries")
    db.close()


async def test_an_older_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A database at schema version 1 gains the directory's purpose lists and keeps its agencies."""
    path = tmp_path / "exchange.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for statement in _statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO agencies (id, name, kind, created) VALUES ('agy_1', 'School', 'education', 't')")
    old_entry = crypto.canonical_json(
        {
            "seq": 0,
            "time": "2026-01-01T00:00:00.000Z",
            "type": "packet.delivered",
            "packet": "pkt_x",
            "actor": {"member": "mem_a", "agency": "agy_1"},
            "details": {"recipient": "mem_b"},
        }
    )
    db.execute("INSERT INTO ledger_entries VALUES (0, ?, ?)", (old_entry, leaf_hash(old_entry)))
    db.commit()
    db.close()
    store = await SqliteStore.open(path)
    agencies = await store.list_agencies()
    assert [(a.id, a.send_purposes) for a in agencies] == [("agy_1", None)]
    # The ledger index is built for entries written before it existed.
    for filters in ({"member": "mem_b"}, {"agency": "agy_1"}, {"packet": "pkt_x"}, {"since": "2026-01-01"}):
        assert [seq for seq, _, _ in await store.search_ledger(filters, 0, 10)] == [0], filters
    assert await store.search_ledger({"member": "mem_c"}, 0, 10) == []
    async with store.write() as tx:
        await tx.set_agency_purposes("agy_1", frozenset({"education_welfare"}), None)
    assert (await store.get_agency("agy_1")) == Agency(
        "agy_1", "School", AgencyKind.EDUCATION, "t", frozenset({"education_welfare"}), None
    )
    await store.close()


async def test_a_database_newer_than_the_software_is_refused(tmp_path: Path) -> None:
    """Opening a database from a newer release fails clearly instead of corrupting it."""
    from exchange.errors import StoreUnavailable

    store = await _store(tmp_path)
    await store.close()
    db = sqlite3.connect(tmp_path / "exchange.sqlite")
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreUnavailable, match="newer than this software"):
        await _store(tmp_path)
