"""The structured record: every ledger event also goes out as one JSON line, written before it commits.

The record log is a file of JSON lines (path configurable). Each ledger event's line carries
the event's sequence number and the exact ledger entry bytes (base64), so ``exchange ledger
verify --log`` can check the log against the ledger. Operational lines (requests, alarms) go
to the same file through structlog; none of them ever holds content, key material or a subject
identifier — the event details are built by the service from codes and ids only.

The order that keeps the record crash-consistent
------------------------------------------------

A change's ledger lines are written and ``fsync``'d **before** its database transaction commits
(:meth:`Record.write_durably`); once it has committed, a short ``ledger.committed`` line names the
change (its ``txn``, a random id every ledger line of the change carries too). So whatever instant
a crash (SIGKILL, power loss) strikes:

* every entry the ledger holds is already in the log, byte for byte: a missing or different line
  is never an honest crash, always tampering (or a log that was not kept);
* the log may hold lines for a change that never committed — the crash came between the fsync and
  the commit, or the commit failed — and a rolled-back seq is reused by the next change, so the
  log can hold two entries for one seq. The verifier tolerates such an *orphan* (a line whose seq
  the ledger lacks, or holds with other bytes, and whose change was never marked committed) and
  counts it; two different entries for one seq that the log marks both committed are a conflict
  (a ledger rewound and rewritten). Lines written before this order existed carry no ``txn`` and
  count as committed, as they were written after their commit;
* a line cut short by a crash or a full disk is never followed on the same line: the next write
  starts a new line (and a short write on a full disk is truncated away when it can be). Such a
  fragment is not JSON and the verifier skips it: its change cannot have committed.

Failure is not hidden. A ledger line that cannot be written or synced raises
:class:`~exchange.errors.ReadOnly` (``read_only.disk_full`` for ENOSPC/EDQUOT, else
``read_only.record_log``) and the change is rolled back; :attr:`Record.fault` then says why until
a later durable write succeeds (:meth:`Record.probe`). Operational lines are best effort: a failure
to write one never fails the request it describes, it only sets :attr:`Record.fault`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from exchange.errors import DiskFull, ReadOnly, RecordLogUnwritable

RECORD_LOGGER = "exchange.record"

#: The event of the line that marks a change's ledger lines as committed (see the module text).
COMMITTED_EVENT = "ledger.committed"
#: The event of the line that marks them as rolled back, when the server knows it.
ROLLED_BACK_EVENT = "ledger.rolled_back"

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
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: fsync errors that mean "nothing to sync here" (a character device such as /dev/null, a pipe).
_NOT_SYNCABLE = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EROFS})


def _scrub(_: Any, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    for key in list(event_dict):
        if key in _FORBIDDEN:
            event_dict[key] = "[withheld]"
    return event_dict


@dataclass(frozen=True)
class Fault:
    """Why the record log cannot be written: the error a refused change gets, and since when."""

    code: str
    errno_name: str
    since: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "error": self.errno_name, "since": self.since}

    def error(self, retry_after: int = 5) -> ReadOnly:
        """The 503 a change gets while the record cannot be written (no path: the client needs none)."""
        if self.code == DiskFull.code:
            return DiskFull(
                "The exchange's record log is on a full disk, so it cannot record changes just now and is "
                "read-only. Nothing was changed; try again later.",
                extras={"cause": "record_log"},
                retry_after=retry_after,
            )
        return RecordLogUnwritable(
            f"The exchange cannot write its record log ({self.errno_name}), so it cannot record changes just "
            "now and is read-only. Nothing was changed; try again later.",
            extras={"cause": "record_log"},
            retry_after=retry_after,
        )


def _fault_of(error: OSError) -> Fault:
    number = error.errno or errno.EIO
    code = DiskFull.code if number in _DISK_FULL else RecordLogUnwritable.code
    return Fault(code, errno.errorcode.get(number, str(number)), datetime.now(UTC).isoformat())


#: fdatasync where there is one: it syncs the appended bytes and the file size, not the times.
_SYNC = getattr(os, "fdatasync", os.fsync)


def _fsync_all(descriptors: Sequence[int]) -> None:
    """Sync each distinct file among ``descriptors`` once, and close them all (run in a thread)."""
    synced: set[tuple[int, int]] = set()
    try:
        for descriptor in descriptors:
            status = os.fstat(descriptor)
            if (status.st_dev, status.st_ino) not in synced:
                synced.add((status.st_dev, status.st_ino))
                try:
                    _SYNC(descriptor)
                except OSError as error:
                    if error.errno not in _NOT_SYNCABLE:
                        raise
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


class _Sink:
    """An append-only JSON lines file, written with one ``os.write`` per batch of lines.

    If the file is moved away or deleted (log rotation, e.g. logrotate without copytruncate), the
    next line reopens the path, as the standard library's WatchedFileHandler does: no line is lost
    to a renamed file, and ``exchange ledger verify --log OLD --log NEW`` checks the pieces. A file
    that does not end in a newline (a line cut short) gets one before the next line.
    Every method runs on the event loop's thread; only the fsync of :meth:`Record.write_durably`
    runs in a worker thread, on a duplicate descriptor.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._identity = (0, 0)
        self._torn = False
        # A new folder is private; an existing one (a log directory the operator chose) keeps its mode.
        with contextlib.suppress(OSError):  # an unusable folder shows at the first write
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _open(self) -> int:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        # The record names who shared with whom: readable by the server's owner only.
        descriptor = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            status = os.fstat(descriptor)
            if stat.S_ISREG(status.st_mode):
                os.fchmod(descriptor, 0o600)
                self._torn = status.st_size > 0 and not _ends_in_newline(self._path, status.st_size)
            self._identity = (status.st_dev, status.st_ino)
        except OSError:
            os.close(descriptor)
            raise
        self._fd = descriptor
        return descriptor

    def _current(self) -> int:
        """The descriptor of the file now at the path, reopening it if it was moved or never opened."""
        if self._fd is None:
            return self._open()
        try:
            status = os.stat(self._path)
            moved = (status.st_dev, status.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        return self._open() if moved else self._fd

    def write(self, data: bytes) -> int:
        """Append ``data`` (whole lines) in one write; return the descriptor, or raise OSError.

        A short write (a disk filling up) is truncated away again when the file allows it; when it
        does not, the next write starts on a new line.
        """
        descriptor = self._current()
        if self._torn:
            data = b"\n" + data
        try:
            before = os.fstat(descriptor).st_size
        except OSError:
            before = -1
        written = 0
        try:
            while written < len(data):
                count = os.write(descriptor, data[written:])
                if count <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += count
        except OSError:
            if written:
                try:
                    if before < 0:
                        raise OSError(errno.EIO, "size unknown")
                    os.ftruncate(descriptor, before)
                except OSError:
                    self._torn = True
            raise
        self._torn = False
        return descriptor

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _ends_in_newline(path: Path, size: int) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) == b"\n"
    except OSError:
        return True  # unreadable to us: nothing to repair that we could see


