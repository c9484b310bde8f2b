"""The SQLite store's own behaviour: WAL and FULL sync, migrations (the engine-neutral rest: test_store_contract)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exchange import crypto
from exchange.domain import Agency, AgencyKind
from exchange.ledger import leaf_hash
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
