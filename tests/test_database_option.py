"""Choosing the store: ``--database URL`` (or ``EXCHANGE_DATABASE_URL``) on every server command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from throwaway_pg import ThrowawayPostgres

from exchange.cli.output import shown_database
from exchange.config import Config
from exchange.store import open_store


def _init(root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "exchange.cli.main", "init", "--data-dir", str(root / "var"),
               "--keys-dir", str(root / "keys"), "--agency-name", "Northshire", "--agency-kind", "education",
               "--admin-name", "Systems admin", "--admin-key-file", str(root / "admin.json"), "--json", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)


async def test_init_on_a_postgres_url_writes_there_and_not_to_a_sqlite_file(
    postgres_cluster: ThrowawayPostgres, postgres_dsn: str, tmp_path: Path
) -> None:
    """``--database postgresql://...`` puts the directory in PostgreSQL; the data folder gets no SQLite file."""
    done = _init(tmp_path, "--database", postgres_dsn)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "var" / "exchange.sqlite").exists()
    store = await open_store(postgres_dsn)
    try:
        assert [a.name for a in await store.list_agencies()] == ["Northshire"]
    finally:
        await store.close()


async def test_the_environment_names_the_database_when_no_option_does(postgres_dsn: str, tmp_path: Path) -> None:
    done = _init(tmp_path, env=os.environ | {"EXCHANGE_DATABASE_URL": postgres_dsn})
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "var" / "exchange.sqlite").exists()
    store = await open_store(postgres_dsn)
    try:
        assert await store.count_members() == 1
    finally:
        await store.close()


def test_a_database_url_of_another_scheme_is_refused_in_words(tmp_path: Path) -> None:
    """A typo'd scheme is a clear refusal naming what is accepted, not a SQLite file named like a URL."""
    done = _init(tmp_path, "--database", "mysql://db.example/exchange")
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "postgresql://" in said and "sqlite:" in said and "Traceback" not in said
    assert not (tmp_path / "var").exists() or not any((tmp_path / "var").iterdir())


def test_a_password_in_the_database_url_is_never_printed(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, keys_dir=tmp_path, database="postgresql://exchange:s3cret@db:5432/exchange")
    assert shown_database(config) == "postgresql://exchange:***@db:5432/exchange"
    assert shown_database(Config(data_dir=tmp_path, keys_dir=tmp_path)) == str(tmp_path / "exchange.sqlite")
