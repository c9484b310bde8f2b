"""PostgreSQL for the tests: a server (``postgres_url``) and a fresh database per test (``postgres_database``).

For now the server is the one ``EXCHANGE_TEST_POSTGRES_URL`` names (an admin URL such as
postgresql://postgres@127.0.0.1:19555/postgres); without it every PostgreSQL test is skipped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV = "EXCHANGE_TEST_POSTGRES_URL"
#: ``EXCHANGE_TEST_ENGINE=postgres`` runs every deployment of the end-to-end tests on a fresh PostgreSQL
#: database (tests/conftest.py make_config): a switch for running the suite on PostgreSQL by hand.
ENGINE_ENV = "EXCHANGE_TEST_ENGINE"
#: Databases made for deployments by their data directory (see deployment_database), dropped when the
#: session ends.
_DEPLOYMENT_DATABASES: dict[str, str] = {}


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """An admin URL of a PostgreSQL server the tests may create and drop databases on."""
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server for the tests: set {ENV} to an admin postgresql:// URL")
    return url


def database_url(server: str, name: str) -> str:
    """``server``'s URL with its database changed to ``name``."""
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name))


async def create_database(server: str) -> str:
    """Create a uniquely named empty database on ``server``; return its URL."""
    import asyncpg

    name = f"exchange_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return database_url(server, name)


async def drop_database(server: str, url: str) -> None:
    """Drop the database ``url`` names, closing whatever is still connected to it."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def postgres_database(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a fresh, uniquely named database, dropped after the test."""
    url = await create_database(postgres_url)
    try:
        yield url
    finally:
        await drop_database(postgres_url, url)


def deployments_use_postgres() -> bool:
    """Whether this run puts every deployment on PostgreSQL (``EXCHANGE_TEST_ENGINE=postgres``)."""
    return os.environ.get(ENGINE_ENV, "sqlite") == "postgres"


def deployment_database(data_dir: Path) -> str:
    """The database of the deployment kept in ``data_dir``: fresh the first time, the same one after.

    As a data directory holds one SQLite file, it stands for one database here, so servers started on
    one directory share their store. Made from a plain function (make_config is not async), on a
    thread with a loop of its own since the caller may be inside a running loop; dropped when the
    session ends.
    """
    known = _DEPLOYMENT_DATABASES.get(str(data_dir))
    if known is not None:
        return known
    server = os.environ.get(ENV)
    if not server:
        raise RuntimeError(f"{ENGINE_ENV}=postgres needs {ENV}, an admin postgresql:// URL")
    with ThreadPoolExecutor(1) as thread:
        url = thread.submit(asyncio.run, create_database(server)).result()
    _DEPLOYMENT_DATABASES[str(data_dir)] = url
    return url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the deployments' databases."""
    server = os.environ.get(ENV)
    if not server or not _DEPLOYMENT_DATABASES:
        return

    async def drop_all() -> None:
        for url in _DEPLOYMENT_DATABASES.values():
            await drop_database(server, url)

    asyncio.run(drop_all())
