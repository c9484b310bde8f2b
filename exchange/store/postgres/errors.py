"""What a PostgreSQL failure means for the exchange, as the project's own errors.

The mapping follows SQLite's (exchange.store.sqlite): a store that cannot be written is read-only
(503 with ``Retry-After``, and the service's read-only mode), a store that cannot be reached is
unavailable, and a transaction PostgreSQL chose to abort so that another could go on lost a race.
SQLSTATE codes: https://www.postgresql.org/docs/15/errcodes-appendix.html
"""

from __future__ import annotations

import asyncpg

from exchange.errors import DiskFull, ExchangeError, StateChanged, StoreUnavailable, StoreUnwritable

_DISK_FULL = "53100"
#: The database refuses writes: a read-only transaction (a standby, ``default_transaction_read_only``),
#: an I/O error, or another shortage of resources (class 53: memory, connections, a configured limit).
_UNWRITABLE = frozenset({"25006", "58030"})
_UNWRITABLE_CLASSES = ("53",)
#: Aborted to let another transaction on: a deadlock or, at stricter isolation, a serialisation failure.
_LOST_RACE = frozenset({"40P01", "40001"})
#: The server went away or is not accepting connections: class 08, and shutdown or recovery (57P0x).
_UNREACHABLE_CLASSES = ("08",)
_UNREACHABLE = frozenset({"57P01", "57P02", "57P03"})

UNAVAILABLE = "The database cannot be reached."


def disk_full() -> DiskFull:
    return DiskFull(
        "The exchange's database is on a full disk, so it cannot record changes just now and is "
        "read-only. Nothing was changed; try again later.",
        extras={"cause": "store"},
        retry_after=1,
    )


def unwritable() -> StoreUnwritable:
    return StoreUnwritable(
        "The exchange cannot write its database just now, so it is read-only. Nothing was changed; "
        "try again later.",
        extras={"cause": "store"},
        retry_after=1,
    )


def translated(exc: BaseException) -> ExchangeError | None:
    """The project's error for a driver failure ``exc``, or None if it is not one we map (then it stays a 500)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state == _DISK_FULL:
            return disk_full()
        if state in _UNWRITABLE or state.startswith(_UNWRITABLE_CLASSES):
            return unwritable()
        if state in _LOST_RACE:
            return StateChanged("Someone else changed this at the same time; nothing was done. Try again.")
        if state in _UNREACHABLE or state.startswith(_UNREACHABLE_CLASSES):
            return StoreUnavailable(UNAVAILABLE)
        return None
    # Lost in the middle of a statement, or a pooled connection the server closed while it was idle
    # (asyncpg then finds its protocol in a state it cannot continue from).
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | asyncpg.InternalClientError):
        return StoreUnavailable(UNAVAILABLE)
    return None


#: What reaching the server can raise besides the driver's own errors (refused, unresolvable, timed out).
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
