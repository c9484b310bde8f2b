"""The exchange's domain words as plain typed values, shared by service, store and web."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, RequestState


class AgencyKind(StrEnum):
    CHILDRENS_SOCIAL_CARE = "children_social_care"
    POLICE = "police"
    HEALTH = "health"
    EDUCATION = "education"
    EARLY_HELP = "early_help"
    YOUTH_JUSTICE = "youth_justice"
    LOCAL_AUTHORITY_OTHER = "local_authority_other"
    VOLUNTARY_SECTOR = "voluntary_sector"


class Role(StrEnum):
    PRACTITIONER = "practitioner"
    MANAGER = "manager"
    SAFEGUARDING_LEAD = "safeguarding_lead"
    AGENCY_ADMIN = "agency_admin"
    AUDITOR = "auditor"


#: Roles that send and receive packets; admins and auditors never hold content.
SHARING_ROLES = frozenset({Role.PRACTITIONER, Role.MANAGER, Role.SAFEGUARDING_LEAD})

#: Roles whose signature counts as the senior approval for sharing without consent.
APPROVER_ROLES = frozenset({Role.MANAGER, Role.SAFEGUARDING_LEAD})


class KeyUse(StrEnum):
    SIGNING = "signing"
    ENCRYPTION = "encryption"


def new_id(prefix: str) -> str:
    """Random, unguessable ids: an id says nothing about the child, the agency or the time."""
    return f"{prefix}_{secrets.token_hex(12)}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` and millisecond precision: the one time format on the wire."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An RFC 3339 time as an aware datetime (naive means UTC); raises ValueError if it is not one.

    RFC 3339 section 5.6 allows a lowercase ``t`` and ``z``, which Python's parser does not.
    """
    moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    kind: AgencyKind
    created: str
    #: The purposes this agency may send / receive (like MESH workflows); None means no list.
    send_purposes: frozenset[str] | None = None
    receive_purposes: frozenset[str] | None = None


@dataclass(frozen=True)
class MemberKey:
    key_id: str
    member_id: str
    use: KeyUse
    public_bytes: bytes
    not_before: str
    not_after: str | None
    revoked_at: str | None
    created: str

    def valid_at(self, moment: datetime) -> bool:
        if self.revoked_at is not None and parse_iso(self.revoked_at) <= moment:
            return False
        if parse_iso(self.not_before) > moment:
            return False
        return self.not_after is None or parse_iso(self.not_after) > moment

    def current_for(self, member_id: str, use: KeyUse, moment: datetime) -> bool:
        """The one "current key" test behind every signed thing: this member's key, for this use,
        within its validity and not revoked at ``moment``."""
        return self.member_id == member_id and self.use is use and self.valid_at(moment)


@dataclass(frozen=True)
class Member:
    id: str
    agency_id: str
    display_name: str
    roles: frozenset[Role]
    created: str
    active: bool = True

    def has_any(self, *roles: Role) -> bool:
        return bool(self.roles.intersection(roles))


@dataclass(frozen=True)
class Actor:
    """The authenticated member behind a request, with the key that signed it."""

    member: Member
    agency: Agency
    key_id: str

    @property
    def member_id(self) -> str:
        return self.member.id

    @property
    def agency_id(self) -> str:
        return self.agency.id


@dataclass(frozen=True)
class Event:
    """Something that happened, as the ledger records it: codes and ids, never content."""

    type: str
    actor_member: str | None
    actor_agency: str | None
    packet: str | None = None
    manifest_digest: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def entry(self, seq: int, time: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": seq,
            "time": time,
            "type": self.type,
            "actor": {"member": self.actor_member, "agency": self.actor_agency},
            "details": dict(self.details),
        }
        if self.packet is not None:
            out["packet"] = self.packet
        if self.manifest_digest is not None:
            out["manifest_digest"] = self.manifest_digest
        return out


@dataclass(frozen=True)
class LedgerReceipt:
    """Where an event landed in the ledger: enough to ask for an inclusion proof later."""

    seq: int
    leaf_hash: bytes
    entry: bytes


