"""Stored rows read back as domain records, and records written as rows: the same for every engine.

Both engines store the same columns with the same encodings (JSON text for lists and maps, ISO 8601
text for times, bytes for bytes), so one set of readers keeps their results identical.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

from exchange.domain import (
    Agency,
    AgencyKind,
    DeliveryRecord,
    Escalation,
    InfoRequest,
    KeyUse,
    LoopStatement,
    Member,
    MemberKey,
    Obligation,
    PacketRecord,
    RequestDecline,
    Role,
    SealedNote,
    ShareDecision,
)
from exchange.ledger.heads import TreeHead
from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, RequestState


class Row(Protocol):
    """A stored row read by column name (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, name: str, /) -> Any: ...


def purposes(text: str | None) -> frozenset[str] | None:
    return frozenset(json.loads(text)) if text is not None else None


def purpose_list(purposes: frozenset[str] | None) -> str | None:
    return json.dumps(sorted(purposes)) if purposes is not None else None


def read_agency(row: Row) -> Agency:
    return Agency(
        row["id"],
        row["name"],
        AgencyKind(row["kind"]),
        row["created"],
        purposes(row["send_purposes"]),
        purposes(row["receive_purposes"]),
    )


def read_member(row: Row) -> Member:
    return Member(
        row["id"],
        row["agency_id"],
        row["display_name"],
        frozenset(Role(r) for r in json.loads(row["roles"])),
        row["created"],
        bool(row["active"]),
    )


def read_key(row: Row) -> MemberKey:
    return MemberKey(
        row["key_id"],
        row["member_id"],
        KeyUse(row["use"]),
        bytes(row["public_key"]),
        row["not_before"],
        row["not_after"],
        row["revoked_at"],
        row["created"],
    )


def read_packet(row: Row) -> PacketRecord:
    return PacketRecord(
        id=row["id"],
        sender_member=row["sender_member"],
        sender_agency=row["sender_agency"],
        manifest=bytes(row["manifest"]),
        manifest_digest=row["manifest_digest"],
        signature=bytes(row["signature"]),
        body=bytes(row["body"]),
        purpose=row["purpose"],
        kind=row["kind"],
        urgency=row["urgency"],
        state=PacketState(row["status"]),
        created=row["created"],
        approval=json.loads(row["approval"]) if row["approval"] else None,
        ack_due=row["ack_due"],
        action_due=row["action_due"],
        approval_due=row["approval_due"],
        approval_state=ApprovalState(row["approval_state"]),
        supersedes=row["supersedes"],
        superseded_by=row["superseded_by"],
        corrected_fields=tuple(json.loads(row["corrected_fields"])) if row["corrected_fields"] else (),
        in_reply_to=row["in_reply_to"],
        subject=row["subject"],
        expires_at=row["expires_at"],
        retain_until=row["retain_until"],
        content_removed_at=row["content_removed_at"],
    )


PACKET_COLUMNS = (
    "id, sender_member, sender_agency, manifest, manifest_digest, signature, body, purpose, kind, urgency,"
    " status, created, approval, ack_due, action_due, approval_due, approval_state, supersedes, superseded_by,"
    " corrected_fields, in_reply_to, subject, expires_at, retain_until, content_removed_at"
)


def packet_values(packet: PacketRecord) -> tuple[Any, ...]:
    return (
        packet.id,
        packet.sender_member,
        packet.sender_agency,
        packet.manifest,
        packet.manifest_digest,
        packet.signature,
        packet.body,
        packet.purpose,
        packet.kind,
        packet.urgency,
        packet.state.value,
        packet.created,
        json.dumps(packet.approval) if packet.approval is not None else None,
        packet.ack_due,
        packet.action_due,
        packet.approval_due,
        packet.approval_state.value,
        packet.supersedes,
        packet.superseded_by,
        json.dumps(list(packet.corrected_fields)) if packet.corrected_fields else None,
        packet.in_reply_to,
        packet.subject,
        packet.expires_at,
        packet.retain_until,
        packet.content_removed_at,
    )


def read_obligation(row: Row) -> Obligation:
    return Obligation(**{name: row[name] for name in Obligation.__dataclass_fields__})


def read_escalation(row: Row) -> Escalation:
    return Escalation(**{name: row[name] for name in Escalation.__dataclass_fields__})


