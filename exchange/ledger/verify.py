"""The offline verifier of a ledger export: needs nothing but the export and the server's public key.

It streams the export once: for each entry it checks the ``seq`` inside the entry's bytes is the
entry's position (and the ``seq`` on its line), hashes the leaf (RFC 9162 section 2.1.1) and folds
it into the frontier of perfect subtrees; at each signed tree head it checks the key, the Ed25519
signature and that the root recomputed from the frontier is the signed root. Every head being the
root of one and the same sequence of entries is what makes successive heads consistent (RFC 9162
section 2.1.4) without separate proofs; two heads signed for the same size with different roots are
a fork and reported as one.

How much of each entry's form is checked (``strict``)
-----------------------------------------------------

With ``strict=True`` every entry is checked in full: its bytes must be one RFC 8785 canonical JSON
object with an integer ``seq`` equal to its position and string ``time`` and ``type``. That full
check costs more than everything else together, so by default it is only *required* of entries no
valid signed head covers: the unsigned tail after the last head. An entry under a head is protected
by the server's signature over the root: changing, adding, removing or moving any byte of it breaks
that root. For such an entry the default only reads its ``seq`` with a bounded byte search (proved
exact for any JSON object in ``_seq_is``; when the search cannot be sure it falls back to the full
check, so an entry that is not even JSON is still reported unless its ``seq`` reads cleanly).

The trade-off, stated plainly: by default an entry that the server itself signed may be accepted
although its bytes are not canonical JSON (in the worst case not JSON, or lacking ``time`` or
``type``), provided its top-level ``seq`` reads as its position. The server only ever writes
canonical entries, so such an entry means a server bug, never tampering by anyone without the
server key. ``--strict`` rules even that out.

The full check of an entry is deferred, not skipped, until a head covering it verifies; if
verification stops at a later problem (a root mismatch, a gap, truncation), the deferred entries are
checked first, so the first problem reported is still the earliest in the export, as in strict
mode. Memory is O(log n) for the tree plus the deferred entries since the last head, capped at
``_DEFERRED_BYTES``: beyond that they are checked in full at once (never laxer, only stricter).

A large export file is verified on two cores: a forked worker process checks the second part of
the file while this process checks the first, and this process then verifies the heads and the
end line of the second part itself, folding in the subtrees the worker computed. The worker only
vouches for a part in which everything is as the writer writes it; at anything else this process
reads that part itself, so the verdict, the problem and its line are always the single pass's
(see :mod:`exchange.ledger.verify_split`).

The first problem stops verification with a :class:`~exchange.errors.LedgerProofError` whose
``extras`` say where and what: ``{"source": "export" | "log", "line": n, "seq": s, "problem":
"<code>"}``. Problem codes are stable:

=========================  ====================================================================
``export.unreadable``      the export file cannot be read
``export.empty``           no lines at all
``export.bad_header``      the first line is not an export header of this format
``export.key_mismatch``    the header names another server key, or the key given is unusable
``export.malformed_line``  a line is not a JSON object of a known kind, or lacks a field
``export.truncated``       the closing ``end`` line is missing, or entries before it are
``export.count_mismatch``  the ``end`` line's counts disagree with what the export holds
``export.trailing_data``   lines after the ``end`` line
``entry.bad_base64``       an entry is not valid base64
``entry.not_json``         an entry's bytes are not one JSON document in UTF-8
``entry.not_object``       an entry is JSON but not an object
``entry.not_canonical``    an entry is not in RFC 8785 canonical form
``entry.missing_field``    an entry lacks an integer ``seq`` or a string ``time`` or ``type``
``entry.seq_mismatch``     the ``seq`` inside the entry is not the ``seq`` on its line
``entry.seq_gap``          sequence numbers skip: entries are missing
``entry.seq_duplicate``    a sequence number appears again
``entry.seq_reordered``    entries are out of order (the expected one appears later)
``head.malformed``         a tree head line is not a well-formed tree head
``head.key_id_mismatch``   a head names a key other than the header's server key
``head.signature_invalid`` a head's signature does not verify under the server key
``head.out_of_order``      a head is smaller than the head before it
``head.misplaced``         a head is not right after the entry that completes its size
``head.fork``              two validly signed heads of one size have different roots
``head.root_mismatch``     the entries do not hash to the signed root
``log.unreadable``         the record log file cannot be read
``log.malformed``          a record log line carrying a ledger entry lacks a whole-number seq or base64
``log.conflict``           the log carries two different entries for one seq, both marked committed
``log.entry_missing``      an exported entry is not in the log
``log.entry_different``    the log's entry (the one marked committed, if any) differs from the export's
=========================  ====================================================================

Checking against the record log (``log_path``)
----------------------------------------------

The server writes and syncs a change's ledger lines *before* the change commits, and marks them
committed afterwards (``exchange.record`` explains the order). So every exported entry must be in
the log with the same bytes: a missing or different one is reported whatever a crash did. What an
honest crash or a failed commit can leave is tolerated and counted in the report, never reported as
tampering: lines for seqs the export does not reach (``log_entries_beyond_export``), lines for a
seq the export holds with other bytes that were never marked committed — a rolled-back change
whose seq the next change reused (``log_orphaned_entries``) — and fragments that are not JSON
(``log_torn_lines``). When the log marks one entry of a seq committed, only that one is accepted.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import itertools
import json
import json.encoder
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import rfc8785

from exchange import crypto
from exchange.errors import CryptoError, LedgerProofError
from exchange.ledger.export import ENTRY_LINE_PREFIX, ENTRY_LINE_SUFFIX, EXPORT_FORMAT
from exchange.ledger.heads import TreeHead, check_timestamp
from exchange.ledger.merkle import EMPTY_ROOT, leaf_hash
from exchange.ledger.verify_lines import (
    _BEFORE_KEY,
    _DEFERRED_BYTES,
    _DEFERRED_OVERHEAD,
    _PAD_BITS_1,
    _PAD_BITS_2,
    _SEQ_KEY,
    _SEQ_MEMBER,
    _file_chunks,
)
from exchange.ledger.verify_split import _Run, _split_chunks, _split_offset, _Summary, _Worker
from exchange.record import COMMITTED_EVENT

#: Numbered export lines, as ``enumerate`` yields them; read ahead when diagnosing a fault.
_Numbered = Iterator[tuple[int, bytes]]
#: How many lines of an export given as an iterable are batched into one chunk.
_CHUNK_LINES = 4096
#: How many leading mismatching seqs a log error lists.
_LOG_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """What a verified export holds and how long verification took."""

    server_key_id: str
    exported_at: str
    entries: int
    heads: int
    last_signed_size: int
    last_signed_root: bytes | None
    root_hash: bytes
    unsigned_tail: int
    log_entries_checked: int
    log_entries_beyond_export: int
    #: Log entries for an exported seq with other bytes, never marked committed: rolled back (tolerated).
    log_orphaned_entries: int
    #: Log lines that are not JSON: cut short by a crash or a full disk (skipped).
    log_torn_lines: int
    elapsed_seconds: float

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary (hashes as standard base64)."""
        def b64(value: bytes | None) -> str | None:
            return None if value is None else base64.b64encode(value).decode("ascii")

        return {
            "server_key_id": self.server_key_id,
            "exported_at": self.exported_at,
            "entries": self.entries,
            "heads": self.heads,
            "last_signed_size": self.last_signed_size,
            "last_signed_root": b64(self.last_signed_root),
            "root_hash": b64(self.root_hash),
            "unsigned_tail": self.unsigned_tail,
            "log_entries_checked": self.log_entries_checked,
            "log_entries_beyond_export": self.log_entries_beyond_export,
            "log_orphaned_entries": self.log_orphaned_entries,
            "log_torn_lines": self.log_torn_lines,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


def _fail(problem: str, line: int | None, seq: int | None, detail: str, **more: Any) -> NoReturn:
    source = "log" if problem.startswith("log.") else "export"
    extras = {"source": source, "line": line, "seq": seq, "problem": problem, **more}
    raise LedgerProofError(detail, extras=extras)


# --------------------------------------------------------------------------- canonical JSON, fast
#
# The full check of an entry (every entry with ``strict``, otherwise those no valid head covers;
# see the module documentation). Doing it with the pure-Python ``rfc8785`` package costs ~14 µs
# an entry, more than everything else together, so the common case takes a fast route that gives
# the same answer:
#
# * the C JSON scanner parses the entry (floats, NaN/Infinity and integers of 16 digits or more
#   are sent to the slow route: they are the only values whose RFC 8785 form differs from
#   Python's, apart from key order over non-ASCII keys);
# * the C encoder re-serialises it with sorted keys and no whitespace; for an object of ASCII
#   text, strings, small integers, booleans and null this is byte for byte RFC 8785 (section 3.2:
#   same escapes, "\u00xx" lowercase for other control characters, UTF-16 key order equal to code
#   point order for ASCII);
# * the entry is canonical exactly when the two are equal.
#
# Anything else (non-ASCII text, floats, large integers) goes through ``rfc8785.dumps`` itself.


class _NeedsFullCanonicalisation(Exception):
    """Raised inside the fast scanner for a value only the RFC 8785 implementation judges exactly."""


def _refuse_float(_: str) -> Any:
    raise _NeedsFullCanonicalisation


def _checked_int(text: str) -> int:
    # RFC 8785 section 3.2.2.3: numbers are IEEE doubles. Up to 15 characters (at most 15 digits)
    # an integer is below 2**53 and exact; anything longer is left to the exact route.
    if len(text) > 15:
        raise _NeedsFullCanonicalisation
    return int(text)


# The C scanner object behind JSONDecoder: called directly it skips raw_decode's extra checks.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(  # type: ignore[attr-defined]
    parse_float=_refuse_float, parse_int=_checked_int, parse_constant=_refuse_float
).scan_once
_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, None, json.encoder.c_encode_basestring, None, ":", ",", True, False, False  # type: ignore[attr-defined]
) if json.encoder.c_make_encoder is not None else None  # type: ignore[attr-defined]


