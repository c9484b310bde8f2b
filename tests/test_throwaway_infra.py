"""The test infrastructure itself: a real throwaway PostgreSQL and a real HAProxy over real servers."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from throwaway_pg import SYSTEM_USER, ThrowawayPostgres  # on sys.path once conftest loads tests/pg_fixtures

from tests.pg_fixtures import StartHAProxy

# A backend for the balancer: a tiny aiohttp server on a port of its own choosing, which it prints.
BACKEND = """
import asyncio, sys
from aiohttp import web

async def whoami(request):
    return web.Response(text=sys.argv[1])

async def serve():
    app = web.Application()
    app.router.add_get("/health", whoami)
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(serve())
"""


def _processes_of(parent: int) -> set[int]:
    """``parent`` and its children (postgres's background workers), read from /proc."""
    found = {parent}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie does not (a container's init may be slow to reap it)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _owner(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


async def _table_exists(dsn: str, table: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await connection.close()


async def test_the_cluster_serves_its_dsn_and_isolated_fresh_databases(postgres_cluster: ThrowawayPostgres) -> None:
    """asyncpg reaches the cluster's DSN and two new databases, and a table made in one is absent in the other."""
    connection = await asyncpg.connect(postgres_cluster.dsn)
    try:
        assert await connection.fetchval("SELECT current_setting('server_encoding')") == "UTF8"
        assert await connection.fetchval("SELECT current_setting('listen_addresses')") == "127.0.0.1"
    finally:
        await connection.close()
    first = postgres_cluster.create_database("isolation_first")
    second = postgres_cluster.create_database("isolation_second")
    try:
        connection = await asyncpg.connect(first)
        try:
            await connection.execute("CREATE TABLE packets (id text PRIMARY KEY)")
        finally:
            await connection.close()
        assert await _table_exists(first, "packets")
        assert not await _table_exists(second, "packets")
    finally:
        postgres_cluster.drop_database("isolation_first")
        postgres_cluster.drop_database("isolation_second")


async def test_each_test_gets_an_empty_database_of_its_own(postgres_dsn: str) -> None:
    """The function fixture's database holds no table of ours, and it is not the cluster's default one."""
    connection = await asyncpg.connect(postgres_dsn)
    try:
        assert await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        assert await connection.fetchval("SELECT current_database()") != "postgres"
    finally:
        await connection.close()


async def test_the_test_cluster_trades_durability_for_speed(postgres_cluster: ThrowawayPostgres) -> None:
    """The session's cluster runs with fsync, synchronous_commit and full_page_writes off."""
    connection = await asyncpg.connect(postgres_cluster.dsn)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            assert await connection.fetchval(f"SHOW {setting}") == "off"
    finally:
        await connection.close()


@pytest.fixture
def own_cluster(postgres_cluster: ThrowawayPostgres) -> Iterator[ThrowawayPostgres]:
    """A second cluster, with PostgreSQL's default settings, for tests that stop it (skipped like the first)."""
    with ThrowawayPostgres(binaries=postgres_cluster.binaries) as cluster:
        yield cluster


async def test_stop_leaves_no_process_and_no_folder(own_cluster: ThrowawayPostgres) -> None:
    """After ``stop()`` the server and its workers are gone, and so is the temporary folder."""
    pid = own_cluster.postmaster_pid
    assert pid is not None
    processes = _processes_of(pid)
    assert len(processes) > 1  # the checkpointer, the WAL writer, ... as well as the postmaster
    assert own_cluster.root.is_dir()
    assert own_cluster.startup_seconds < 10
    own_cluster.stop()
    assert [p for p in processes if _running(p)] == []
    assert not own_cluster.root.exists()
    own_cluster.stop()  # a second stop (the atexit one, say) is harmless


async def test_the_default_cluster_keeps_postgres_durability(own_cluster: ThrowawayPostgres) -> None:
    """Without ``fast``, fsync and synchronous commits stay on, as PostgreSQL ships them."""
    connection = await asyncpg.connect(own_cluster.dsn)
    try:
        assert await connection.fetchval("SHOW fsync") == "on"
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await connection.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root run hands the cluster to another user")
def test_as_root_postgres_runs_as_the_unprivileged_user(postgres_cluster: ThrowawayPostgres) -> None:
    """Run by root, every postgres process and the data folder belong to the system user, never root."""
    account = pwd.getpwnam(SYSTEM_USER)
    pid = postgres_cluster.postmaster_pid
    assert pid is not None
    assert {_owner(process) for process in _processes_of(pid)} == {account.pw_uid}
    assert postgres_cluster.data_dir.stat().st_uid == account.pw_uid


class Backend:
    """A tiny aiohttp server in a child process, answering its own name on /whoami and /health."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-c", BACKEND, name], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
async def two_backends() -> AsyncIterator[list[Backend]]:
    backends = await asyncio.gather(*(asyncio.to_thread(Backend, name) for name in ("alpha", "beta")))
    try:
        yield list(backends)
    finally:
        for backend in backends:
            backend.kill()


async def test_haproxy_balances_over_both_backends_and_survives_a_killed_one(
    start_haproxy: StartHAProxy, two_backends: list[Backend]
) -> None:
    """Requests through HAProxy reach both backends; with one SIGKILLed, every request still succeeds."""
    balancer = start_haproxy([backend.address for backend in two_backends])
    assert balancer.startup_seconds < 5
    balancer.wait_for_states({"s0": "UP", "s1": "UP"})
    async with aiohttp.ClientSession() as session:

        async def whoami() -> str:
            async with session.get(f"{balancer.url}/whoami") as response:
                assert response.status == 200
                return await response.text()

        assert {await whoami() for _ in range(6)} == {"alpha", "beta"}
        two_backends[0].kill()
        killed_at = time.monotonic()
        # A request to the dead one is redispatched to the other at once; no 5xx in between.
        assert [await whoami() for _ in range(20)] == ["beta"] * 20
        balancer.wait_for_states({"s0": "DOWN", "s1": "UP"}, timeout=3)
        assert time.monotonic() - killed_at < 3


def test_haproxy_stop_ends_its_process_and_removes_its_folder(
    start_haproxy: StartHAProxy, two_backends: list[Backend]
) -> None:
    """After ``stop()`` HAProxy's process is gone and so is its temporary folder."""
    balancer = start_haproxy([backend.address for backend in two_backends])
    pid = balancer.pid
    assert pid is not None
    balancer.stop()
    assert not _running(pid)
    assert not balancer.root.exists()
