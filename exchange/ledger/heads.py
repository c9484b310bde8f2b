"""Signed tree heads: the server's signed statement "the ledger had this many entries and this root".

RFC 9162 section 4.10 signs a tree head's size, root hash and timestamp; here the signed message is
the RFC 8785 canonical JSON of those three values plus a ``type`` that names the structure, so a
signature over a tree head can never be replayed as a signature over anything else.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

from exchange import crypto
from exchange.errors import CryptoError, LedgerProofError
from exchange.ledger.merkle import HASH_SIZE

#: The ``type`` inside every signed tree head message (domain separation).
TREE_HEAD_TYPE = "safeguarding-exchange/tree-head/v1"
#: Ed25519 signatures are 64 bytes (RFC 8032 section 5.1.6).
SIGNATURE_SIZE = 64

# RFC 3339 section 5.6 date-time, restricted to UTC written with "Z".
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_FIELDS = frozenset({"size", "root_hash", "timestamp", "key_id", "signature"})


def check_timestamp(timestamp: str) -> None:
    """Raise :class:`LedgerProofError` unless ``timestamp`` is an RFC 3339 UTC time ending in "Z"."""
    if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
        raise LedgerProofError(
            f"The time {timestamp!r} is not an RFC 3339 UTC time such as 2025-01-31T09:30:00Z."
        )
    try:
        # Python parses at most microseconds; the calendar check is what matters here.
        datetime.fromisoformat(timestamp[:19] + "+00:00")
    except ValueError:
        raise LedgerProofError(f"The time {timestamp!r} is not a real calendar time.") from None


def format_timestamp(moment: datetime) -> str:
    """Render an aware datetime as the RFC 3339 UTC form tree heads use (milliseconds, "Z")."""
    if moment.tzinfo is None:
        raise LedgerProofError("A tree head time must carry a time zone.")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tree_head_signing_bytes(size: int, root_hash: bytes, timestamp: str) -> bytes:
    """The exact bytes the server signs for a tree head: RFC 8785 JSON of type, size, root, time.

    Raises :class:`LedgerProofError` if the size, root hash or timestamp is malformed.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise LedgerProofError(f"A tree head size must be a whole number, not {size!r}.")
    if len(root_hash) != HASH_SIZE:
        raise LedgerProofError("A tree head root hash must be 32 bytes.")
    check_timestamp(timestamp)
    message: dict[str, Any] = {
        "type": TREE_HEAD_TYPE,
        "size": size,
        "root_hash": base64.b64encode(root_hash).decode("ascii"),
        "timestamp": timestamp,
    }
    return bytes(rfc8785.dumps(message))


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise LedgerProofError(f"The tree head {what} must be a base64 string.")
    try:
        return crypto.b64decode(value, what=f"tree head {what}")
    except CryptoError as exc:
        raise LedgerProofError(exc.detail) from None


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head (RFC 9162 section 4.10): size, root hash, time, signer's key id, signature."""

    size: int
    root_hash: bytes
    timestamp: str
    key_id: str
    signature: bytes

    def signing_bytes(self) -> bytes:
        """The message :attr:`signature` signs (see :func:`tree_head_signing_bytes`)."""
        return tree_head_signing_bytes(self.size, self.root_hash, self.timestamp)

    def to_json(self) -> dict[str, Any]:
        """The JSON object form: hashes and signature as standard base64."""
        return {
            "size": self.size,
            "root_hash": base64.b64encode(self.root_hash).decode("ascii"),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TreeHead:
        """Parse :meth:`to_json` output strictly; raise :class:`LedgerProofError` naming the bad field."""
        if not isinstance(obj, Mapping):
            raise LedgerProofError("A tree head must be a JSON object.")
        if set(obj) != _FIELDS:
            missing = sorted(_FIELDS - set(obj))
            extra = sorted(set(obj) - _FIELDS)
            raise LedgerProofError(f"A tree head has missing fields {missing} or unknown fields {extra}.")
        size = obj["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LedgerProofError(f"A tree head size must be a whole number, not {size!r}.")
        root = _b64(obj["root_hash"], "root hash")
        if len(root) != HASH_SIZE:
            raise LedgerProofError("A tree head root hash must be 32 bytes.")
        timestamp = obj["timestamp"]
        check_timestamp(timestamp)
        key_id = obj["key_id"]
        if not isinstance(key_id, str) or not key_id:
            raise LedgerProofError("A tree head key id must be a non-empty string.")
        signature = _b64(obj["signature"], "signature")
        if len(signature) != SIGNATURE_SIZE:
            raise LedgerProofError(f"A tree head signature must be {SIGNATURE_SIZE} bytes.")
        return cls(size=size, root_hash=root, timestamp=timestamp, key_id=key_id, signature=signature)


def sign_tree_head(size: int, root_hash: bytes, timestamp: str, key: crypto.SigningKey) -> TreeHead:
    """Sign a tree head with the server's key; the head carries that key's id."""
    signature = key.sign(tree_head_signing_bytes(size, root_hash, timestamp))
    return TreeHead(
        size=size, root_hash=bytes(root_hash), timestamp=timestamp, key_id=key.key_id, signature=signature
    )


def verify_tree_head(head: TreeHead, public_key: bytes) -> None:
    """Check the head's Ed25519 signature under ``public_key``; raise :class:`LedgerProofError` if it fails.

    The head's key id must also be the id of ``public_key``: a head that names another signer fails.
    """
    try:
        expected_id = crypto.check_signing_public_key(public_key)
    except CryptoError:
        raise LedgerProofError("The server public key is not a usable Ed25519 key.") from None
    if head.key_id != expected_id:
        raise LedgerProofError(f"The tree head names key {head.key_id}, not the server key {expected_id}.")
    try:
        crypto.verify_signature(public_key, head.signing_bytes(), head.signature)
    except CryptoError:
        raise LedgerProofError(
            f"The signature on the tree head of size {head.size} does not verify."
        ) from None
