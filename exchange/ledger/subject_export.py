"""The subject export: every ledger entry about one child (by pseudonym), checkable offline.

For subject access requests and case reviews an auditor takes away the events about one subject,
not the whole ledger, and anyone holding the server's public key can check them against the
ledger without asking the server again: each entry comes with its RFC 9162 inclusion proof in one
signed tree head. JSON Lines, each RFC 8785 canonical JSON, in this order:

1. ``{"exported_at", "format": "safeguarding-exchange/subject-export/v1", "kind": "header",
   "server_key_id", "subject"}``;
2. ``{"kind": "head", ...TreeHead JSON...}``: the one signed head every proof leads to;
3. per entry, in increasing ``seq``: ``{"entry": "<base64 of the exact stored bytes>", "kind":
   "entry", "leaf_hash": "<base64>", "proof": ["<base64>", ...] | null, "seq": n}``; ``proof`` is
   null only for an entry newer than the head (the server signs a head before exporting, so
   normally none);
4. ``{"entries": N, "kind": "end", "signed_size": S, "unproven": U}``: without it the export was cut short.

What verification proves, and what it cannot: every entry is byte for byte the one at its
position in the ledger the server signed, and every entry is about the subject (it names the
subject, or a packet or request an entry naming the subject is about). It cannot prove that no
entry about the subject was left out: a Merkle tree proves presence, not absence. Comparing with
the full export (``exchange ledger export``) settles that.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import rfc8785

from exchange import crypto
from exchange.errors import CryptoError, LedgerProofError
from exchange.ledger.heads import TreeHead, check_timestamp, verify_tree_head
from exchange.ledger.merkle import leaf_hash, verify_inclusion

#: The ``format`` of the header line.
SUBJECT_EXPORT_FORMAT = "safeguarding-exchange/subject-export/v1"


def _line(value: Mapping[str, Any]) -> bytes:
    return bytes(rfc8785.dumps(dict(value))) + b"\n"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def header_line(server_key_id: str, exported_at: str, subject: str) -> bytes:
    check_timestamp(exported_at)
    return _line(
        {
            "kind": "header",
            "format": SUBJECT_EXPORT_FORMAT,
            "server_key_id": server_key_id,
            "exported_at": exported_at,
            "subject": subject,
        }
    )


def head_line(head: TreeHead) -> bytes:
    return _line({"kind": "head", **head.to_json()})


def entry_line(seq: int, entry: bytes, leaf: bytes, proof: list[bytes] | None) -> bytes:
    """An entry with its leaf hash and its inclusion proof in the export's head (None if newer)."""
    return _line(
        {
            "kind": "entry",
            "seq": seq,
            "entry": _b64(entry),
            "leaf_hash": _b64(leaf),
            "proof": None if proof is None else [_b64(p) for p in proof],
        }
    )


def end_line(entries: int, signed_size: int, unproven: int) -> bytes:
    return _line({"kind": "end", "entries": entries, "signed_size": signed_size, "unproven": unproven})


@dataclass(frozen=True)
class SubjectExport:
    """A verified subject export: the head, and the entries (parsed) in ``seq`` order."""

    subject: str
    server_key_id: str
    exported_at: str
    head: TreeHead
    #: ``(seq, entry)`` for each entry, its bytes checked against the leaf and (if proven) the head.
    entries: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: Entries newer than the head: their bytes hash to the leaf given, but nothing proves the leaf.
    unproven: list[int] = field(default_factory=list)
    head_signature_checked: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "server_key_id": self.server_key_id,
            "exported_at": self.exported_at,
            "signed_size": self.head.size,
            "root_hash": _b64(self.head.root_hash),
            "entries": len(self.entries),
            "unproven": self.unproven,
            "head_signature_checked": self.head_signature_checked,
            "packets": sorted({e["packet"] for _, e in self.entries if isinstance(e.get("packet"), str)}),
        }


def _fail(problem: str, line: int | None, detail: str) -> NoReturn:
    raise LedgerProofError(detail, extras={"source": "subject_export", "line": line, "problem": problem})


