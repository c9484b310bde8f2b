"""The ledger: RFC 9162 Merkle tree maths, signed tree heads, the export and its offline verifier.

Everything here is pure (no I/O apart from reading and writing export files). Appending is
computed by :mod:`.append` (the entry's bytes, its leaf, the perfect-subtree hashes :mod:`.tree`
reads later, its index refs) inside the service's write transaction; a store only keeps the rows.
"""

from exchange.ledger.export import EXPORT_FORMAT, ExportSummary, export_lines, write_export
from exchange.ledger.heads import (
    TREE_HEAD_TYPE,
    TreeHead,
    format_timestamp,
    sign_tree_head,
    tree_head_signing_bytes,
    verify_tree_head,
)
from exchange.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from exchange.ledger.verify import VerificationReport, verify_export

__all__ = [
    "EMPTY_ROOT",
    "EXPORT_FORMAT",
    "HASH_SIZE",
    "TREE_HEAD_TYPE",
    "ExportSummary",
    "TreeHead",
    "VerificationReport",
    "consistency_proof",
    "export_lines",
    "format_timestamp",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "sign_tree_head",
    "tree_head_signing_bytes",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
    "verify_tree_head",
    "write_export",
]
