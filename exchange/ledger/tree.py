"""RFC 9162 tree hashes and proofs in O(log n) reads from stored perfect-subtree hashes.

A store keeps, for every complete (perfect) subtree of ``2**level`` leaves starting at leaf
``index * 2**level``, its hash under the key ``(level, index)``; level 0 holds the leaf hashes. The
subtree exists once the tree has ``(index + 1) * 2**level`` leaves and never changes after that,
because the tree only grows to the right (RFC 9162 section 2.1.1).

Each operation comes in two steps so an async store never has to be called back:

1. ``needed_nodes_for_*(...)`` lists the ``(level, index)`` keys the operation reads (at most
   about 2·log2(n) of them), which the store fetches in one query;
2. ``compute_*(..., nodes)`` computes the result from a mapping holding those keys.

The ``*_from_nodes(..., get_nodes)`` wrappers do both with a synchronous batched accessor. Every
function raises :class:`~exchange.errors.LedgerProofError` for out-of-range arguments or a
missing or malformed node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from exchange.errors import LedgerProofError
from exchange.ledger.merkle import EMPTY_ROOT, HASH_SIZE, node_hash

#: ``(level, index)``: the perfect subtree of ``2**level`` leaves starting at leaf ``index * 2**level``.
NodeKey = tuple[int, int]
#: A batched node reader: given keys, return a mapping holding (at least) those keys.
NodeGetter = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]
#: A leaf range ``[start, end)`` whose Merkle Tree Hash a proof carries.
_Range = tuple[int, int]


def _check_size(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LedgerProofError(f"The {what} must be a whole number (0 or more), not {value!r}.")


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1), where RFC 9162 section 2.1.1 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_keys(start: int, end: int) -> list[NodeKey]:
    """The perfect subtrees covering ``[start, end)``, largest first.

    Every range a tree hash or proof needs is a subtree of the RFC 9162 section 2.1.1 recursion, so
    ``start`` is a multiple of the smallest power of two >= ``end - start`` and the greedy split
    below yields that recursion's own left-to-right perfect subtrees.
    """
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def _node(nodes: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    value = nodes.get(key)
    if value is None:
        raise LedgerProofError(f"The store did not supply tree node (level {key[0]}, index {key[1]}).")
    if len(value) != HASH_SIZE:
        raise LedgerProofError(f"Stored tree node (level {key[0]}, index {key[1]}) is not a 32-byte hash.")
    return value


def _range_hash(start: int, end: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH(D[start:end]) from stored nodes: the right fold of RFC 9162 section 2.1.1's split."""
    keys = _range_keys(start, end)
    result = _node(nodes, keys[-1])
    for key in reversed(keys[:-1]):
        result = node_hash(_node(nodes, key), result)
    return result


def _keys_for(ranges: Sequence[_Range]) -> list[NodeKey]:
    keys: list[NodeKey] = []
    for start, end in ranges:
        keys.extend(_range_keys(start, end))
    return keys


# --------------------------------------------------------------------------- appending


def needed_nodes_for_append(size_before: int) -> list[NodeKey]:
    """Keys of the left siblings that leaf ``size_before`` completes into new perfect subtrees."""
    _check_size(size_before, "tree size")
    keys: list[NodeKey] = []
    level, index = 0, size_before
    while index & 1:  # each trailing one bit of the old size is a left sibling waiting for a partner
        keys.append((level, index - 1))
        level, index = level + 1, index >> 1
    return keys


def compute_append(
    size_before: int, new_leaf_hash: bytes, nodes: Mapping[NodeKey, bytes]
) -> list[tuple[int, int, bytes]]:
    """The ``(level, index, hash)`` perfect subtrees created by appending leaf ``size_before``.

    The first is the leaf itself at level 0; each next one joins the previous with its stored left
    sibling (from :func:`needed_nodes_for_append`). Raises :class:`LedgerProofError` if a hash is bad.
    """
    if len(new_leaf_hash) != HASH_SIZE:
        raise LedgerProofError("The new leaf hash is not a 32-byte hash.")
    current = bytes(new_leaf_hash)
    created = [(0, size_before, current)]
    for level, index in needed_nodes_for_append(size_before):
        current = node_hash(_node(nodes, (level, index)), current)
        created.append((level + 1, index >> 1, current))
    return created


def nodes_added_by_append(
    size_before: int, new_leaf_hash: bytes, get_nodes: NodeGetter
) -> list[tuple[int, int, bytes]]:
    """:func:`compute_append` with the needed nodes read through ``get_nodes`` in one batch."""
    keys = needed_nodes_for_append(size_before)
    return compute_append(size_before, new_leaf_hash, get_nodes(keys) if keys else {})