class Record:
    """The record logger of one server instance (no global structlog configuration)."""

    def __init__(self, path: Path, *, console: bool | None = None) -> None:
        self.path = path
        self._sink = _Sink(path)
        #: Why the record log cannot be written, or None while it can (see the module text).
        self.fault: Fault | None = None
        #: Duplicates of the descriptors written to since the last :meth:`sync`.
        self._unsynced: list[int] = []
        #: One sync at a time: a sync that finds its lines taken by one in flight waits for that one.
        self._syncing = asyncio.Lock()
        if console is None:
            console = sys.stderr.isatty()
        self._console = structlog.dev.ConsoleRenderer(colors=True) if console else None
        self._json = structlog.processors.JSONRenderer(sort_keys=True)

        def tee(logger: Any, name: str, event_dict: structlog.types.EventDict) -> str:
            line = str(self._json(logger, name, dict(event_dict))) + "\n"
            try:
                self._sink.write(line.encode("utf-8"))
            except OSError as error:
                # Best effort: an operational line never fails what it describes.
                self._failed(error)
            self._echo(event_dict)
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

    def _echo(self, event_dict: Mapping[str, Any]) -> None:
        if self._console is not None:
            # The ledger bytes make the console unreadable; the file keeps them.
            shown = {k: v for k, v in event_dict.items() if k != "ledger_entry"}
            print(self._console(None, "info", shown), file=sys.stderr)

    def _failed(self, error: OSError) -> Fault:
        fault = _fault_of(error)
        if self.fault is None or self.fault.code != fault.code:
            self.fault = fault
        return self.fault

    def _line(self, event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        line = {"event": event, "level": "info", "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        line.update(structlog.contextvars.get_contextvars())
        line.update(fields)
        return dict(_scrub(None, "info", line))

    def append(self, lines: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Write ledger lines (event, fields) in one append, not yet synced; raise ReadOnly if that fails.

        Called inside the change they record; :meth:`sync` runs before the commit (once for every change
        that commits together), so the lines are durable before the change is.
        """
        rendered = [self._line(event, fields) for event, fields in lines]
        data = b"".join(str(self._json(None, "info", line)).encode("utf-8") + b"\n" for line in rendered)
        try:
            descriptor = self._sink.write(data)
            self._unsynced.append(os.dup(descriptor))
        except OSError as error:
            raise self._failed(error).error() from None
        for line in rendered:
            self._echo(line)

    async def sync(self) -> None:
        """Make every appended line durable (one fsync per file written since the last sync); ReadOnly if not.

        Changes committing in separate transactions (PostgreSQL) each call this: the lines one writes may
        already be in the fsync another started, so every call waits its turn, and the ones queued behind a
        sync share the next (the lines written meanwhile, all at once).
        """
        async with self._syncing:
            pending, self._unsynced = self._unsynced, []
            if not pending:
                return
            try:
                await asyncio.to_thread(_fsync_all, pending)
            except OSError as error:
                raise self._failed(error).error() from None
            self.fault = None

    async def write_durably(self, lines: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Append lines and sync them at once; raise ReadOnly if that fails."""
        self.append(lines)
        await self.sync()

    def mark(self, event: str, **fields: Any) -> None:
        """A best-effort line after the fact (``ledger.committed`` / ``ledger.rolled_back``)."""
        self.log.info(event, **fields)

    async def probe(self) -> None:
        """A durable write of one operational line: clears :attr:`fault` on success, raises ReadOnly if not."""
        fault = self.fault
        await self.write_durably([("record.writable", {"after": fault.as_json() if fault else None})])

    def close(self) -> None:
        self._sink.close()


class _Null:
    """The final logger: the processors already wrote the line."""

    def msg(self, message: str) -> None:
        return None

    log = debug = info = warning = warn = error = critical = exception = fatal = msg