def read_statement(row: Row) -> LoopStatement:
    return LoopStatement(
        id=row["id"],
        packet_id=row["packet_id"],
        recipient_member=row["recipient_member"],
        author_member=row["author_member"],
        type=row["type"],
        action=row["action"],
        statement=bytes(row["statement"]),
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
        sealed_note=bytes(row["sealed_note"]) if row["sealed_note"] is not None else None,
        note_key=row["note_key"],
        created=row["created"],
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def read_request(row: Row) -> InfoRequest:
    sealed = json.loads(row["sealed"]) if row["sealed"] else {}
    decline = None
    if row["decline"]:
        d = json.loads(row["decline"])
        decline = RequestDecline(
            declined_by=d["declined_by"],
            declined_by_agency=d["declined_by_agency"],
            key_id=d["key_id"],
            reason_codes=tuple(d["reason_codes"]),
            signature=base64.b64decode(d["signature"]),
            explanation=SealedNote(row["requester_member"], d["explanation_key"], bytes(row["decline_sealed"] or b"")),
            declined_at=d["declined_at"],
        )
    return InfoRequest(
        id=row["id"],
        requester_member=row["requester_member"],
        requester_agency=row["requester_agency"],
        holder_agency=row["holder_agency"],
        holder_member=row["holder_member"],
        document=bytes(row["document"]),
        digest=row["digest"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
        details=tuple(
            SealedNote(member, note["key_id"], base64.b64decode(note["sealed"])) for member, note in sealed.items()
        ),
        purpose=row["purpose"],
        urgency=row["urgency"],
        subject=row["subject"],
        state=RequestState(row["state"]),
        created=row["created"],
        answer_due=row["answer_due"],
        answered_by=row["answered_by"],
        answered_at=row["answered_at"],
        decline=decline,
    )


def read_share_decision(row: Row) -> ShareDecision:
    document = bytes(row["document"])
    note_key = json.loads(document)["decision"]["note"]["encryption_key"]
    return ShareDecision(
        id=row["id"],
        member=row["member"],
        agency=row["agency"],
        document=document,
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
        note=SealedNote(row["member"], note_key, bytes(row["sealed_note"] or b"")),
        subject=row["subject"],
        request_id=row["request_id"],
        created=row["created"],
    )



def read_head(row: Row) -> TreeHead:
    return TreeHead(
        size=int(row["size"]),
        root_hash=bytes(row["root_hash"]),
        timestamp=row["timestamp"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
    )


def read_delivery(row: Row | Prefixed) -> DeliveryRecord:
    return DeliveryRecord(
        packet_id=row["packet_id"],
        recipient_member=row["recipient_member"],
        recipient_agency=row["recipient_agency"],
        encryption_key=row["encryption_key"],
        sealed_key=bytes(row["sealed_key"]),
        state=DeliveryState(row["status"]),
        delivered_at=row["delivered_at"],
        opened_at=row["opened_at"],
        acknowledged_at=row["acknowledged_at"],
        ack_signature=bytes(row["ack_signature"]) if row["ack_signature"] is not None else None,
        ack_key=row["ack_key"],
        reported_at=row["reported_at"],
        confirmed_at=row["confirmed_at"],
        updated=row["updated"],
    )


class Prefixed:
    """A row's columns under a prefix, read as if unprefixed (a join returns two records in one row)."""

    def __init__(self, row: Row, prefix: str) -> None:
        self._row, self._prefix = row, prefix

    def __getitem__(self, name: str) -> Any:
        return self._row[self._prefix + name]



def sealed_details(request: InfoRequest) -> str:
    """The request's sealed details as stored: JSON text keyed by the member each is sealed to."""
    sealed = {n.member: {"key_id": n.key_id, "sealed": b64(n.sealed)} for n in request.details}
    return json.dumps(sealed, sort_keys=True)


def decline_text(decline: RequestDecline) -> str:
    """A decline as stored (JSON text; its explanation's sealed bytes are stored beside it)."""
    return json.dumps(
        {
            "declined_by": decline.declined_by,
            "declined_by_agency": decline.declined_by_agency,
            "key_id": decline.key_id,
            "reason_codes": list(decline.reason_codes),
            "signature": b64(decline.signature),
            "explanation_key": decline.explanation.key_id,
            "declined_at": decline.declined_at,
        },
        sort_keys=True,
    )
