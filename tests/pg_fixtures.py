"""Fixtures for the real PostgreSQL and HAProxy a test asks for (a pytest plugin, from conftest.py).

* ``postgres_cluster``: one throwaway cluster for the whole run (``scripts/throwaway_pg.py``,
  ``fast=True``), started only when the first test asks for it.
* ``postgres_dsn``: a fresh, empty database of that cluster for one test, dropped after it.
* ``start_haproxy``: ``start_haproxy([(host, port), ...])`` runs a throwaway HAProxy balancing over
  those backends (``scripts/throwaway_haproxy.py``), stopped after the test.

Where PostgreSQL (or HAProxy) is not installed, the tests needing it are skipped, saying what to
install; with ``EXCHANGE_REQUIRE_POSTGRES=1`` (or ``EXCHANGE_REQUIRE_HAPROXY=1``) they fail instead,
so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

# scripts/ is a folder of programs, not a package: its modules are imported from it as top-level ones.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from throwaway_haproxy import HAProxyNotInstalled, ThrowawayHAProxy, find_haproxy
from throwaway_pg import PostgresBinaries, PostgresNotInstalled, ThrowawayPostgres

REQUIRE_POSTGRES = "EXCHANGE_REQUIRE_POSTGRES"
REQUIRE_HAPROXY = "EXCHANGE_REQUIRE_HAPROXY"

StartHAProxy = Callable[[Sequence[tuple[str, int]]], ThrowawayHAProxy]


def _missing(reason: str, variable: str) -> NoReturn:
    """Skip the test for want of a component, or fail it when ``variable`` says it is required."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1 makes this a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


_shared: list[ThrowawayPostgres] = []


def shared_cluster() -> ThrowawayPostgres:
    """The run's one throwaway PostgreSQL cluster on loopback, started on first use, fsync off (its data
    is thrown away); stopped when the run ends. For fixtures, and for ``make_config`` (not a fixture)."""
    if not _shared:
        try:
            binaries = PostgresBinaries.find()
        except PostgresNotInstalled as missing:
            _missing(str(missing), REQUIRE_POSTGRES)
        _shared.append(ThrowawayPostgres(fast=True, binaries=binaries))
    return _shared[0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for cluster in _shared:
        cluster.stop()
    _shared.clear()


@pytest.fixture(scope="session")
def postgres_cluster() -> ThrowawayPostgres:
    """The run's throwaway PostgreSQL cluster (:func:`shared_cluster`)."""
    return shared_cluster()


_database_numbers = itertools.count(1)


def _database_name(label: str) -> str:
    # What it is for in the database's name, so a leftover one (or its log lines) says whose it was.
    return f"t{next(_database_numbers)}_{re.sub(r'[^a-z0-9_]+', '_', label.lower())[:40].strip('_')}"


@pytest.fixture
def postgres_dsn(postgres_cluster: ThrowawayPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """The DSN of a new, empty database for this test alone, dropped after it."""
    name = _database_name(request.node.name)
    dsn = postgres_cluster.create_database(name)
    yield dsn
    postgres_cluster.drop_database(name)


#: ``EXCHANGE_TEST_ENGINE=postgres`` runs every deployment of the end-to-end tests on PostgreSQL
#: (tests/conftest.py ``make_config``); scripts/test does so for the end-to-end files after the SQLite run.
ENGINE_ENV = "EXCHANGE_TEST_ENGINE"
_deployment_databases: dict[str, str] = {}


def deployments_use_postgres() -> bool:
    """Whether this run puts every deployment on PostgreSQL (``EXCHANGE_TEST_ENGINE=postgres``)."""
    return os.environ.get(ENGINE_ENV, "sqlite") == "postgres"


def deployment_database(data_dir: Path) -> str:
    """The database of the deployment kept in ``data_dir``: fresh the first time, the same one after.

    As a data directory holds one SQLite file, it stands for one database here, so servers started on
    one directory (a restart, two instances) share their store. The cluster is thrown away at the end.
    """
    known = _deployment_databases.get(str(data_dir))
    if known is None:
        known = _deployment_databases[str(data_dir)] = shared_cluster().create_database(_database_name("deployment"))
    return known


@pytest.fixture(scope="session")
def haproxy_binary() -> Path:
    """The ``haproxy`` program; the test is skipped (or fails, see above) where there is none."""
    try:
        return find_haproxy()
    except HAProxyNotInstalled as missing:
        _missing(str(missing), REQUIRE_HAPROXY)


@pytest.fixture
def start_haproxy(haproxy_binary: Path) -> Iterator[StartHAProxy]:
    """``start_haproxy(backends)``: a throwaway HAProxy over ``backends``, stopped after the test."""
    started: list[ThrowawayHAProxy] = []

    def start(backends: Sequence[tuple[str, int]]) -> ThrowawayHAProxy:
        balancer = ThrowawayHAProxy(backends, haproxy=haproxy_binary)
        started.append(balancer)
        return balancer

    yield start
    for balancer in started:
        balancer.stop()
