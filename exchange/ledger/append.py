"""Appending one entry to the ledger, as pure code: what a backend stores, computed here.

The service runs this inside the write transaction that makes the change the entry records (see
:meth:`exchange.service.context.Change.record`). A backend only takes the ledger's append lock
(which also tells the next sequence number), reads the frontier nodes asked for, and stores the
rows it is given: it computes no hash and picks no index value, so every engine keeps the same
RFC 9162 tree and the same auditor index, byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exchange import crypto
from exchange.errors import LedgerProofError
from exchange.ledger import tree
from exchange.ledger.index import entry_refs
from exchange.ledger.merkle import leaf_hash


@dataclass(frozen=True, slots=True)
class Appended:
    """One ledger entry ready to store: its bytes, leaf hash, the tree nodes it completes, its index refs."""

    seq: int
    entry: bytes
    leaf_hash: bytes
    #: ``(level, index, hash)`` of every perfect subtree this leaf completes; the first is the leaf itself.
    nodes: tuple[tuple[int, int, bytes], ...]
    #: ``(kind, value)`` pairs an auditor finds the entry by (:func:`exchange.ledger.index.entry_refs`).
    refs: tuple[tuple[str, str], ...]


def frontier_keys(seq: int) -> list[tree.NodeKey]:
    """The frontier of a ledger of ``seq`` entries: its right edge, the perfect subtrees its size splits into
    (one per 1 bit, at most log2 n). With them, :func:`append` adds entry ``seq`` and, fed the nodes each
    append returns, every entry after it: all a batch of appends ever reads from the store."""
    return tree.needed_nodes_for_root(seq)


def append(seq: int, document: Mapping[str, Any], frontier: Mapping[tree.NodeKey, bytes]) -> Appended:
    """The rows that add ``document`` as entry ``seq`` to a ledger of ``seq`` entries.

    ``document`` is the entry (its ``seq`` field must be ``seq``); its stored bytes are its RFC 8785
    canonical JSON. ``frontier`` holds (at least) the left siblings leaf ``seq`` completes
    (``tree.needed_nodes_for_append``), as the nodes :func:`frontier_keys` names do. Raises
    :class:`~exchange.errors.LedgerProofError` if the document's seq is not ``seq`` or a node is bad.
    """
    if document.get("seq") != seq:
        raise LedgerProofError(f"A ledger entry appended at {seq} must say seq {seq}, not {document.get('seq')!r}.")
    entry = crypto.canonical_json(document)
    leaf = leaf_hash(entry)
    nodes = tree.compute_append(seq, leaf, frontier)
    return Appended(seq, entry, leaf, tuple(nodes), tuple(entry_refs(document)))
