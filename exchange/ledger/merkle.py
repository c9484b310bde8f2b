"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and proof verification.

Pure functions over lists of leaf hashes: no I/O, no state. The generators work on the whole list
of leaf hashes (O(n) time); :mod:`exchange.ledger.tree` computes the same proofs in O(log n) from
stored subtree hashes, and the property tests pin the two to each other.

Every verifier returns ``None`` when the proof holds and raises
:class:`~exchange.errors.LedgerProofError` for anything else, including malformed input: a verifier
that can be made to return early is a verifier that can be fooled, so it fails closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from exchange.errors import LedgerProofError

#: Length in bytes of every hash in the tree (SHA-256, RFC 9162 section 2.1).
HASH_SIZE = 32

# RFC 9162 section 2.1.1: domain separation between leaves and interior nodes, so a node
# can never be passed off as a leaf (second-preimage resistance).
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

#: MTH({}) = SHA-256() — the hash of the empty tree (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """Return MTH({d}) = SHA-256(0x00 || d) for one ledger entry (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), an interior node (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 9162 section 2.1.1 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) for ``start < end``, computed with a stack of perfect subtrees.

    Folding a stack of perfect subtrees from the right gives exactly the recursive definition of
    RFC 9162 section 2.1.1, without recursion and in O(end - start) hashes.
    """
    stack: list[bytes] = []
    for i, leaf in enumerate(leaves[start:end], start=1):
        node = leaf
        while not i & 1:  # each trailing zero of the count closes one perfect subtree
            node = node_hash(stack.pop(), node)
            i >>= 1
        stack.append(node)
    node = stack.pop()
    while stack:
        node = node_hash(stack.pop(), node)
    return node


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for position, value in enumerate(leaf_hashes):
        if len(value) != HASH_SIZE:
            raise LedgerProofError(
                f"Leaf hash number {position} is {len(value)} bytes long; every hash must be {HASH_SIZE}."
            )


def _check_size(value: int, what: str) -> None:
    # bool is an int subclass; a size of True is a bug in the caller, not a tree of one leaf.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LedgerProofError(f"The {what} must be a whole number (0 or more), not {value!r}.")


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash of the leaves (RFC 9162 section 2.1.1); the empty tree hashes to SHA-256().

    Raises :class:`LedgerProofError` if a leaf hash is not 32 bytes.
    """
    _check_leaf_hashes(leaf_hashes)
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the inclusion path PATH(index, D[n]) of RFC 9162 section 2.1.3.1, leaf end first.

    Raises :class:`LedgerProofError` unless ``0 <= index < len(leaf_hashes)``.
    """
    _check_leaf_hashes(leaf_hashes)
    _check_size(index, "leaf index")
    if index >= len(leaf_hashes):
        raise LedgerProofError(
            f"There is no leaf {index} in a tree of {len(leaf_hashes)} leaves, so it has no inclusion proof."
        )
    path: list[bytes] = []
    start, end, m = 0, len(leaf_hashes), index
    # Walk down from the root; RFC 9162 appends each sibling after the deeper part of the path,
    # so the siblings collected top-down are reversed at the end.
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(_subtree_root(leaf_hashes, start + k, end))  # PATH(m, D[0:k]) : MTH(D[k:n])
            end = start + k
        else:
            path.append(_subtree_root(leaf_hashes, start, start + k))  # PATH(m-k, D[k:n]) : MTH(D[0:k])
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return PROOF(old_size, D[n]) of RFC 9162 section 2.1.4.1 for the first ``old_size`` leaves.

    The proof is empty when ``old_size`` is 0 or equals the tree size (nothing needs proving).
    Raises :class:`LedgerProofError` unless ``0 <= old_size <= len(leaf_hashes)``.
    """
    _check_leaf_hashes(leaf_hashes)
    new_size = len(leaf_hashes)
    _check_size(old_size, "old tree size")
    if old_size > new_size:
        raise LedgerProofError(
            f"A tree of {new_size} leaves cannot prove consistency with a tree of {old_size} leaves."
        )
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[n], b) of RFC 9162 section 2.1.4.1, unrolled; siblings are collected top-down.
    while True:
        n = end - start
        if m == n:
            if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
                proof.append(_subtree_root(leaf_hashes, start, end))
            break
        k = _split(n)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            proof.append(_subtree_root(leaf_hashes, start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            proof.append(_subtree_root(leaf_hashes, start, start + k))
            start, m, whole = start + k, m - k, False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise LedgerProofError(f"The {what} is not a {HASH_SIZE}-byte SHA-256 hash.")


def _check_proof(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        _check_hash(value, f"proof hash number {position}")


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Implements RFC 9162 section 2.1.3.2. Returns None, or raises :class:`LedgerProofError` for a
    bad proof and for malformed input (hash not 32 bytes, index out of range, proof too long or short).
    """
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root hash")
    _check_proof(proof)
    # Step 1: the leaf must lie inside the tree.
    if index >= size:
        raise LedgerProofError(f"Leaf {index} is outside a tree of {size} leaves.")
    # Steps 2-3.
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    # Step 4.
    for p in proof:
        if sn == 0:  # 4a: more proof than tree
            raise LedgerProofError("The inclusion proof is longer than the tree is deep.")
        if fn & 1 or fn == sn:  # 4b: p is a left sibling
            r = node_hash(p, r)
            if not fn & 1:  # 4b.ii: skip the levels where this node has no right sibling
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:  # 4b otherwise: p is a right sibling
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # Step 5: the whole path was used and it leads to the signed root.
    if sn != 0:
        raise LedgerProofError("The inclusion proof is too short to reach the root.")
    if r != root:
        raise LedgerProofError("The inclusion proof does not lead to the root hash.")


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree of ``old_size`` leaves with ``old_root`` is a prefix of the newer one.

    Implements RFC 9162 section 2.1.4.2. Equal sizes need an empty proof and equal roots; the empty
    tree (whose root must be SHA-256()) is a prefix of every tree and needs an empty proof. Returns
    None, or raises :class:`LedgerProofError` for a bad proof and for any malformed input.
    """
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    _check_proof(proof)
    if old_size > new_size:
        raise LedgerProofError(f"A tree of {new_size} leaves cannot extend a larger tree of {old_size}.")
    if old_size == new_size:
        # RFC 9162 section 2.1.4.1 defines proofs only for 0 < m < n: nothing to prove, nothing accepted.
        if proof:
            raise LedgerProofError("Trees of the same size need an empty consistency proof.")
        if old_root != new_root:
            raise LedgerProofError(f"Two different roots were given for the same tree size {new_size}.")
        return
    if old_size == 0:
        if proof:
            raise LedgerProofError("Consistency with the empty tree needs an empty proof.")
        if old_root != EMPTY_ROOT:
            raise LedgerProofError("The root of the empty tree must be SHA-256 of nothing.")
        return
    # Step 1.
    if not proof:
        raise LedgerProofError("The consistency proof is empty.")
    path = list(proof)
    # Step 2: when the old tree is a perfect subtree, its root is the proof's implicit first hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    # Step 3.
    fn, sn = old_size - 1, new_size - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:  # 6a: more proof than tree
            raise LedgerProofError("The consistency proof is longer than the tree is deep.")
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise LedgerProofError("The consistency proof is too short to reach the new root.")
    if fr != old_root:
        raise LedgerProofError("The consistency proof does not lead to the old root hash.")
    if sr != new_root:
        raise LedgerProofError("The consistency proof does not lead to the new root hash.")
