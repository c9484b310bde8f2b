"""Checking the proofs the server hands out, on the member's or auditor's side.

The server's answer is never taken on trust: the entry is hashed here, the proof is verified
against the signed head's root, and (given the server's public key) the head's signature too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange import crypto
from exchange.errors import CryptoError, LedgerProofError
from exchange.ledger.heads import TreeHead, verify_tree_head
from exchange.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion


def _decode(value: Any, what: str) -> bytes:
    try:
        return crypto.b64decode(str(value), what=what)
    except CryptoError as error:
        raise LedgerProofError(error.detail) from None


def checked_head(head_json: Mapping[str, Any], server_public_key: bytes | None) -> TreeHead:
    """Parse a signed head and, with the server's key, check its signature."""
    head = TreeHead.from_json(head_json)
    if server_public_key is not None:
        verify_tree_head(head, server_public_key)
    return head


def check_inclusion_answer(answer: Mapping[str, Any], server_public_key: bytes | None) -> TreeHead:
    """Verify an inclusion proof answer (``entry``, ``leaf_hash``, ``proof``, ``head``); return the head.

    Raises :class:`LedgerProofError` if the entry does not hash to the leaf, the proof does not
    lead to the head's root, or the head's signature does not verify.
    """
    try:
        head = checked_head(answer["head"], server_public_key)
        entry = _decode(answer["entry"], "entry")
        leaf = leaf_hash(entry)
        if leaf != _decode(answer["leaf_hash"], "leaf hash"):
            raise LedgerProofError("The entry's bytes do not hash to the leaf hash the server gave.")
        proof = [_decode(p, "proof") for p in answer["proof"]]
        verify_inclusion(int(answer["seq"]), head.size, leaf, proof, head.root_hash)
    except (KeyError, TypeError, ValueError):
        raise LedgerProofError("The server's inclusion proof is not in the expected form.") from None
    return head


def check_consistency_answer(answer: Mapping[str, Any], server_public_key: bytes | None) -> tuple[TreeHead, TreeHead]:
    """Verify a consistency proof between two signed heads; return ``(old, new)``."""
    try:
        old = checked_head(answer["old"], server_public_key)
        new = checked_head(answer["new"], server_public_key)
        proof = [_decode(p, "proof") for p in answer["proof"]]
    except (KeyError, TypeError):
        raise LedgerProofError("The server's consistency proof is not in the expected form.") from None
    verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)
    return old, new


def check_head_extends(
    seen: TreeHead, new: TreeHead, answer: Mapping[str, Any], server_public_key: bytes | None
) -> None:
    """Check that ``new`` extends ``seen``, a head this member verified before (RFC 9162 section 2.1.4).

    Same size: the very same root. Larger: ``answer["consistency"]`` must hold a proof from ``seen``
    (the same head, not merely one of that size) to ``new``. Smaller: refused, since the server has
    already shown a longer history. Any failure means the server is showing different members
    different ledgers (a split view) or has rewound one: :class:`LedgerProofError` says which.
    """
    if new.size < seen.size:
        raise LedgerProofError(
            f"The server now shows a ledger of {new.size} entries, but you already saw a signed head of "
            f"{seen.size}: the ledger was rewound, or you are being shown a different one."
        )
    if new.size == seen.size:
        if new.root_hash != seen.root_hash:
            raise LedgerProofError(
                f"The server signed two different roots for {new.size} entries (the one you saw before and "
                "this one): the ledger was forked."
            )
        return
    try:
        part = answer["consistency"]
        old = checked_head(part["old"], server_public_key)
        proof = [_decode(p, "proof") for p in part["proof"]]
    except (KeyError, TypeError):
        raise LedgerProofError(
            f"The server gave no consistency proof from the head of {seen.size} entries you saw before."
        ) from None
    if (old.size, old.root_hash) != (seen.size, seen.root_hash):
        raise LedgerProofError(
            f"The server proved consistency from a head of {old.size} entries other than the one you saw: "
            "the ledger was forked."
        )
    verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)