@dataclass(frozen=True)
class PacketRecord:
    id: str
    sender_member: str
    sender_agency: str
    manifest: bytes
    manifest_digest: str
    signature: bytes
    body: bytes
    purpose: str
    kind: str
    urgency: str
    state: PacketState
    created: str
    approval: Mapping[str, Any] | None
    ack_due: str | None
    action_due: str | None
    approval_due: str | None
    approval_state: ApprovalState = ApprovalState.NOT_NEEDED
    #: The earlier packet this one corrects, and the correction that replaced this one.
    supersedes: str | None = None
    superseded_by: str | None = None
    #: For a correction: the names of the fields that were wrong in the earlier packet.
    corrected_fields: tuple[str, ...] = ()
    in_reply_to: str | None = None
    #: The subject's pseudonym (never the identifier), for subject access and case reviews.
    subject: str | None = None
    #: Never opened by then: reported to the sender as undelivered.
    expires_at: str | None = None
    #: Sealed content is deleted at the end of retention; the record stays.
    retain_until: str | None = None
    content_removed_at: str | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    packet_id: str
    recipient_member: str
    recipient_agency: str
    encryption_key: str
    sealed_key: bytes
    state: DeliveryState
    delivered_at: str | None
    opened_at: str | None
    acknowledged_at: str | None
    ack_signature: bytes | None
    ack_key: str | None = None
    reported_at: str | None = None
    confirmed_at: str | None = None
    updated: str | None = None


#: The columns a delivery transition may set besides its state (the store's contract).
DELIVERY_TIMES = frozenset({"delivered_at", "opened_at", "acknowledged_at", "reported_at", "confirmed_at"})


@dataclass(frozen=True)
class LoopStatement:
    """A signed statement in a recipient's feedback loop: an action report, a confirmation or a query.

    ``statement`` is the exact canonical bytes signed; ``sealed_note`` the narrative, sealed (HPKE)
    to ``note_key`` of the member it is for (the sender for a report, the recipient for a query).
    """

    id: str
    packet_id: str
    recipient_member: str
    author_member: str
    type: str
    action: str | None
    statement: bytes
    key_id: str
    signature: bytes
    sealed_note: bytes | None
    note_key: str | None
    created: str


@dataclass(frozen=True)
class Obligation:
    """Something owed by a deadline; the background worker escalates it if still open when due."""

    id: str
    kind: str
    due: str
    created: str
    packet_id: str | None = None
    request_id: str | None = None
    owed_by_member: str | None = None
    owed_by_agency: str | None = None
    owed_to_member: str | None = None
    owed_to_agency: str | None = None
    state: str = "open"
    settled_at: str | None = None


@dataclass(frozen=True)
class Escalation:
    id: str
    obligation_id: str
    kind: str
    due: str
    raised_at: str
    packet_id: str | None = None
    request_id: str | None = None
    owed_by_member: str | None = None
    owed_by_agency: str | None = None
    owed_to_member: str | None = None
    owed_to_agency: str | None = None
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None


@dataclass(frozen=True)
class Page:
    """Where a listing stopped: an opaque cursor the client sends back for the next page."""

    after_created: str
    after_id: str


@dataclass(frozen=True)
class SealedNote:
    """A small JSON note HPKE-sealed to one member's encryption key (see :func:`exchange.crypto.seal_note`)."""

    member: str
    key_id: str
    sealed: bytes


@dataclass(frozen=True)
class RequestDecline:
    """A holder's signed refusal of a request: reason codes, and an explanation sealed to the requester."""

    declined_by: str
    declined_by_agency: str
    key_id: str
    reason_codes: tuple[str, ...]
    signature: bytes
    #: The explanation in words, sealed to the requester's encryption key ``explanation.key_id``.
    explanation: SealedNote
    declined_at: str


@dataclass(frozen=True)
class InfoRequest:
    """An information request (no personal data), with the child's details sealed to each holder.

    ``document`` is the exact canonical bytes the requester signed; the holders are the members in
    ``details`` (the named member, or every duty member of the holder agency when it was made).
    """

    id: str
    requester_member: str
    requester_agency: str
    holder_agency: str
    holder_member: str | None
    document: bytes
    digest: str
    key_id: str
    signature: bytes
    details: tuple[SealedNote, ...]
    purpose: str
    urgency: str
    subject: str | None
    state: RequestState
    created: str
    answer_due: str | None = None
    #: The packet that answered it.
    answered_by: str | None = None
    answered_at: str | None = None
    decline: RequestDecline | None = None

    @property
    def holders(self) -> frozenset[str]:
        return frozenset(note.member for note in self.details)

    def visible_to(self, member_id: str) -> bool:
        """Only the requester and the holders know the request exists."""
        return member_id == self.requester_member or member_id in self.holders


@dataclass(frozen=True)
class ShareDecision:
    """A practitioner's signed record of a decision not to share; the reasons in words sealed to themselves."""

    id: str
    member: str
    agency: str
    document: bytes
    key_id: str
    signature: bytes
    note: SealedNote
    subject: str | None
    request_id: str | None
    created: str
