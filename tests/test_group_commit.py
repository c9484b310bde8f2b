"""Group commit: concurrent changes share one SQLite commit, yet each stands or falls on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exchange.errors import DiskFull
from exchange.store import Store, open_store


async def test_concurrent_changes_share_commits_and_all_are_durable(tmp_path: Path) -> None:
    """Sixty-four changes at once commit in fewer transactions than changes, and every one is kept
    (a fresh connection, as after a restart, sees them all)."""
    store = await open_store(tmp_path / "exchange.sqlite")
    commits = 0

    async def count() -> None:
        nonlocal commits
        commits += 1

    async def change(n: int) -> None:
        async with store.write() as tx:
            tx.before_commit(count)
            assert await tx.remember_nonce("key", f"nonce-{n}", "2999-01-01T00:00:00Z")

    try:
        await asyncio.gather(*(change(n) for n in range(64)))
    finally:
        await store.close()
    assert 1 <= commits < 64
    again = await open_store(tmp_path / "exchange.sqlite")
    try:
        assert all([await again.nonce_seen("key", f"nonce-{n}") for n in range(64)])
    finally:
        await again.close()


async def test_a_failing_change_in_a_group_undoes_only_itself(tmp_path: Path) -> None:
    """A change that raises is rolled back to its own savepoint; the changes committed with it are kept."""
    store = await open_store(tmp_path / "exchange.sqlite")

    async def change(n: int) -> None:
        async with store.write() as tx:
            await tx.remember_nonce("key", f"nonce-{n}", "2999-01-01T00:00:00Z")
            if n % 3 == 0:
                raise ValueError("this change is refused")

    try:
        results = await asyncio.gather(*(change(n) for n in range(30)), return_exceptions=True)
        assert [n for n, r in enumerate(results) if isinstance(r, ValueError)] == list(range(0, 30, 3))
        kept = [n for n in range(30) if await store.nonce_seen("key", f"nonce-{n}")]
    finally:
        await store.close()
    assert kept == [n for n in range(30) if n % 3]


async def test_a_failure_before_the_commit_fails_every_change_of_the_group(tmp_path: Path) -> None:
    """When what must precede the commit fails (the record log's sync on a full disk), no change of the
    group is kept and each of them gets the error; the next change commits normally."""
    store = await open_store(tmp_path / "exchange.sqlite")

    async def full() -> None:
        raise DiskFull("The disk is full.", extras={"cause": "record_log"})

    async def change(n: int) -> None:
        async with store.write() as tx:
            tx.before_commit(full)
            await tx.remember_nonce("key", f"nonce-{n}", "2999-01-01T00:00:00Z")

    try:
        results = await asyncio.gather(*(change(n) for n in range(8)), return_exceptions=True)
        assert all(isinstance(r, DiskFull) for r in results)
        assert not any([await store.nonce_seen("key", f"nonce-{n}") for n in range(8)])
        async with store.write() as tx:
            await tx.remember_nonce("key", "after", "2999-01-01T00:00:00Z")
        assert await store.nonce_seen("key", "after")
    finally:
        await store.close()


async def test_a_lone_change_commits_at_once(tmp_path: Path) -> None:
    """With nobody waiting, a change is its own transaction and is visible to readers when it returns."""
    store = await open_store(tmp_path / "exchange.sqlite")
    try:
        async with store.write() as tx:
            await tx.remember_nonce("key", "one", "2999-01-01T00:00:00Z")
        assert await store.nonce_seen("key", "one")
        with pytest.raises(ValueError, match="refused"):
            await _refused_change(store)
        assert not await store.nonce_seen("key", "two")
    finally:
        await store.close()


async def _refused_change(store: Store) -> None:
    async with store.write() as tx:
        await tx.remember_nonce("key", "two", "2999-01-01T00:00:00Z")
        raise ValueError("refused")