def _jcs_number(text: str) -> int | float:
    """An integer literal as RFC 8785 section 3.2.2.3 sees it: an IEEE 754 double.

    Within 2**53 the integer is exact; beyond it only the double's own shortest form is canonical
    (``10000000000000000`` is, ``9007199254740993`` is not), so the literal becomes that double.
    """
    number = int(text)
    return number if abs(number) < 2**53 else float(number)


def _canonical_exact(entry: bytes, line: int, seq: int) -> dict[str, Any]:
    """Parse an entry and check it against ``rfc8785.dumps``: the slow, exact route."""
    try:
        text = entry.decode("utf-8")
        value = json.loads(text, parse_int=_jcs_number)
    except ValueError:
        _fail("entry.not_json", line, seq, f"Entry seq {seq} (line {line}) is not a JSON document in UTF-8.")
    if not isinstance(value, dict):
        _fail("entry.not_object", line, seq, f"Entry seq {seq} (line {line}) is JSON but not an object.")
    try:
        canonical = bytes(rfc8785.dumps(value))
    except (ValueError, TypeError):  # rfc8785.CanonicalizationError is a ValueError
        _fail(
            "entry.not_canonical", line, seq,
            f"Entry seq {seq} (line {line}) holds a value RFC 8785 canonical JSON cannot represent.",
        )
    if canonical != entry:
        _fail(
            "entry.not_canonical", line, seq,
            f"Entry seq {seq} (line {line}) is valid JSON but not in RFC 8785 canonical form "
            "(key order, spacing, escapes or number format differ).",
        )
    return value


