"""The packet file a practitioner writes, split into what the server may read and what is sealed.

A packet file is JSON (``exchange template PURPOSE`` writes a starting one)::

    {"purpose": ..., "kind": ..., "to": ["mem_..." | "agency:agy_..."],
     "lawful_basis": {...}, "consent": {...}, "without_consent": {...}, "transparency": {...},
     "proportionality": {...}, "urgency": ..., "subject_identifier": "e.g. an NHS number",
     "case_names": ["names the sender's client looks for in a consultation's text"],
     "necessity": "why sharing is necessary", "narrative": "...",
     "fields": {"<name>": {"value": ..., "label": ..., "source" | "author_role": ...,
                           "currency": ..., "as_of": "YYYY-MM-DD"}}}

Document and image fields give ``"file"`` (a path) and ``"media_type"`` instead of a value.
Keys starting with ``_`` are explanations and ``null`` means "not filled in": both are
removed before anything else happens, so a filled-in template is a valid packet file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from exchange.crypto import b64encode, digest_text
from exchange.errors import InvalidRequest, SchemaViolation
from exchange.policy.catalogue import MANIFEST_SCHEMA_FILE, Catalogue, packet_file_schema
from exchange.policy.context import SharingContext
from exchange.policy.decision import Decision, decide
from exchange.policy.model import record_from_packet_file
from exchange.schemas import check_document
from exchange.schemas import validator as project_validator

#: The manifest's sharing sections a packet file carries over as they are.
SHARING_SECTIONS = (
    "kind",
    "purpose",
    "lawful_basis",
    "consent",
    "without_consent",
    "transparency",
    "proportionality",
    "urgency",
    "in_reply_to",
    "derived_from",
    "corrects",
)
#: A field's labels, in the order the manifest lists them.
LABEL_KEYS = ("label", "source", "author_role", "currency", "as_of")


class PacketParts(NamedTuple):
    """A packet file split three ways; it unpacks as ``(manifest_parts, body_fields, sealed_extras)``."""

    #: The manifest's sharing sections and field list (names and labels, no values). The SDK adds
    #: the envelope: version, packet_id, created, sender, recipients, subject, content.
    manifest_parts: dict[str, Any]
    #: The body's field list: each manifest field entry plus its ``value`` (or, for a file, the
    #: attachment with its base64 ``data``), in the same order as ``manifest_parts["fields"]``.
    body_fields: list[dict[str, Any]]
    #: Sealed text that is not a field: ``necessity`` and, when written, ``narrative``.
    sealed_extras: dict[str, Any]


def clean_packet_file(document: Any) -> Any:
    """Remove explanation keys (``_...``) and ``null`` values, except inside a field's value."""
    if isinstance(document, Mapping):
        return {
            key: (item if key == "value" else clean_packet_file(item))
            for key, item in document.items()
            if not str(key).startswith("_") and item is not None
        }
    if isinstance(document, list):
        return [clean_packet_file(item) for item in document if item is not None]
    return document


def load_packet_file(document: Any, catalogue: Catalogue | None = None) -> dict[str, Any]:
    """Clean ``document`` and check its shape; raise :class:`SchemaViolation` listing every error.

    Uses the catalogue's compiled schema when given, else the project's schema registry.
    """
    if not isinstance(document, Mapping):
        raise SchemaViolation(
            "A packet file must be a JSON object.",
            extras={"errors": [{"path": "", "message": "must be a JSON object"}]},
        )
    cleaned: dict[str, Any] = clean_packet_file(document)
    if catalogue is not None:
        check_document(cleaned, catalogue.packet_file_validator, what="packet file")
    else:
        check_document(cleaned, _project_packet_file_validator(), what="packet file")
    return cleaned


@cache
def _project_packet_file_validator() -> Any:
    """The packet file's validator over the project's manifest schema, built (and compiled) once."""
    manifest_validator = project_validator("manifest.v1")
    schema = manifest_validator.schema
    manifest_id = str(schema["$id"]) if isinstance(schema, Mapping) else MANIFEST_SCHEMA_FILE
    # Same registry, so the packet file's references into the manifest schema resolve.
    return manifest_validator.evolve(schema=packet_file_schema(manifest_id))


def manifest_parts_from_packet_file(
    document: Any,
    catalogue: Catalogue | None = None,
    *,
    read_attachment: Callable[[str], bytes] | None = None,
) -> PacketParts:
    """Split a packet file into manifest parts, body fields and sealed extras.

    ``read_attachment(path)`` returns a document or image field's bytes; it is needed only when
    the file has such fields (so this function stays pure: the caller does the reading).
    ``subject_identifier`` goes nowhere: the caller turns it into the subject pseudonym
    (:func:`exchange.crypto.subject_pseudonym`) and it is never sent; nor is ``case_names``,
    which only the client's identifier check reads (:mod:`exchange.identifiers`). Raises
    :class:`SchemaViolation` for a malformed file and :class:`InvalidRequest` for a file field
    without a media type or without a reader. The sharing rules are not applied here: run
    :func:`check_packet_file` or the server's :func:`~exchange.policy.evaluate` for that.
    """
    packet = load_packet_file(document, catalogue)
    manifest_parts = {key: packet[key] for key in SHARING_SECTIONS if key in packet}
    manifest_fields: list[dict[str, Any]] = []
    body_fields: list[dict[str, Any]] = []
    for name, raw in packet.get("fields", {}).items():
        entry: dict[str, Any] = {"name": name}
        entry.update({key: raw[key] for key in LABEL_KEYS if key in raw})
        body = dict(entry)
        if "file" in raw:
            if "media_type" not in raw:
                raise InvalidRequest(f"The field {name!r} attaches a file: say its media_type (e.g. application/pdf).")
            if read_attachment is None:
                raise InvalidRequest(f"The field {name!r} attaches a file, which has not been read.")
            data = read_attachment(raw["file"])
            attachment = {"digest": digest_text(data), "size": len(data), "media_type": raw["media_type"]}
            entry["attachment"] = attachment
            body["attachment"] = {**attachment, "data": b64encode(data)}
        else:
            body["value"] = raw.get("value")
        manifest_fields.append(entry)
        body_fields.append(body)
    manifest_parts["fields"] = manifest_fields
    sealed_extras: dict[str, Any] = {key: packet[key] for key in ("necessity", "narrative") if key in packet}
    return PacketParts(manifest_parts, body_fields, sealed_extras)


def check_packet_file(
    document: Any,
    catalogue: Catalogue,
    sender_agency_kind: str | None,
    recipient_kinds: Mapping[str, str] | None,
    now: datetime,
    *,
    recipient_cap: int = 25,
) -> Decision:
    """Run the sharing rules on a packet file before anything is sent (``exchange check``).

    ``recipient_kinds`` maps ``to`` entries to agency kinds; whatever is not known offline (the
    sender's or a recipient's agency kind, the request answered, the packets passed on) is
    skipped and named in ``Decision.notes``. Raises :class:`SchemaViolation` for a malformed file.
    """
    packet = load_packet_file(document, catalogue)
    context = SharingContext(
        now=now,
        sender_agency_kind=sender_agency_kind,
        recipient_agency_kinds=dict(recipient_kinds or {}),
        stage="check",
        recipient_cap=recipient_cap,
    )
    return decide(record_from_packet_file(packet), context, catalogue)
