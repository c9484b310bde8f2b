"""Store bookkeeping that runs to its end whatever happens to the task that started it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def uninterrupted(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if this task is cancelled meanwhile; the cancellation is raised after.

    For the store's own bookkeeping: SQLite runs a statement that was sent (BEGIN and the group's
    COMMIT, on a thread) whatever happens to the task that sent it, and a PostgreSQL COMMIT that was
    sent may commit although its answer never arrives; stopping half-way would only make the store's
    idea of its transaction wrong, and a caller could not learn whether its change committed.
    """
    inner = asyncio.ensure_future(step)
    interrupted = False
    while not inner.done():
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            # The task itself was cancelled, even when the step ended in the same turn of the loop
            # (then ``inner`` is done already): that cancellation must not be swallowed.
            interrupted = interrupted or not inner.cancelled()
        except BaseException:  # noqa: BLE001, S110 - the step's own error is raised below
            pass
    if interrupted:
        if not inner.cancelled():
            inner.exception()  # retrieved: the cancellation is what the caller learns
        raise asyncio.CancelledError
    return inner.result()