def _canonical_entry(entry: bytes, line: int, seq: int) -> dict[str, Any]:
    """Return the entry as an object, or raise unless it is RFC 8785 canonical JSON."""
    try:
        text = entry.decode("utf-8")
        value, stop = _SCAN(text, 0)
    except _NeedsFullCanonicalisation:
        return _canonical_exact(entry, line, seq)
    except (ValueError, StopIteration):
        return _canonical_exact(entry, line, seq)  # the exact route words the error
    if type(value) is not dict:
        _fail("entry.not_object", line, seq, f"Entry seq {seq} (line {line}) is JSON but not an object.")
    if stop != len(text) or not text.isascii() or _ENCODE is None:
        return _canonical_exact(entry, line, seq)
    if "".join(_ENCODE(value, 0)) != text:
        _fail(
            "entry.not_canonical", line, seq,
            f"Entry seq {seq} (line {line}) is valid JSON but not in RFC 8785 canonical form "
            "(key order, spacing, escapes or number format differ).",
        )
    return value



# --------------------------------------------------------------------------- the record log


@dataclass(slots=True)
class _Log:
    """The ledger entries of a record log, as :func:`_read_log` found them.

    ``entries`` maps each seq to (the digests an exported entry of that seq may have, every distinct
    digest the log holds for it). The first are the one digest the log marks committed, if any,
    else every digest it holds: a seq reused after a rollback has an orphan and the real line, and
    either may be the one that committed (see ``exchange.record`` for the order that makes this so).
    """

    entries: dict[int, tuple[tuple[bytes, ...], tuple[bytes, ...]]]
    torn_lines: int


