"""Stopping the service's background tasks (the head signer, the deadline worker) without hanging."""

from __future__ import annotations

import asyncio


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended; an error it ended with is raised.

    Waited on with :func:`asyncio.wait`, not awaited: awaiting a task hands the caller's own
    cancellation on to the task, so a shutdown with a deadline could never give up on a task that
    does not end. Here the caller's cancellation is raised in the caller, at once.
    """
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()
