"""Fixtures: a real server on a real socket, with a real SQLite file and the demo directory."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import settings

from exchange import bootstrap
from exchange.client import ExchangeClient
from exchange.config import Config
from exchange.domain import utc_now
from exchange.keyfile import MemberCredentials
from exchange.store import Store, engine_of, sqlite_path
from exchange.web.app import build_app
from exchange.web.keys import CONTEXT

pytest_plugins = ["tests.pg_fixtures"]

# Property tests have no deadline: a 2-core CI machine is slower than a laptop, and speed is judged in
# scripts/bench, not in unit tests. HYPOTHESIS_PROFILE=thorough runs 1000 examples where a test sets no count.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("thorough", deadline=None, print_blob=True, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class Clock:
    """A clock tests can move; the server reads it through the service context."""

    def __init__(self) -> None:
        self.offset_seconds = 0.0

    def __call__(self) -> datetime:
        return utc_now() + timedelta(seconds=self.offset_seconds)


@dataclass
class Deployment:
    """A running exchange and the demo members' credentials."""

    url: str
    config: Config
    server: TestServer
    key_dir: Path
    clock: Clock

    def credentials(self, label: str) -> MemberCredentials:
        return MemberCredentials.load(self.key_dir / f"{label}.json")

    def client(self, label: str) -> ExchangeClient:
        linkage = bytes.fromhex((self.key_dir / "linkage.key").read_text().strip())
        return ExchangeClient(self.url, self.credentials(label), linkage_key=linkage)

    @property
    def server_public_key(self) -> bytes:
        from exchange import crypto

        return crypto.b64decode(self.config.server_public_key_path.read_text().strip())


def make_config(root: Path, **overrides: object) -> Config:
    settings: dict[str, object] = {
        "data_dir": root / "var",
        "keys_dir": root / "keys",
        "head_interval_ms": 50,
        "head_batch_entries": 8,
    }
    from tests.pg_fixtures import deployment_database, deployments_use_postgres

    if deployments_use_postgres() and "database" not in overrides:
        settings["database"] = deployment_database(Path(str(overrides.get("data_dir", settings["data_dir"]))))
    settings.update(overrides)
    return Config(**settings)  # type: ignore[arg-type]


async def start_deployment(root: Path, **overrides: object) -> tuple[Deployment, Callable[[], Awaitable[None]]]:
    config = make_config(root, **overrides)
    key_dir = root / "keys" / "demo"
    await bootstrap.seed_demo(config, key_dir=key_dir, server="http://unused")
    clock = Clock()
    server = TestServer(build_app(config, clock=clock, console=False), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    return Deployment(url, config, server, key_dir, clock), server.close


def store_of(deployment: Deployment) -> Store:
    """The running server's own store: tests read what was stored through it, on any engine."""
    return deployment.server.app[CONTEXT].store


async def ledger_entries(deployment: Deployment, **filters: str) -> list[dict[str, Any]]:
    """Every ledger entry, or those the auditors' index finds by ``filters`` (type, packet...), oldest first."""
    found: list[dict[str, Any]] = []
    start = 0
    while True:
        rows = await store_of(deployment).search_ledger(filters, start, 1000)
        found += [json.loads(entry) for _, entry, _ in rows]
        if len(rows) < 1000:
            return found
        start = rows[-1][0] + 1


async def beside(deployment: Deployment, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one SQL statement on the deployment's database directly, beside its server, on either engine.

    For what the API cannot do by design: an attacker (or a careless operator) with write access to the
    database, or a count of rows the API never lists. ``?`` placeholders; returns the rows (none for a
    write), so ``len(await beside(..., "UPDATE ... RETURNING 1", ...))`` counts the rows changed.
    """
    return await sql_beside(deployment.config.database_target, sql, *params)


async def sql_beside(target: str | Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """:func:`beside` for the database ``target`` names (a postgresql:// URL, ``sqlite:PATH`` or a path)."""
    if engine_of(target) == "postgres":
        import asyncpg

        numbers = itertools.count(1)
        connection = await asyncpg.connect(str(target))
        try:
            rows = await connection.fetch(re.sub(r"\?", lambda _: f"${next(numbers)}", sql), *params)
        finally:
            await connection.close()
        return [tuple(row) for row in rows]

    def run() -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(sqlite_path(target), timeout=30)) as db, db:
            return [tuple(row) for row in db.execute(sql, params).fetchall()]

    return await asyncio.to_thread(run)


async def stored_bytes(deployment: Deployment) -> bytes:
    """Everything the deployment's database holds, as bytes: the SQLite file and its WAL, or every
    PostgreSQL table's values (raw bytes for bytea, text for the rest); for checks that no content is kept."""
    target = deployment.config.database_target
    if engine_of(target) != "postgres":
        path = sqlite_path(target)
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    found = bytearray()
    tables = await beside(deployment, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    for (table,) in tables:
        for row in await beside(deployment, f'SELECT * FROM "{table}"'):  # noqa: S608 - names from pg_tables
            for value in row:
                found += value if isinstance(value, bytes) else str(value).encode()
    return bytes(found)


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    """The demo directory behind a real server on 127.0.0.1, with its SQLite file under tmp_path."""
    running, close = await start_deployment(tmp_path)
    try:
        yield running
    finally:
        await close()


@pytest.fixture
def connect(deployment: Deployment) -> Callable[[str], AbstractAsyncContextManager[ExchangeClient]]:
    """``async with connect("school-dsl") as client``: a signed client for a demo member."""
    return deployment.client


class Servers:
    """Servers started on one data directory (one store), each with its own clock, workers and instance id:
    several instances of one deployment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._closers: dict[int, Callable[[], Awaitable[None]]] = {}

    async def start(self, **overrides: object) -> Deployment:
        # Deadline rounds run only when a test asks, unless it says otherwise.
        running, close = await start_deployment(self.root, **({"deadline_check_seconds": 3600.0} | overrides))
        self._closers[id(running)] = close
        return running

    async def stop(self, running: Deployment) -> None:
        await self._closers.pop(id(running))()

    async def stop_all(self) -> None:
        for close in self._closers.values():
            await close()
        self._closers.clear()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """Start several server instances on one store: ``await servers.start()``; all stopped at the end."""
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        await started.stop_all()