def _read_log(paths: Sequence[str | os.PathLike[str]]) -> _Log:
    """Read structlog JSON-lines record logs: each seq's entry digests, and which changes committed.

    Several files are one log cut by rotation (oldest first, say): an entry may appear in any of
    them. A line that is not JSON is a fragment cut short by a crash or a full disk: skipped and
    counted, since its change cannot have committed (an entry of it in the ledger is then reported
    missing). The same seq with two different entries that the log marks both committed is a
    conflict. Line numbers are per file; a problem's extras name the ``file`` when more than one is
    read.
    """
    # seq -> [(digest, line, file, txn)], in reading order
    found: dict[int, list[tuple[bytes, int, str, str | None]]] = {}
    committed: set[str] = set()
    torn = 0
    several = len(paths) > 1
    marker = COMMITTED_EVENT.encode("ascii")
    for path in paths:
        name = str(path)
        more: dict[str, Any] = {"file": name} if several else {}
        of = f" of {name}" if several else ""
        try:
            with Path(path).open("rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    is_entry = b'"ledger_entry"' in raw
                    if not is_entry and marker not in raw:
                        continue  # an operational line
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        torn += 1
                        continue
                    if not isinstance(record, dict):
                        continue  # the words appeared inside some other value
                    txn = record.get("txn")
                    if "ledger_entry" not in record:
                        if record.get("event") == COMMITTED_EVENT and isinstance(txn, str):
                            committed.add(txn)
                        continue
                    seq, text = record.get("seq"), record["ledger_entry"]
                    if type(seq) is not int or seq < 0 or not isinstance(text, str) or not isinstance(
                        txn, str | None
                    ):
                        _fail(
                            "log.malformed", number, None,
                            f"Log line {number}{of} has a ledger entry without a whole-number seq and base64 bytes.",
                            **more,
                        )
                    try:
                        entry = crypto.b64decode(text)
                    except CryptoError:
                        _fail(
                            "log.malformed", number, seq,
                            f"Log line {number}{of} (seq {seq}) has an entry not in base64.", **more,
                        )
                    found.setdefault(seq, []).append((leaf_hash(entry), number, name, txn))
        except OSError as exc:
            raise LedgerProofError(
                f"The record log{f' {name}' if several else ''} cannot be read: {exc.strerror or exc}.",
                extras={"source": "log", "line": None, "seq": None, "problem": "log.unreadable", **more},
            ) from None
    entries: dict[int, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {}
    for seq, lines in found.items():
        if len(lines) == 1:
            single = (lines[0][0],)
            entries[seq] = (single, single)
            continue
        # Lines written before txn ids existed (no txn) were written after their commit.
        kept = [line for line in lines if line[3] is None or line[3] in committed]
        for later in kept[1:]:
            if later[0] != kept[0][0]:
                _conflict(seq, kept[0], later, several)
        distinct = tuple(dict.fromkeys(line[0] for line in lines))
        entries[seq] = ((kept[0][0],) if kept else distinct, distinct)
    return _Log(entries, torn)


def _conflict(
    seq: int, first: tuple[bytes, int, str, str | None], later: tuple[bytes, int, str, str | None], several: bool
) -> NoReturn:
    of = f" of {later[2]}" if several else ""
    where = f"{first[1]} of {first[2]}" if several else str(first[1])
    files = {"file": later[2], "other_file": first[2]} if several else {}
    _fail(
        "log.conflict", later[1], seq,
        f"Log lines {where} and {later[1]}{of} carry two different entries for seq {seq}, both committed.",
        other_line=first[1], **files,
    )


# --------------------------------------------------------------------------- the verifier


def _parse_line(raw: bytes, line: int, seq: int) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        _fail("export.malformed_line", line, seq, f"Line {line} is not JSON.")
    if not isinstance(value, dict) or value.get("kind") not in ("entry", "head", "end"):
        _fail("export.malformed_line", line, seq, f"Line {line} is not an entry, head or end line.")
    return value


def _entry_line_fields(value: Mapping[str, Any], line: int, expected: int) -> tuple[int, str]:
    seq, text = value.get("seq"), value.get("entry")
    if set(value) != {"kind", "seq", "entry"} or type(seq) is not int or not isinstance(text, str):
        _fail(
            "export.malformed_line", line, expected,
            f"Entry line {line} needs exactly a whole-number seq and a base64 entry.",
        )
    return seq, text


class _ExportLines:
    """The export's lines in chunks of whole lines, numbered from 1.

    The hot loop takes a chunk at a time (:meth:`take_chunk`), which costs no per-line call;
    everything else (the header, reading ahead to diagnose a fault, the trailing-data check)
    iterates ``(number, line)`` pairs from where the hot loop left off (:meth:`resume_after`).
    A ``None`` among the chunks marks where a worker's share of the file begins (see
    :func:`~exchange.ledger.verify_split._summarise`): :meth:`take_chunk` returns it, iteration passes over it.
    """

    def __init__(self, chunks: Iterator[list[bytes] | None]) -> None:
        self._chunks = chunks
        self._chunk: list[bytes] = []
        self._next = 0  # index in _chunk of the next line to hand out
        self.number = 0  # the number of the last line handed out

    def __iter__(self) -> _ExportLines:
        return self

    def __next__(self) -> tuple[int, bytes]:
        while self._next >= len(self._chunk):
            chunk = next(self._chunks)  # StopIteration: no more lines
            if chunk is not None:
                self._chunk, self._next = chunk, 0
        raw = self._chunk[self._next]
        self._next += 1
        self.number += 1
        return self.number, raw

    def take_chunk(self) -> list[bytes] | None:
        """The lines not handed out yet, up to a chunk's end: ``[]`` at the end, ``None`` at a split mark.

        They count as handed out: a caller that stops part way says where with :meth:`resume_after`.
        """
        if self._next < len(self._chunk):
            rest = self._chunk[self._next :]
        else:
            chunk = next(self._chunks, [])
            if chunk is None:
                return None
            rest = chunk
        self._chunk, self._next = rest, len(rest)
        self.number += len(rest)
        return rest

    def resume_after(self, chunk: list[bytes], index: int, number: int) -> None:
        """Hand out next the line after ``chunk[index]``, which is line ``number``."""
        self._chunk, self._next, self.number = chunk, index + 1, number


def _batches(lines: Iterator[bytes]) -> Iterator[list[bytes]]:
    """Lines of an iterable in chunks of :data:`_CHUNK_LINES`."""
    while chunk := list(itertools.islice(lines, _CHUNK_LINES)):
        yield chunk


class _Verifier:
    """One pass over one export; all state for :func:`verify_export`."""

    def __init__(
        self,
        public_key: bytes,
        key_id: str,
        log: _Log | None,
        progress: Callable[[int], None] | None,
        progress_every: int,
        strict: bool = False,
    ) -> None:
        self.public_key = public_key
        self.strict = strict
        self.key_id = key_id
        self.log = log.entries if log is not None else None
        self.progress = progress
        self.progress_every = progress_every
        self.exported_at = ""
        self.stack: list[bytes] = []  # frontier: one perfect-subtree hash per 1 bit of size
        self.size = 0
        self.heads = 0
        self.last_head_size = -1
        self.last_head_root: bytes | None = None
        self.signed_roots: dict[int, tuple[bytes, int]] = {}  # size -> (root, line): fork detection
        self.log_missing: list[tuple[int, int]] = []  # (seq, export line)
        self.log_different: list[tuple[int, int]] = []
        self.log_checked = 0
        self.log_orphans = 0
        # (line, seq, bytes) of entries whose full check waits for a head to cover them
        self.deferred: list[tuple[int, int, bytes]] = []
        self.deferred_bytes = 0  # their size, with the allowance per entry: see _DEFERRED_BYTES
        self.deferred_cap = _DEFERRED_BYTES  # read once: the worker's loop and this one use the same cap
        self.worker: _Worker | None = None  # verifying the export's second part, when it is a large file

    # ----------------------------------------------------------------- header

    def header(self, lines: _Numbered) -> None:
        first = next(lines, None)
        if first is None:
            _fail("export.empty", 1, None, "The export is empty: it has no header line.")
        line, raw = first
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        kind = (value.get("kind"), value.get("format")) if isinstance(value, dict) else None
        if not isinstance(value, dict) or kind != ("header", EXPORT_FORMAT):
            _fail("export.bad_header", line, None, f"Line {line} is not a header of format {EXPORT_FORMAT}.")
        key_id, exported_at = value.get("server_key_id"), value.get("exported_at")
        if not isinstance(key_id, str) or not isinstance(exported_at, str):
            _fail(
                "export.bad_header", line, None,
                "The export header lacks the server key id or export time.",
            )
        try:
            check_timestamp(exported_at)
        except LedgerProofError as exc:
            _fail("export.bad_header", line, None, f"The export header's time is not usable: {exc.detail}")
        if key_id != self.key_id:
            _fail(
                "export.key_mismatch", line, None,
                f"The export was signed by server key {key_id}, but the key given to check it is "
                f"{self.key_id}.",
            )
        self.exported_at = exported_at

    # ----------------------------------------------------------------- entries

    def run(self, lines: _ExportLines) -> None:
        """The single pass; at any problem, a deferred earlier entry's own problem is reported first."""
        try:
            self.pass_over(lines)
        except LedgerProofError:
            try:
                self.check_deferred()
            except LedgerProofError as earlier:
                raise earlier from None
            raise

    def pass_over(self, lines: _ExportLines) -> None:
        """The hot loop: one pass, fast path for the exact line shape the writer emits."""
        sha256 = hashlib.sha256
        a2b = binascii.a2b_base64
        prefix, start = ENTRY_LINE_PREFIX, len(ENTRY_LINE_PREFIX)
        suffix = ENTRY_LINE_SUFFIX + b"\n"
        canonical, scan, encode = _canonical_entry, _SCAN, _ENCODE
        stack, log = self.stack, self.log
        pop, push = stack.pop, stack.append
        progress, every = self.progress, self.progress_every
        strict, defer, deferred_bytes = self.strict, self.deferred.append, self.deferred_bytes
        seq_key, member, before_key, cap = _SEQ_KEY, _SEQ_MEMBER, _BEFORE_KEY, self.deferred_cap
        overhead, pad_bits_1, pad_bits_2 = _DEFERRED_OVERHEAD, _PAD_BITS_1, _PAD_BITS_2
        size = self.size
        while True:
            chunk = lines.take_chunk()
            if chunk is None:  # the worker's share of the file begins here
                self.size, self.deferred_bytes = size, deferred_bytes
                if self.hand_over(lines.number):
                    return
                continue  # the worker could not vouch for its share: read it here, line by line
            if not chunk:
                break
            line = start_line = lines.number - len(chunk)
            for raw in chunk:
                line += 1
                # Fast path: the exact bytes the writer emits for entry ``size``. Whatever lies between
                # prefix and suffix must then be strict base64, so a line that only looks right fails there.
                tail = suffix % size
                if raw.endswith(tail) and raw.startswith(prefix):
                    text = raw[start : len(raw) - len(tail)]
                elif raw.startswith(prefix):
                    lines.resume_after(chunk, line - start_line - 1, line)  # where a read-ahead starts
                    text = self.entry_line_slow(raw, line, size, lines)
                else:
                    lines.resume_after(chunk, line - start_line - 1, line)
                    self.size = size
                    value = _parse_line(raw, line, size)
                    kind = value["kind"]
                    if kind == "head":
                        self.head(value, line, lines)  # covers, and so drops, the deferred entries
                        deferred_bytes = 0
                        continue
                    if kind == "end":
                        self.check_deferred()  # the unsigned tail: nothing but this check covers it
                        self.end(value, line, lines)
                        return
                    seq, b64 = _entry_line_fields(value, line, size)
                    if seq != size:
                        self.sequence_problem(line, seq, size, lines)
                    text = b64.encode("ascii", "replace")
                try:
                    entry = a2b(text, strict_mode=True)
                    # strict decoding guarantees at least four characters when the text ends in "="
                    if text.endswith(b"=") and (pad_bits_2[text[-3]] if text[-2] == 61 else pad_bits_1[text[-2]]):
                        raise binascii.Error
                except binascii.Error:
                    _fail("entry.bad_base64", line, size, f"Entry seq {size} (line {line}) is not valid base64.")
                if not strict:
                    # Inline copy of _seq_is (see its proof): the top-level seq is this entry's position.
                    at = entry.rfind(seq_key)
                    if (
                        at > 0
                        and entry[at - 1] in before_key
                        and entry.startswith(member % size, at)
                        and entry.find(b"}", at) == len(entry) - 1
                    ):
                        defer((line, size, entry))
                        deferred_bytes += len(entry) + overhead
                        if deferred_bytes > cap:
                            self.check_deferred()
                            deferred_bytes = 0
                    else:
                        self.check_entry(entry, line, size)  # raises with the precise problem, or passes
                else:
                    # Inline copy of check_entry's fast route (a function call per entry costs ~8%).
                    try:
                        body = entry.decode("utf-8")
                        obj, stop = scan(body, 0)
                    except (_NeedsFullCanonicalisation, ValueError, StopIteration):
                        obj = canonical(entry, line, size)
                    else:
                        if type(obj) is not dict or stop != len(body) or not body.isascii() or encode is None:
                            obj = canonical(entry, line, size)
                        elif "".join(encode(obj, 0)) != body:
                            canonical(entry, line, size)  # raises entry.not_canonical with the wording
                    seq = obj.get("seq")
                    if seq != size or type(seq) is not int or type(obj.get("time")) is not str or (
                        type(obj.get("type")) is not str
                    ):
                        self.entry_fields_problem(obj, line, size)
                # RFC 9162 section 2.1.1: leaf hash, then merge every perfect subtree it completes.
                node = sha256(b"\x00" + entry).digest()
                if log is not None:
                    self.check_log(node, line, size)
                count = size
                while count & 1:
                    node = sha256(b"\x01" + pop() + node).digest()
                    count >>= 1
                push(node)
                size += 1
                if progress is not None and size % every == 0:
                    progress(size)
            lines.resume_after(chunk, len(chunk) - 1, line)  # the whole chunk is read
        self.size = size
        line = lines.number
        _fail(
            "export.truncated", line + 1, size,
            f"The export stops after line {line} without its closing end line: it was cut short "
            f"(the next entry would have been seq {size}).",
        )

    def hand_over(self, line: int) -> bool:
        """At the split: take the worker's summary of the rest of the export, if it vouches for all of it.

        ``line`` is the number of the last line read here. Returns True if the export is verified to
        its end line exactly as :meth:`pass_over` would have; False (nothing changed) if there is no
        worker, it found anything out of the ordinary, or a head, a count or the closing line does
        not check out: then the rest is read here, which finds and words the problem.
        """
        summary = self.worker.result() if self.worker is not None else None
        if summary is None:
            return False
        trial = self.trial_copy()
        try:
            reached = trial.apply(summary, line)
        except LedgerProofError:
            return False
        self.__dict__.update(trial.__dict__)
        if self.progress is not None:
            for done in reached:
                self.progress(done)
        return True

    def trial_copy(self) -> _Verifier:
        """A copy whose state can change without changing this one's (the key, log and options shared)."""
        trial = copy.copy(self)
        trial.stack, trial.deferred = list(self.stack), list(self.deferred)
        trial.signed_roots = dict(self.signed_roots)
        trial.log_missing, trial.log_different = list(self.log_missing), list(self.log_different)
        trial.worker = None
        return trial

    def apply(self, summary: _Summary, line: int) -> list[int]:
        """Continue from line ``line`` with the worker's summary; return the progress counts reached.

        Raises :class:`LedgerProofError` at anything :meth:`pass_over` would have stopped at, or
        would have done otherwise (a different seq, the deferral cap reached across the split, no
        closing line): the caller then drops this copy.
        """
        if self.deferred_bytes + summary.first_window_bytes > self.deferred_cap:
            raise LedgerProofError("The deferred entries would reach the cap across the split.")
        self.log_missing += [(seq, line + offset) for seq, offset in summary.log_missing]
        self.log_different += [(seq, line + offset) for seq, offset in summary.log_different]
        self.log_checked += summary.log_checked
        self.log_orphans += summary.log_orphans
        sha256, stack, every = hashlib.sha256, self.stack, self.progress_every
        reached: list[int] = []
        nothing: _Numbered = iter(())
        for event in summary.events:
            if isinstance(event, _Run):
                if event.first_seq != self.size:
                    raise LedgerProofError("The worker's entries do not start at the expected seq.")
                size = self.size
                for level, node in event.subtrees:  # each a perfect subtree starting at ``size``
                    count = size >> level
                    while count & 1:
                        node = sha256(b"\x01" + stack.pop() + node).digest()
                        count >>= 1
                    stack.append(node)
                    size += 1 << level
                reached += range(self.size + every - self.size % every, size + 1, every)
                self.size = size
                continue
            number = line + event.offset
            value = _parse_line(event.raw, number, self.size)
            if value["kind"] == "head":
                self.head(value, number, nothing)
                self.deferred_bytes = 0
            elif value["kind"] == "end":
                self.check_deferred()
                self.end(value, number, nothing)
                return reached
            else:
                raise LedgerProofError("The worker passed on an entry line.")
        raise LedgerProofError("The worker's share has no end line.")

    def check_entry(self, entry: bytes, line: int, seq: int) -> None:
        """The full check: canonical JSON object, integer seq equal to its position, string time and type."""
        obj = _canonical_entry(entry, line, seq)
        found = obj.get("seq")
        if found != seq or type(found) is not int or type(obj.get("time")) is not str or (
            type(obj.get("type")) is not str
        ):
            self.entry_fields_problem(obj, line, seq)

    def check_deferred(self) -> None:
        """Check in full, in export order, the entries whose check waited for a covering head."""
        waiting = list(self.deferred)
        self.deferred.clear()
        for line, seq, entry in waiting:
            self.check_entry(entry, line, seq)

    def entry_line_slow(self, raw: bytes, line: int, expected: int, lines: _Numbered) -> bytes:
        """An entry line not in the writer's exact shape: parse it fully and check its seq."""
        value = _parse_line(raw, line, expected)
        if value["kind"] != "entry":
            _fail("export.malformed_line", line, expected, f"Line {line} is not a well-formed entry line.")
        seq, text = _entry_line_fields(value, line, expected)
        if seq != expected:
            self.sequence_problem(line, seq, expected, lines)
        return text.encode("ascii", "replace")

    def sequence_problem(self, line: int, seq: int, expected: int, lines: _Numbered) -> NoReturn:
        """Say whether an unexpected seq is a duplicate, a reordering or a gap (reading ahead to tell)."""
        if seq < expected:
            _fail(
                "entry.seq_duplicate", line, seq,
                f"Line {line} holds entry seq {seq} again: it came earlier, and seq {expected} was expected.",
                expected_seq=expected,
            )
        for later, raw in lines:
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict) and value.get("kind") == "entry" and value.get("seq") == expected:
                _fail(
                    "entry.seq_reordered", line, seq,
                    f"Entries are out of order: line {line} holds seq {seq} where seq {expected} belongs, "
                    f"and seq {expected} appears later at line {later}.",
                    expected_seq=expected, expected_line=later,
                )
        missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected} to {seq - 1}"
        _fail(
            "entry.seq_gap", line, seq,
            f"Entries are missing: line {line} holds seq {seq} but {missing} never appear in the export.",
            expected_seq=expected,
        )

    def entry_fields_problem(self, obj: Mapping[str, Any], line: int, expected: int) -> NoReturn:
        seq = obj.get("seq")
        if type(seq) is not int:
            _fail("entry.missing_field", line, expected, f"Entry at line {line} has no whole-number seq.")
        if seq != expected:
            _fail(
                "entry.seq_mismatch", line, expected,
                f"Line {line} is labelled seq {expected} but the entry's own bytes say seq {seq}.",
                entry_seq=seq,
            )
        _fail(
            "entry.missing_field", line, expected,
            f"Entry seq {expected} (line {line}) lacks a string \"time\" or \"type\".",
        )

    def check_log(self, leaf: bytes, line: int, seq: int) -> None:
        assert self.log is not None
        logged = self.log.get(seq)
        self.log_checked += 1
        if logged is None:
            self.log_missing.append((seq, line))
        elif leaf not in logged[0]:
            self.log_different.append((seq, line))
        else:
            self.log_orphans += len(logged[1]) - 1  # lines of changes that were rolled back

    # ----------------------------------------------------------------- heads

    def root(self) -> bytes:
        """The root of the entries so far: the right fold of the frontier (RFC 9162 section 2.1.1)."""
        if not self.stack:
            return EMPTY_ROOT
        node = self.stack[-1]
        for left in reversed(self.stack[:-1]):
            node = hashlib.sha256(b"\x01" + left + node).digest()
        return node

    def signed_head(self, value: Mapping[str, Any], line: int) -> TreeHead:
        """Parse a head line and check its key id and signature; raise at the first fault."""
        seq = self.size - 1 if self.size else None
        try:
            head = TreeHead.from_json({k: v for k, v in value.items() if k != "kind"})
        except LedgerProofError as exc:
            _fail("head.malformed", line, seq, f"The tree head on line {line} is malformed: {exc.detail}")
        seq = head.size - 1 if head.size else None
        if head.key_id != self.key_id:
            _fail(
                "head.key_id_mismatch", line, seq,
                f"The tree head on line {line} names key {head.key_id}, not the server key {self.key_id}.",
            )
        try:
            crypto.verify_signature(self.public_key, head.signing_bytes(), head.signature)
        except (CryptoError, LedgerProofError):
            _fail(
                "head.signature_invalid", line, seq,
                f"The signature on the tree head of size {head.size} (line {line}) does not verify "
                "under the server key: the head was forged or altered.",
            )
        return head

    def head(self, value: Mapping[str, Any], line: int, lines: _Numbered) -> None:
        head = self.signed_head(value, line)
        seq = head.size - 1 if head.size else None
        earlier = self.signed_roots.get(head.size)
        if earlier is not None and earlier[0] != head.root_hash:
            self.fork(head, line, earlier[1])
        if head.size < self.last_head_size:
            _fail(
                "head.out_of_order", line, seq,
                f"The tree head on line {line} signs size {head.size}, smaller than the head before it "
                f"({self.last_head_size}).",
            )
        if head.size != self.size:
            _fail(
                "head.misplaced", line, seq,
                f"The tree head on line {line} signs size {head.size} but follows entry seq {self.size - 1}: "
                "a head must come right after the entry that completes its size.",
            )
        if head.root_hash != self.root():
            self.root_mismatch(head, line, lines)
        self.signed_roots[head.size] = (head.root_hash, line)
        self.deferred.clear()  # every entry so far is under this verified head: signed by the server
        self.heads += 1
        self.last_head_size = head.size
        self.last_head_root = head.root_hash

    def fork(self, head: TreeHead, line: int, other_line: int) -> NoReturn:
        _fail(
            "head.fork", line, head.size - 1 if head.size else None,
            f"The server signed two different roots for size {head.size} (lines {other_line} and {line}): "
            "the ledger was forked.",
            other_line=other_line,
        )

    def root_mismatch(self, head: TreeHead, line: int, lines: _Numbered) -> NoReturn:
        """A signed root the entries do not reproduce: a fork if another signed head of this size follows."""
        for later, raw in lines:
            try:
                value = json.loads(raw)
            except ValueError:
                break
            if not isinstance(value, dict) or value.get("kind") != "head":
                break
            try:
                other = self.signed_head(value, later)
            except LedgerProofError:
                break
            if other.size == head.size and other.root_hash != head.root_hash:
                self.fork(other, later, line)
        first = max(self.last_head_size, 0)
        hint = ""
        changed = sorted(self.log_different + self.log_missing)
        if changed and changed[0][0] >= first:
            hint = f" The record log disagrees first at seq {changed[0][0]} (line {changed[0][1]})."
        _fail(
            "head.root_mismatch", line, head.size - 1 if head.size else None,
            f"The entries do not hash to the root signed at size {head.size} (line {line}): an entry "
            f"between seq {first} and seq {head.size - 1} was altered, removed or inserted.{hint}",
            since_seq=first,
        )

    # ----------------------------------------------------------------- end

    def end(self, value: Mapping[str, Any], line: int, lines: _Numbered) -> None:
        entries, heads, signed = value.get("entries"), value.get("heads"), value.get("signed_size")
        if (
            set(value) != {"kind", "entries", "heads", "signed_size"}
            or type(entries) is not int
            or type(heads) is not int
            or type(signed) is not int
        ):
            _fail(
                "export.malformed_line", line, None,
                f"The end line (line {line}) needs whole-number counts.",
            )
        if entries > self.size:
            _fail(
                "export.truncated", line, self.size,
                f"The export says it holds {entries} entries but only {self.size} arrived before its end "
                f"line: entries from seq {self.size} on were cut.",
            )
        signed_now = max(self.last_head_size, 0)
        if entries != self.size or heads != self.heads or signed != signed_now:
            _fail(
                "export.count_mismatch", line, None,
                f"The end line says {entries} entries, {heads} heads, last head at size {signed}; the "
                f"export holds {self.size} entries, {self.heads} heads, last head at size {signed_now}.",
            )
        for later, _ in lines:
            _fail("export.trailing_data", later, None, f"Line {later} comes after the export's end line.")

    def log_problems(self) -> None:
        """After a clean pass: every exported entry must be in the log with identical bytes."""
        if not (self.log_missing or self.log_different):
            return
        seq, line = min(self.log_missing + self.log_different)
        missing = [s for s, _ in self.log_missing]
        different = [s for s, _ in self.log_different]
        problem = "log.entry_missing" if (seq, line) in self.log_missing else "log.entry_different"
        what = "is not in the record log" if problem == "log.entry_missing" else "differs from the record log"
        _fail(
            problem, line, seq,
            f"Exported entry seq {seq} (line {line}) {what}; in all {len(missing)} entries are missing "
            f"from the log and {len(different)} differ.",
            missing_seqs=missing[:_LOG_EXAMPLES], missing_count=len(missing),
            different_seqs=different[:_LOG_EXAMPLES], different_count=len(different),
        )


