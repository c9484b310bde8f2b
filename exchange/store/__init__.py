"""Storage behind one interface; SQLite (WAL, see exchange.store.sqlite) is the embedded default."""

from __future__ import annotations

from pathlib import Path

from exchange.store.base import Store, Transaction

__all__ = ["Store", "Transaction", "open_store"]


async def open_store(database: Path) -> Store:
    """Open (creating and migrating if needed) the store at ``database``."""
    from exchange.store.sqlite import SqliteStore

    return await SqliteStore.open(database)
