"""The verifier's second core: a forked worker checks the last part of a large export file.

Each entry costs ~2.4 us of base64 decoding, hashing and checks that hold the GIL (hashlib lets
it go only for 2 KiB or more), so one process cannot verify more than ~400,000 entries/s, whatever
the loop; a bare "read, decode, hash" loop is already below 500,000. A large export file is
therefore cut in two at a line boundary: a forked worker process reads the second part while
this one reads the first, then this one takes over the worker's summary of its part.

The worker only vouches; it never decides a verdict. It runs the same checks the hot loop runs
on every entry line (the writer's exact shape, consecutive seqs, strict base64, the seq inside
the entry or the full check, the deferral cap, the full check of the unsigned tail, the record
log) and sends back the heads and the end line untouched, with each run of entries between them
folded into its perfect subtrees (RFC 9162 section 2.1.1). This process then verifies the heads
(key, signature, order, place, fork, root) and the end line through the very code of the single
pass. At the first thing out of the ordinary (any line not in the writer's shape, a problem, a
head that does not verify) the worker's summary is dropped and this process reads the second
part itself, line by line, with its state as it was at the split: what is then reported, and
at which line, is exactly what a single pass reports.

The fallback rule, in one sentence: the worker's summary is used only if it vouches for its whole
part and this process's own checks of the heads and the end line pass on a copy of its state;
otherwise nothing of it is used. A file is split only when it is a regular file of at least
:data:`_PARALLEL_MIN_BYTES`, a second core is free, processes can be forked and this process runs
one thread (:func:`_split_offset`).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import multiprocessing
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from exchange.errors import LedgerProofError
from exchange.ledger.export import ENTRY_LINE_PREFIX, ENTRY_LINE_SUFFIX
from exchange.ledger.verify_lines import (
    _BEFORE_KEY,
    _CHUNK_BYTES,
    _DEFERRED_OVERHEAD,
    _PAD_BITS_1,
    _PAD_BITS_2,
    _SEQ_KEY,
    _SEQ_MEMBER,
    _file_chunks,
)

if TYPE_CHECKING:  # the verifier imports this module; the worker only calls the verifier's checks
    from exchange.ledger.verify import _Verifier

#: Files smaller than this are verified in one process (forking costs a few milliseconds).
_PARALLEL_MIN_BYTES = 32 * 2**20
#: The share of the file the worker verifies: this process also verifies every head and folds the
#: worker's subtrees (~0.05 s a million entries, mostly the worker's heads' signatures), and its own loop
#: costs some 3.2 us an entry to the worker's 2.7 us (CPU time, measured at 1M entries): it takes the
#: smaller part, (3.2 + 0.05) / (3.2 + 2.7) = 0.55 of the file going to the worker.
_WORKER_SHARE = 0.55
_ENTRY_SEQ = re.compile(rb'","kind":"entry","seq":(0|[1-9][0-9]*)}\n\Z')


@dataclass(frozen=True, slots=True)
class _Run:
    """Consecutive entries from ``first_seq``, as the perfect subtrees covering them: ``(level, hash)``."""

    first_seq: int
    subtrees: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class _Line:
    """A head or end line, ``offset`` lines after the split, for this process to check."""

    offset: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class _Summary:
    """What the worker vouches for: its part of the export, every entry in it checked."""

    events: list[_Run | _Line]
    #: Deferred bytes before its first head: with those before the split they may reach the cap.
    first_window_bytes: int
    #: (seq, line offset) of entries the record log lacks or has otherwise, in export order.
    log_missing: list[tuple[int, int]]
    log_different: list[tuple[int, int]]
    log_checked: int
    log_orphans: int


def _perfect_subtrees(leaves: list[bytes], start: int) -> list[tuple[int, bytes]]:
    """The perfect subtrees, left to right, that the tree's frontier merges leaves ``start``… into.

    Each is the largest that starts where the previous ended, is aligned (begins at a multiple of
    its size) and fits: appended to a frontier of ``start`` leaves one after the other they give the
    same frontier as the leaves appended one by one.
    """
    sha256 = hashlib.sha256
    subtrees: list[tuple[int, bytes]] = []
    done, position = 0, start
    while done < len(leaves):
        level = (len(leaves) - done).bit_length() - 1
        if position:
            level = min(level, (position & -position).bit_length() - 1)
        nodes = leaves[done : done + (1 << level)]
        while len(nodes) > 1:
            pairs = zip(nodes[::2], nodes[1::2], strict=True)
            nodes = [sha256(b"\x01" + left + right).digest() for left, right in pairs]
        subtrees.append((level, nodes[0]))
        done += 1 << level
        position += 1 << level
    return subtrees


def _summarise(verifier: _Verifier, path: str | os.PathLike[str], offset: int) -> _Summary | None:
    """Check the export from byte ``offset`` (a line's start) to its end; None at anything unusual.

    Line numbers in the summary are offsets from the split (the caller adds the line there).
    """
    sha256, a2b = hashlib.sha256, binascii.a2b_base64
    prefix, start = ENTRY_LINE_PREFIX, len(ENTRY_LINE_PREFIX)
    suffix = ENTRY_LINE_SUFFIX + b"\n"
    strict, log, check_entry = verifier.strict, verifier.log, verifier.check_entry
    seq_key, member, before_key, cap = _SEQ_KEY, _SEQ_MEMBER, _BEFORE_KEY, verifier.deferred_cap
    verifier.log_missing, verifier.log_different, verifier.log_checked, verifier.log_orphans = [], [], 0, 0
    events: list[_Run | _Line] = []
    leaves: list[bytes] = []
    add_leaf = leaves.append
    window: list[tuple[int, bytes]] = []  # (seq, bytes) of the deferred entries since the last head
    defer = window.append
    window_bytes, first_window_bytes = 0, -1
    overhead, pad_bits_1, pad_bits_2 = _DEFERRED_OVERHEAD, _PAD_BITS_1, _PAD_BITS_2
    try:
        with Path(path).open("rb") as handle:
            handle.seek(offset)
            size = 0  # the seq the worker's entries start from (if it has none, only line numbers use it)
            for raw in handle:
                if raw.startswith(prefix):
                    found = _ENTRY_SEQ.search(raw)
                    if found is None:
                        return None
                    size = int(found[1])
                    break
            run_start = size
            base = size - 1  # an entry's line offset is size - base; each head or end line lowers base
            handle.seek(offset)
            chunks = _file_chunks(handle.readlines)
            for chunk in chunks:
                for raw in chunk:
                    tail = suffix % size
                    if raw.endswith(tail) and raw.startswith(prefix):
                        text = raw[start : len(raw) - len(tail)]
                    elif raw.startswith(prefix):
                        return None  # not the writer's entry line for this seq
                    else:
                        if leaves:
                            events.append(_Run(run_start, _perfect_subtrees(leaves, run_start)))
                            leaves.clear()
                        value = json.loads(raw)
                        kind = value.get("kind") if isinstance(value, dict) else None
                        if kind not in ("head", "end"):
                            return None
                        if first_window_bytes < 0:
                            first_window_bytes = window_bytes
                        if kind == "end":
                            for seq, entry in window:  # the unsigned tail
                                check_entry(entry, seq - base, seq)
                            # The end line must be the file's last line: anything after it is trailing data.
                            if raw is not chunk[-1] or next(chunks, None) is not None:
                                return None
                            events.append(_Line(size - base, raw))
                            return _Summary(
                                events, first_window_bytes, verifier.log_missing, verifier.log_different,
                                verifier.log_checked, verifier.log_orphans,
                            )
                        events.append(_Line(size - base, raw))
                        base -= 1
                        window.clear()
                        window_bytes, run_start = 0, size
                        continue
                    entry = a2b(text, strict_mode=True)
                    if text.endswith(b"=") and (pad_bits_2[text[-3]] if text[-2] == 61 else pad_bits_1[text[-2]]):
                        return None
                    if strict:
                        check_entry(entry, size - base, size)
                    else:
                        # As in the hot loop (see _seq_is): defer the full check, or do it now.
                        at = entry.rfind(seq_key)
                        if (
                            at > 0
                            and entry[at - 1] in before_key
                            and entry.startswith(member % size, at)
                            and entry.find(b"}", at) == len(entry) - 1
                        ):
                            defer((size, entry))
                            window_bytes += len(entry) + overhead
                            if window_bytes > cap:
                                if first_window_bytes < 0:
                                    return None  # where the cap is reached depends on the first part
                                for seq, deferred in window:
                                    check_entry(deferred, seq - base, seq)
                                window.clear()
                                window_bytes = 0
                        else:
                            check_entry(entry, size - base, size)
                    leaf = sha256(b"\x00" + entry).digest()
                    add_leaf(leaf)
                    if log is not None:
                        verifier.check_log(leaf, size - base, size)
                    size += 1
    except (LedgerProofError, ValueError, OSError):  # binascii.Error and JSON errors are ValueErrors
        return None
    return None  # no end line


def _work(verifier: _Verifier, path: str | os.PathLike[str], offset: int, results: Connection) -> None:
    """The worker process: send the summary of the file from ``offset``, or None."""
    summary: _Summary | None = None
    try:
        summary = _summarise(verifier, path, offset)
    finally:  # whatever happened, the verifier gets an answer rather than waiting for one
        results.send(summary)
        results.close()


class _Worker:
    """A forked process verifying the export file from byte ``offset``; see the module documentation."""

    def __init__(self, verifier: _Verifier, path: str | os.PathLike[str], offset: int) -> None:
        context = multiprocessing.get_context("fork")
        self._results, sending = context.Pipe(duplex=False)
        self._process = context.Process(target=_work, args=(verifier, path, offset, sending), daemon=True)
        self._process.start()
        sending.close()

    def result(self) -> _Summary | None:
        """Wait for the worker's summary; None if it could not vouch for its part or died."""
        try:
            summary: _Summary | None = self._results.recv()
        except (EOFError, OSError):
            summary = None
        self.close()
        return summary

    def close(self) -> None:
        """Stop the worker if it still runs (verification ended before the split) and reap it."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._results.close()


def _split_offset(path: str | os.PathLike[str]) -> int | None:
    """Where a worker should start reading the export file, or None to verify it in one process.

    Only a regular file of at least :data:`_PARALLEL_MIN_BYTES` is split, only where a second core
    is free to use and processes can be forked, and only from a process running one thread: a forked
    child of a threaded process may find a lock held by a thread that it does not have.
    """
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2:
        return None
    try:
        with Path(path).open("rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode) or status.st_size < _PARALLEL_MIN_BYTES:
                return None
            handle.seek(int(status.st_size * (1 - _WORKER_SHARE)))
            handle.readline()  # to the start of the next line
            offset = handle.tell()
    except OSError:
        return None  # the single pass reports it
    return offset if offset < status.st_size else None


def _split_chunks(handle: BinaryIO, offset: int) -> Iterator[list[bytes] | None]:
    """The file's chunks as :func:`_file_chunks` reads them, with a ``None`` where byte ``offset`` is.

    ``readlines(hint)`` stops after the line that takes it past ``hint``, so asking for one byte
    less than is left before the split stops exactly there. Should the file have changed since
    the offset was chosen, so that a line now crosses it, no ``None`` is given: no hand-over.
    """
    position = 0
    while position < offset:
        left = offset - position
        chunk = handle.readlines(min(_CHUNK_BYTES, left - 1)) if left > 1 else [handle.readline()]
        if not chunk or not chunk[0]:
            return  # the file ended before the split
        position += sum(map(len, chunk))
        yield chunk
    if position == offset:
        yield None
    yield from _file_chunks(handle.readlines)