def _lines_of(source: Iterable[bytes] | Iterable[str]) -> Iterator[bytes]:
    for item in source:
        yield item if isinstance(item, bytes) else item.encode("utf-8")


def verify_export(
    source: str | os.PathLike[str] | Iterable[bytes] | Iterable[str],
    server_public_key: bytes,
    *,
    log_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
    strict: bool = False,
) -> VerificationReport:
    """Verify a ledger export offline against the server's raw Ed25519 public key.

    ``source`` is a path or the export's lines. With ``log_path`` (one file, or the files of a log
    cut by rotation), every exported entry must also appear with identical bytes in that structlog
    JSON-lines record log (lines of rolled-back changes are tolerated: see the module
    documentation). ``progress(done)`` is called every ``progress_every`` entries. With
    ``strict``, every entry is checked to be RFC 8785 canonical JSON with string ``time`` and
    ``type``; by default only the entries no valid signed head covers are (the others' ``seq`` is
    still checked: see the module documentation). Returns a
    :class:`VerificationReport`, or raises :class:`LedgerProofError` at the first problem with
    ``extras`` giving ``source``, ``line``, ``seq`` and a stable ``problem`` code (see the module
    documentation).
    """
    started = time.perf_counter()
    try:
        key_id = crypto.check_signing_public_key(server_public_key)
    except CryptoError:
        raise LedgerProofError(
            "The server public key given for checking is not a 32-byte Ed25519 key.",
            extras={"source": "export", "line": None, "seq": None, "problem": "export.key_mismatch"},
        ) from None
    if progress_every < 1:
        raise LedgerProofError("Progress must be reported every one or more entries.")
    if log_path is None:
        log = None
    else:
        log = _read_log([log_path] if isinstance(log_path, str | os.PathLike) else list(log_path))
    verifier = _Verifier(server_public_key, key_id, log, progress, progress_every, strict)
    try:
        if isinstance(source, str | os.PathLike):
            offset = _split_offset(source)
            if offset is not None:
                verifier.worker = _Worker(verifier, source, offset)
            with Path(source).open("rb") as handle:
                chunks = _file_chunks(handle.readlines) if offset is None else _split_chunks(handle, offset)
                lines = _ExportLines(chunks)
                verifier.header(lines)
                verifier.run(lines)
        else:
            lines = _ExportLines(_batches(_lines_of(source)))
            verifier.header(lines)
            verifier.run(lines)
    except OSError as exc:
        raise LedgerProofError(
            f"The export cannot be read: {exc.strerror or exc}.",
            extras={"source": "export", "line": None, "seq": None, "problem": "export.unreadable"},
        ) from None
    finally:
        if verifier.worker is not None:  # verification stopped before the split
            verifier.worker.close()
    verifier.log_problems()
    beyond = sum(1 for seq in log.entries if seq >= verifier.size) if log is not None else 0
    signed = max(verifier.last_head_size, 0)
    return VerificationReport(
        server_key_id=key_id,
        exported_at=verifier.exported_at,
        entries=verifier.size,
        heads=verifier.heads,
        last_signed_size=signed,
        last_signed_root=verifier.last_head_root,
        root_hash=verifier.root(),
        unsigned_tail=verifier.size - signed,
        log_entries_checked=verifier.log_checked,
        log_entries_beyond_export=beyond,
        log_orphaned_entries=verifier.log_orphans,
        log_torn_lines=log.torn_lines if log is not None else 0,
        elapsed_seconds=time.perf_counter() - started,
    )
