"""A clock a demonstration or training deployment can move forward, to show deadlines falling due.

The offset (in seconds) is read from a small file the operator writes (``exchange serve
--demo-clock FILE``); ``serve`` accepts it only together with ``--seed-demo``, so a real
deployment always runs on the real clock.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

from exchange.domain import utc_now


class FileOffsetClock:
    """``utc_now()`` plus the number of seconds written in ``path`` (0 when it is absent or unreadable)."""

    def __init__(self, path: Path, *, reread_seconds: float = 0.2) -> None:
        self.path = path
        self._reread = reread_seconds
        self._offset = 0.0
        self._read_at = float("-inf")

    def __call__(self) -> datetime:
        now = time.monotonic()
        if now - self._read_at >= self._reread:
            self._read_at = now
            try:
                self._offset = float(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                self._offset = 0.0
        return utc_now() + timedelta(seconds=self._offset)