def _json(raw: bytes | str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        _fail("export.malformed_line", number, f"Line {number} is not JSON.")
    if not isinstance(value, dict):
        _fail("export.malformed_line", number, f"Line {number} is not a JSON object.")
    return value


def _decode(value: Any, number: int, what: str) -> bytes:
    if not isinstance(value, str):
        _fail("export.malformed_line", number, f"Line {number}: the {what} must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        _fail("entry.bad_base64", number, f"Line {number}: the {what} is not valid base64.")


def _about(entry: Mapping[str, Any]) -> tuple[str | None, str | None, frozenset[str]]:
    """The subject an entry names, the packet it is about, and the requests it refers to (as the index reads them)."""
    details = entry.get("details") if isinstance(entry.get("details"), Mapping) else {}
    assert isinstance(details, Mapping)

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    requests = {text(entry.get("request")), text(details.get("request")), text(details.get("in_reply_to"))}
    return text(details.get("subject")), text(entry.get("packet")), frozenset(r for r in requests if r)


def verify_subject_export(
    lines: Iterable[bytes | str], server_public_key: bytes | None, *, subject: str | None = None
) -> SubjectExport:
    """Check a subject export; return what it holds, or raise :class:`LedgerProofError` at the first problem.

    With ``server_public_key`` the head's signature is checked too (without it, only that the
    entries and proofs agree with the head the export names). With ``subject`` the export must
    be about that pseudonym. ``extras["problem"]`` names the problem with the codes of
    :mod:`exchange.ledger.verify` where they apply, plus ``entry.not_about_subject``.
    """
    rows = [(number, raw) for number, raw in enumerate(lines, start=1) if raw.strip()]
    if not rows:
        _fail("export.empty", None, "The subject export is empty.")
    header = _json(rows[0][1], 1)
    if header.get("kind") != "header" or header.get("format") != SUBJECT_EXPORT_FORMAT:
        _fail("export.bad_header", 1, f"The first line is not a header of {SUBJECT_EXPORT_FORMAT}.")
    named = header.get("subject")
    if not isinstance(named, str) or (subject is not None and named != subject):
        _fail("export.bad_header", 1, "The export is not about the subject you asked for.")
    key_id = header.get("server_key_id")
    if server_public_key is not None:
        try:
            expected = crypto.check_signing_public_key(server_public_key)
        except CryptoError:
            _fail("export.key_mismatch", 1, "The server public key is not a usable Ed25519 key.")
        if key_id != expected:
            _fail("export.key_mismatch", 1, f"The export names server key {key_id}, not {expected}.")
    if len(rows) < 2:
        _fail("export.truncated", None, "The export ends before its signed head.")
    number, raw = rows[1]
    head_json = _json(raw, number)
    if head_json.pop("kind", None) != "head":
        _fail("export.malformed_line", number, "The second line must be the signed tree head.")
    try:
        head = TreeHead.from_json(head_json)
    except LedgerProofError as error:
        _fail("head.malformed", number, error.detail)
    if head.key_id != key_id:
        _fail("head.key_id_mismatch", number, "The head names a key other than the header's server key.")
    if server_public_key is not None:
        try:
            verify_tree_head(head, server_public_key)
        except LedgerProofError as error:
            _fail("head.signature_invalid", number, error.detail)

    entries: list[tuple[int, dict[str, Any]]] = []
    unproven: list[int] = []
    last = -1
    end: dict[str, Any] | None = None
    for number, raw in rows[2:]:
        if end is not None:
            _fail("export.trailing_data", number, "There are lines after the closing line.")
        line = _json(raw, number)
        if line.get("kind") == "end":
            end = line
            continue
        if line.get("kind") != "entry" or not isinstance(line.get("seq"), int):
            _fail("export.malformed_line", number, f"Line {number} is not an entry line.")
        seq = int(line["seq"])
        if seq <= last:
            _fail("entry.seq_reordered", number, f"Entry {seq} comes after entry {last}: entries must increase.")
        last = seq
        entry_bytes = _decode(line.get("entry"), number, "entry")
        leaf = leaf_hash(entry_bytes)
        if leaf != _decode(line.get("leaf_hash"), number, "leaf hash"):
            _fail("head.root_mismatch", number, f"Entry {seq}'s bytes do not hash to the leaf hash given.")
        entry = _json(entry_bytes, number)
        if entry.get("seq") != seq:
            _fail("entry.seq_mismatch", number, f"The entry on the line for {seq} says it is {entry.get('seq')}.")
        proof = line.get("proof")
        if proof is None:
            if seq < head.size:
                _fail("export.malformed_line", number, f"Entry {seq} is inside the signed head but has no proof.")
            unproven.append(seq)
        else:
            if not isinstance(proof, list):
                _fail("export.malformed_line", number, f"Entry {seq}'s proof must be a list.")
            try:
                verify_inclusion(seq, head.size, leaf, [_decode(p, number, "proof") for p in proof], head.root_hash)
            except LedgerProofError as error:
                _fail("head.root_mismatch", number, f"Entry {seq} is not in the signed ledger: {error.detail}")
        entries.append((seq, entry))
    if end is None:
        _fail("export.truncated", None, "The closing line is missing: the export was cut short.")
    if end.get("entries") != len(entries) or end.get("signed_size") != head.size or end.get("unproven") != len(
        unproven
    ):
        _fail("export.count_mismatch", None, "The closing line's counts disagree with what the export holds.")

    # Every entry must be about the subject: naming it, or about a packet or request that an entry
    # naming it is about (a packet's events after its submission carry the packet id, not the subject).
    packets: set[str] = set()
    requests: set[str] = set()
    for _, entry in entries:
        who, packet, refs = _about(entry)
        if who == named:
            packets.update([packet] if packet else [])
            requests.update(refs)
    for seq, entry in entries:
        who, packet, refs = _about(entry)
        if who != named and packet not in packets and not refs & requests:
            _fail("entry.not_about_subject", None, f"Entry {seq} is not about this subject.")
    return SubjectExport(
        subject=named,
        server_key_id=str(key_id),
        exported_at=str(header.get("exported_at")),
        head=head,
        entries=entries,
        unproven=unproven,
        head_signature_checked=server_public_key is not None,
    )
