"""Group commit: concurrent changes share one SQLite commit, yet each stands or falls on its own."""

from __future__ import annotations

import asyncio
import random
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


async def test_race_the_change_that_commits_for_its_group_is_cancelled_mid_commit(tmp_path: Path) -> None:
    """Cancelling the task that is committing for a group (as a server's stop cancels its head signer)
    still finishes that commit for the others and frees the store. Before: the write lock was never
    released and the others waited for ever (CI hung in test_deadlines on exactly this)."""
    store = await open_store(tmp_path / "exchange.sqlite")
    syncing, go_on = asyncio.Event(), asyncio.Event()

    async def slow_sync() -> None:
        syncing.set()
        await go_on.wait()

    async def change(n: int, entered: asyncio.Event, proceed: asyncio.Event) -> None:
        async with store.write() as tx:
            entered.set()
            await proceed.wait()
            tx.before_commit(slow_sync)
            await tx.remember_nonce("key", f"nonce-{n}", "2999-01-01T00:00:00Z")

    try:
        first_in, second_in, first_on, second_on = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
        second_on.set()
        first = asyncio.create_task(change(1, first_in, first_on))
        await first_in.wait()
        second = asyncio.create_task(change(2, second_in, second_on))  # waits: the first leaves it to commit
        while not store._waiting:  # type: ignore[attr-defined]  # noqa: ASYNC110 - watching the store's own count
            await asyncio.sleep(0)
        first_on.set()
        await syncing.wait()  # the second is committing for both
        assert second_in.is_set()
        second.cancel()
        go_on.set()
        await asyncio.wait_for(first, timeout=10)
        with pytest.raises(asyncio.CancelledError):
            await second
        async with asyncio.timeout(10):
            async with store.write() as tx:
                await tx.remember_nonce("key", "after", "2999-01-01T00:00:00Z")
        assert [await store.nonce_seen("key", n) for n in ("nonce-1", "nonce-2", "after")] == [True, True, True]
    finally:
        await store.close()


async def test_race_a_waiter_cancelled_as_the_lock_is_handed_to_it_still_lets_the_group_commit(tmp_path: Path) -> None:
    """A change leaves the commit to the writer waiting behind it; if that writer is cancelled just as the
    lock is handed to it, the group is still committed. Before: the first change waited for ever and
    its open transaction held SQLite's write lock."""
    store = await open_store(tmp_path / "exchange.sqlite")
    lock = store._lock  # type: ignore[attr-defined]  # watched, not changed: when it is handed over
    waiter: asyncio.Task[None] | None = None

    async def waiting() -> None:
        async with store.write() as tx:
            await tx.remember_nonce("key", "never", "2999-01-01T00:00:00Z")

    async def cancel_on_hand_over() -> None:
        while lock.locked():  # noqa: ASYNC110 - must act within the loop step the lock is handed over
            await asyncio.sleep(0)
        assert waiter is not None
        waiter.cancel()

    try:
        async with asyncio.timeout(10):
            async with store.write() as tx:
                waiter = asyncio.create_task(waiting())
                await asyncio.sleep(0)  # now queued for the lock
                watcher = asyncio.create_task(cancel_on_hand_over())
                await tx.remember_nonce("key", "kept", "2999-01-01T00:00:00Z")
            await watcher
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await store.nonce_seen("key", "kept")
        assert not await store.nonce_seen("key", "never")
    finally:
        await store.close()


async def test_race_writers_cancelled_at_random_never_stall_the_store(tmp_path: Path) -> None:
    """Many writers, many of them cancelled at arbitrary points: nobody waits for ever, every change that
    returned is durable, and the store still takes writes."""
    store = await open_store(tmp_path / "exchange.sqlite")
    rng = random.Random(9)  # noqa: S311 - a fixed schedule of cancellations, not a secret

    async def change(n: int) -> int:
        async with store.write() as tx:
            await tx.remember_nonce("key", f"nonce-{n}", "2999-01-01T00:00:00Z")
        return n

    try:
        async with asyncio.timeout(60):
            for _ in range(20):
                tasks = [asyncio.create_task(change(n)) for n in range(_ * 40, _ * 40 + 40)]
                for _step in range(rng.randrange(1, 12)):
                    await asyncio.sleep(0)
                    for task in rng.sample(tasks, 3):
                        task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                for n in (r for r in results if isinstance(r, int)):
                    assert await store.nonce_seen("key", f"nonce-{n}")
            async with store.write() as tx:
                await tx.remember_nonce("key", "after", "2999-01-01T00:00:00Z")
    finally:
        await store.close()


async def test_race_a_cancellation_that_arrives_as_the_step_ends_is_not_swallowed() -> None:
    """CI stop 15: a task cancelled in the same turn of the loop as its shielded step finished was told
    nothing, so the head signer's loop never ended and the server's shutdown hung. The step still runs
    to its end; the cancellation is what the task learns."""
    from exchange.store.cancellation import uninterrupted as _uninterrupted

    step: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_uninterrupted(step))
    await asyncio.sleep(0)  # the task now waits on the shielded step
    step.set_result("committed")
    task.cancel()  # before the task wakes: the step is done by the time it sees the cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    assert step.result() == "committed"