# --------------------------------------------------------------------------- tree hash


def needed_nodes_for_root(size: int) -> list[NodeKey]:
    """Keys of the perfect subtrees whose fold is the root of a tree of ``size`` leaves (one per 1 bit)."""
    _check_size(size, "tree size")
    return _range_keys(0, size)


def compute_root(size: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH of the first ``size`` leaves (RFC 9162 section 2.1.1); SHA-256() for the empty tree."""
    _check_size(size, "tree size")
    return _range_hash(0, size, nodes) if size else EMPTY_ROOT


def root_from_nodes(size: int, get_nodes: NodeGetter) -> bytes:
    """:func:`compute_root` with the needed nodes read through ``get_nodes`` in one batch."""
    keys = needed_nodes_for_root(size)
    return compute_root(size, get_nodes(keys) if keys else {})


# --------------------------------------------------------------------------- inclusion


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """The leaf ranges whose hashes form PATH(index, D[size]) (RFC 9162 section 2.1.3.1), leaf end first."""
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    if index >= size:
        raise LedgerProofError(
            f"There is no leaf {index} in a tree of {size} leaves, so it has no inclusion proof."
        )
    ranges: list[_Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            ranges.append((start + k, end))  # PATH(m, D[0:k]) : MTH(D[k:n])
            end = start + k
        else:
            ranges.append((start, start + k))  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            start += k
    ranges.reverse()
    return ranges


def needed_nodes_for_inclusion(index: int, size: int) -> list[NodeKey]:
    """Keys needed for the inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return _keys_for(_inclusion_ranges(index, size))


def compute_inclusion_proof(index: int, size: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 section 2.1.3.1 from stored nodes, like ``inclusion_proof``."""
    return [_range_hash(start, end, nodes) for start, end in _inclusion_ranges(index, size)]


def inclusion_proof_from_nodes(index: int, size: int, get_nodes: NodeGetter) -> list[bytes]:
    """:func:`compute_inclusion_proof` with the needed nodes read through ``get_nodes`` in one batch."""
    keys = needed_nodes_for_inclusion(index, size)
    return compute_inclusion_proof(index, size, get_nodes(keys) if keys else {})


# --------------------------------------------------------------------------- consistency


def _consistency_ranges(old_size: int, new_size: int) -> list[_Range]:
    """The leaf ranges whose hashes form PROOF(old_size, D[new_size]) (RFC 9162 section 2.1.4.1)."""
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    if old_size > new_size:
        raise LedgerProofError(
            f"A tree of {new_size} leaves cannot prove consistency with a tree of {old_size} leaves."
        )
    if old_size in (0, new_size):
        return []
    ranges: list[_Range] = []
    start, end, m, whole = 0, new_size, old_size, True
    while True:  # SUBPROOF(m, D[n], b), unrolled; ranges are collected top-down
        n = end - start
        if m == n:
            if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
                ranges.append((start, end))
            break
        k = _split(n)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    ranges.reverse()
    return ranges


def needed_nodes_for_consistency(old_size: int, new_size: int) -> list[NodeKey]:
    """Keys needed for the consistency proof between trees of ``old_size`` and ``new_size`` leaves."""
    return _keys_for(_consistency_ranges(old_size, new_size))


def compute_consistency_proof(old_size: int, new_size: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 section 2.1.4.1, as :func:`merkle.consistency_proof`."""
    return [_range_hash(start, end, nodes) for start, end in _consistency_ranges(old_size, new_size)]


def consistency_proof_from_nodes(old_size: int, new_size: int, get_nodes: NodeGetter) -> list[bytes]:
    """:func:`compute_consistency_proof` with the needed nodes read through ``get_nodes`` in one batch."""
    keys = needed_nodes_for_consistency(old_size, new_size)
    return compute_consistency_proof(old_size, new_size, get_nodes(keys) if keys else {})


# --------------------------------------------------------------------------- incremental tree


class Frontier:
    """The right edge of a growing tree: one perfect-subtree hash per 1 bit of its size.

    O(log n) memory; appending costs one leaf hash plus, amortised, one node hash. This is the
    compact form an offline verifier keeps instead of every leaf hash.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at the right edge, merging the perfect subtrees it completes."""
        if len(leaf) != HASH_SIZE:
            raise LedgerProofError("A leaf hash must be 32 bytes.")
        stack = self._stack
        node = leaf
        count = self.size
        while count & 1:
            node = node_hash(stack.pop(), node)
            count >>= 1
        stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        """MTH of every leaf appended so far (RFC 9162 section 2.1.1): the right fold of the stack."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        node = stack[-1]
        for left in reversed(stack[:-1]):
            node = node_hash(left, node)
        return node
