"""An SQLite connection used from the event loop's own thread, with aiosqlite's calls.

aiosqlite runs every statement on a worker thread and wakes the loop for each answer. For the
store's writer that hop cost more than the statements: a submission's dozen small statements,
each a thread round trip, ran one after another while the single write lock was held, and the
loop sat idle in between (issue 9's profile: the loop busy 29% of the time at the top rate).
A statement on a few indexed rows takes microseconds, so here they run in place; only the calls
that can wait on the disk or on another process (BEGIN IMMEDIATE, which may wait out another
writer's lock for the busy timeout, and COMMIT, which fsyncs) go to a thread, one hop each.

The connection is never used by two threads at once: its owner (the store) serialises every use,
and a call sent to a thread is awaited before the next statement.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


class InlineCursor:
    """A finished statement: its rows are read in place."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _Statement:
    """``await conn.execute(...)`` or ``async with conn.execute(...) as cursor``, as with aiosqlite."""

    def __init__(self, connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
        self._connection, self._sql, self._params = connection, sql, params
        self._cursor: InlineCursor | None = None

    def _run(self) -> InlineCursor:
        return InlineCursor(self._connection.execute(self._sql, self._params))

    async def _now(self) -> InlineCursor:
        return self._run()

    def __await__(self) -> Generator[Any, None, InlineCursor]:
        # The statement runs when awaited, and the await never suspends.
        return self._now().__await__()

    async def __aenter__(self) -> InlineCursor:
        self._cursor = self._run()
        return self._cursor

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class InlineConnection:
    """aiosqlite's Connection calls the store uses, run on the caller's thread (see the module)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    @classmethod
    async def connect(cls, path: Path) -> InlineConnection:
        connection = await asyncio.to_thread(sqlite3.connect, path, isolation_level=None, check_same_thread=False)
        return cls(connection)

    @property
    def row_factory(self) -> Any:
        return self._connection.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self._connection.row_factory = factory

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement:
        return _Statement(self._connection, sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> InlineCursor:
        return InlineCursor(self._connection.executemany(sql, rows))

    async def execute_waiting(self, sql: str) -> None:
        """A statement that may wait on the disk or another process's lock: on a thread, awaited."""
        await asyncio.to_thread(self._run_closed, sql)

    def _run_closed(self, sql: str) -> None:
        self._connection.execute(sql).close()

    async def close(self) -> None:
        await asyncio.to_thread(self._connection.close)
