"""The structured record: every ledger event also goes out through structlog as one JSON line.

The record log is a file of JSON lines (path configurable). Each ledger event's line carries
the event's sequence number and the exact ledger entry bytes (base64), so ``exchange ledger
verify --log`` can check the log against the ledger. Operational lines (requests, alarms) go
to the same logger; none of them ever holds content, key material or a subject identifier —
the event details are built by the service from codes and ids only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from exchange import crypto

RECORD_LOGGER = "exchange.record"

# Keys that must never reach a log line, whatever a caller passes by mistake.
_FORBIDDEN = frozenset(
    {
        "value",
        "values",
        "body",
        "narrative",
        "necessity",
        "private",
        "private_key",
        "secret",
        "subject_identifier",
        "signature_input",
        "authorization",
        "content_key",
    }
)


def _scrub(_: Any, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    for key in list(event_dict):
        if key in _FORBIDDEN:
            event_dict[key] = "[withheld]"
    return event_dict


class _Sink:
    """A line-buffered, fsync-free JSON lines file the logger writes to.

    If the file is moved away or deleted (log rotation, e.g. logrotate without copytruncate), the
    next line reopens the path, as the standard library's WatchedFileHandler does: no line is lost
    to a renamed file, and ``exchange ledger verify --log OLD --log NEW`` checks the pieces.
    """

    def __init__(self, path: Path) -> None:
        # A new folder is private; an existing one (a log directory the operator chose) keeps its mode.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = path
        self._handle, self._identity = self._open()

    def _open(self) -> tuple[TextIO, tuple[int, int]]:
        # The record names who shared with whom: readable by the server's owner only.
        crypto.create_private(self._path)
        handle = self._path.open("a", encoding="utf-8", buffering=1)
        status = os.fstat(handle.fileno())
        return handle, (status.st_dev, status.st_ino)

    def write(self, line: str) -> None:
        try:
            status = os.stat(self._path)
            moved = (status.st_dev, status.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved:
            self._handle.close()
            self._handle, self._identity = self._open()
        self._handle.write(line if line.endswith("\n") else line + "\n")

    def close(self) -> None:
        self._handle.close()


class Record:
    """The record logger of one server instance (no global structlog configuration)."""

    def __init__(self, path: Path, *, console: bool | None = None) -> None:
        self.path = path
        self._sink = _Sink(path)
        if console is None:
            console = sys.stderr.isatty()
        console_renderer = structlog.dev.ConsoleRenderer(colors=True) if console else None
        json_renderer = structlog.processors.JSONRenderer(sort_keys=True)
        sink = self._sink

        def tee(logger: Any, name: str, event_dict: structlog.types.EventDict) -> str:
            sink.write(str(json_renderer(logger, name, dict(event_dict))))
            if console_renderer is not None:
                # The ledger bytes make the console unreadable; the file keeps them.
                shown = {k: v for k, v in event_dict.items() if k != "ledger_entry"}
                print(console_renderer(logger, name, shown), file=sys.stderr)
            return ""

        self.log: Any = structlog.wrap_logger(
            _Null(),
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _scrub,
                tee,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_name=RECORD_LOGGER,
        )

    def close(self) -> None:
        self._sink.close()


class _Null:
    """The final logger: the processors already wrote the line."""

    def msg(self, message: str) -> None:
        return None

    log = debug = info = warning = warn = error = critical = exception = fatal = msg
