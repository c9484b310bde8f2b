"""Storage behind one interface; SQLite (WAL, see exchange.store.sqlite) is the embedded default."""

from __future__ import annotations

from pathlib import Path

from exchange.errors import InvalidRequest
from exchange.store.base import Store, Transaction

__all__ = ["Store", "Transaction", "engine_of", "open_store"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def engine_of(database: str | Path) -> str:
    """``"postgres"`` for a PostgreSQL URL, ``"sqlite"`` for ``sqlite:PATH`` or a file path.

    Raises :class:`~exchange.errors.InvalidRequest` for a URL of any other scheme, so a typo never
    silently becomes a SQLite file named like a URL.
    """
    text = str(database)
    if text.startswith(_POSTGRES_SCHEMES):
        return "postgres"
    if text.startswith("sqlite:") or "://" not in text:
        return "sqlite"
    raise InvalidRequest(
        f"The database {text.split('://', 1)[0]}://... is not one the exchange can use: give a"
        " postgresql:// URL, sqlite:PATH or a file path."
    )


def sqlite_path(database: str | Path) -> Path:
    """The file a SQLite target names (``sqlite:PATH`` or a plain path)."""
    text = str(database)
    return Path(text.removeprefix("sqlite://").removeprefix("sqlite:")) if text.startswith("sqlite:") else Path(text)


async def open_store(database: str | Path) -> Store:
    """Open (creating and migrating if needed) the store ``database`` names (see :func:`engine_of`)."""
    if engine_of(database) == "postgres":
        from exchange.store.postgres import PostgresStore

        return await PostgresStore.open(str(database))
    from exchange.store.sqlite import SqliteStore

    return await SqliteStore.open(sqlite_path(database))
