"""The ledger export: JSON Lines an auditor can verify offline with only the server's public key.

Every line is RFC 8785 canonical JSON, in this order:

1. ``{"exported_at": ..., "format": "safeguarding-exchange/ledger-export/v1", "kind": "header",
   "server_key_id": ...}``;
2. for each entry in sequence order from 0, ``{"entry": "<base64 of the exact stored bytes>",
   "kind": "entry", "seq": n}``, each signed tree head ``{"kind": "head", ...TreeHead JSON...}``
   following right after the entry that brings the tree to the head's size (a head of size 0 comes
   before the first entry);
3. ``{"entries": N, "heads": H, "kind": "end", "signed_size": S}``: the closing line. Without it
   the export was cut short; ``signed_size`` is the size of the last head (``N`` when the export
   ends with a head, fewer when the newest entries were not signed yet).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from exchange.errors import LedgerProofError
from exchange.ledger.heads import TreeHead, check_timestamp

#: The ``format`` of the header line.
EXPORT_FORMAT = "safeguarding-exchange/ledger-export/v1"

# An entry line is written by hand for speed; these bytes are exactly what RFC 8785 would give for
# {"entry": ..., "kind": "entry", "seq": n} (keys sorted, no spaces), and the verifier's fast path
# recognises the same shape.
ENTRY_LINE_PREFIX = b'{"entry":"'
ENTRY_LINE_SUFFIX = b'","kind":"entry","seq":%d}'


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export holds: how many entries and heads, and the size the last head signs."""

    entries: int
    heads: int
    signed_size: int


def _json_line(value: Any) -> bytes:
    return bytes(rfc8785.dumps(value)) + b"\n"


def header_line(server_key_id: str, exported_at: str) -> bytes:
    """The first line of an export."""
    check_timestamp(exported_at)
    header = {"kind": "header", "format": EXPORT_FORMAT, "server_key_id": server_key_id}
    return _json_line({**header, "exported_at": exported_at})


def entry_line(seq: int, entry: bytes) -> bytes:
    """The line carrying entry ``seq``: the exact stored bytes, base64."""
    return ENTRY_LINE_PREFIX + base64.b64encode(entry) + ENTRY_LINE_SUFFIX % seq + b"\n"


def head_line(head: TreeHead) -> bytes:
    """The line carrying a signed tree head."""
    return _json_line({"kind": "head", **head.to_json()})


def end_line(entries: int, heads: int, signed_size: int) -> bytes:
    """The closing line: its absence tells the verifier the export was cut short."""
    return _json_line({"kind": "end", "entries": entries, "heads": heads, "signed_size": signed_size})


class _Counts:
    __slots__ = ("entries", "heads", "signed_size")

    def __init__(self) -> None:
        self.entries = 0
        self.heads = 0
        self.signed_size = 0


def _lines(
    entries: Iterable[bytes], heads: Iterable[TreeHead], server_key_id: str, exported_at: str, counts: _Counts
) -> Iterator[bytes]:
    yield header_line(server_key_id, exported_at)
    head_iter = iter(heads)
    pending = next(head_iter, None)

    def heads_due() -> Iterator[bytes]:
        nonlocal pending
        while pending is not None and pending.size <= counts.entries:
            if pending.size < counts.entries:  # its place was earlier: the heads are not sorted
                raise LedgerProofError(
                    f"The tree head of size {pending.size} is out of order: "
                    "heads must come in increasing size."
                )
            counts.heads += 1
            counts.signed_size = pending.size
            yield head_line(pending)
            pending = next(head_iter, None)

    yield from heads_due()
    for entry in entries:
        yield entry_line(counts.entries, entry)
        counts.entries += 1
        yield from heads_due()
    if pending is not None:
        raise LedgerProofError(
            f"There is a tree head of size {pending.size} but only {counts.entries} entries to export."
        )
    yield end_line(counts.entries, counts.heads, counts.signed_size)


def export_lines(
    entries: Iterable[bytes], heads: Iterable[TreeHead], *, server_key_id: str, exported_at: str
) -> Iterator[bytes]:
    """Yield the export's lines (each ending in a newline) from entries in seq order and heads by size.

    Streams: neither input is held in memory. Raises :class:`LedgerProofError` if the heads are
    not in increasing size or a head is larger than the number of entries.
    """
    return _lines(entries, heads, server_key_id, exported_at, _Counts())


def write_export(
    path: str | os.PathLike[str],
    entries: Iterable[bytes],
    heads: Iterable[TreeHead],
    *,
    server_key_id: str,
    exported_at: str,
) -> ExportSummary:
    """Write an export file atomically (a temporary file renamed into place) and say what it holds.

    Raises :class:`LedgerProofError` as :func:`export_lines` does; nothing is left at ``path`` then.
    """
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    counts = _Counts()
    try:
        with partial.open("wb") as out:
            out.writelines(_lines(entries, heads, server_key_id, exported_at, counts))
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return ExportSummary(entries=counts.entries, heads=counts.heads, signed_size=counts.signed_size)
