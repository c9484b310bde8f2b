"""The sharing sections of a manifest (or of a packet file) as typed, read-only values.

Both a manifest and a practitioner's packet file are read into one :class:`SharingRecord`,
so the same rules judge both; each value keeps the JSON Pointer (RFC 6901) of where it came
from, so a violation points at the exact place to fix. Documents are parsed only after their
schema check, so types are known; answers may still be missing, which the rules report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from exchange.policy import vocabulary as v


@dataclass(frozen=True)
class FieldEntry:
    """One field shared: its name and labels (never its value)."""

    path: str
    name: str
    label: str | None
    source: str | None
    author_role: str | None
    currency: str | None
    as_of: date | None
    has_attachment: bool
    media_type: str | None
    #: Only a packet file can tell: the field is listed with neither a value nor a file.
    value_missing: bool = False


@dataclass(frozen=True)
class RecipientEntry:
    path: str
    #: A member id; in a packet file, the ``to`` entry (``mem_...`` or ``agency:agy_...``).
    key: str
    #: The encryption key the packet is sealed to (None in a packet file: not sealed yet).
    encryption_key: str | None = None


@dataclass(frozen=True)
class LawfulBasis:
    article6: str | None
    article9: str | None
    legal_power: tuple[str, ...]


@dataclass(frozen=True)
class OnwardSharing:
    scope: str | None
    agency_kinds: tuple[str, ...]


@dataclass(frozen=True)
class ConsentRecord:
    status: str | None
    given_by: str | None
    refused_by: str | None
    #: Each of the four informed-consent points -> whether the person understood it (absent: not recorded).
    informed: Mapping[str, bool]
    subject_age_band: str | None
    child_competence: str | None
    #: The child's own view when someone else consents for them (agreed, refused, not_asked).
    child_view: str | None
    onward_sharing: OnwardSharing | None


@dataclass(frozen=True)
class Transparency:
    status: str | None
    reason: str | None
    inform_by: date | None


@dataclass(frozen=True)
class Proportionality:
    risk_level: str | None
    imminent: bool | None
    could_wait: bool | None
    expected_benefit: str | None
    relationship_impact_considered: bool | None


@dataclass(frozen=True)
class SharingRecord:
    """Everything the rules judge about one packet."""

    kind: str | None
    purpose: str | None
    urgency: str | None
    lawful_basis: LawfulBasis
    consent: ConsentRecord
    #: Whether a ``without_consent`` section is present, and its reason.
    has_without_consent: bool
    without_consent_reason: str | None
    transparency: Transparency
    proportionality: Proportionality
    fields: tuple[FieldEntry, ...]
    recipients: tuple[RecipientEntry, ...]
    #: ``/recipients`` in a manifest, ``/to`` in a packet file.
    recipients_path: str
    #: (member, encryption key) pairs the content key is sealed to; None for a packet file.
    sealed_keys: tuple[tuple[str, str | None], ...] | None
    #: Where a subject reference is (``/subject`` or ``/subject_identifier``), or None when there is none.
    subject_path: str | None
    in_reply_to: str | None
    derived_from: tuple[str, ...]
    #: Whether the "why sharing is necessary" statement is written; None when it is sealed out of sight.
    necessity_stated: bool | None

    @property
    def shares_without_consent(self) -> bool:
        """Consent was refused or not sought: a reason and a manager's approval are needed."""
        return self.consent.status in v.WITHOUT_CONSENT_STATUSES


def _section(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key)
    return value if isinstance(value, Mapping) else {}


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    return value if isinstance(value, str) else None


def _flag(section: Mapping[str, Any], key: str) -> bool | None:
    value = section.get(key)
    return value if isinstance(value, bool) else None


def _date(section: Mapping[str, Any], key: str) -> date | None:
    value = section.get(key)
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _codes(section: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = section.get(key)
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()


def _field(path: str, name: str, raw: Mapping[str, Any], *, packet_file: bool) -> FieldEntry:
    attachment = raw.get("attachment")
    has_file = isinstance(raw.get("file"), str)
    media_type = _text(attachment, "media_type") if isinstance(attachment, Mapping) else _text(raw, "media_type")
    return FieldEntry(
        path=path,
        name=name,
        label=_text(raw, "label"),
        source=_text(raw, "source"),
        author_role=_text(raw, "author_role"),
        currency=_text(raw, "currency"),
        as_of=_date(raw, "as_of"),
        has_attachment=isinstance(attachment, Mapping) or has_file,
        media_type=media_type,
        value_missing=packet_file and "value" not in raw and not has_file,
    )


def _common(document: Mapping[str, Any]) -> dict[str, Any]:
    basis = _section(document, "lawful_basis")
    consent = _section(document, "consent")
    informed = _section(consent, "informed")
    onward = consent.get("onward_sharing")
    transparency = _section(document, "transparency")
    proportionality = _section(document, "proportionality")
    without = document.get("without_consent")
    return {
        "kind": _text(document, "kind"),
        "purpose": _text(document, "purpose"),
        "urgency": _text(document, "urgency"),
        "lawful_basis": LawfulBasis(
            article6=_text(basis, "article6"),
            article9=_text(basis, "article9"),
            legal_power=_codes(basis, "legal_power"),
        ),
        "consent": ConsentRecord(
            status=_text(consent, "status"),
            given_by=_text(consent, "given_by"),
            refused_by=_text(consent, "refused_by"),
            informed={k: b for k, b in informed.items() if isinstance(b, bool)},
            subject_age_band=_text(consent, "subject_age_band"),
            child_competence=_text(consent, "child_competence"),
            child_view=_text(consent, "child_view"),
            onward_sharing=(
                OnwardSharing(scope=_text(onward, "scope"), agency_kinds=_codes(onward, "agency_kinds"))
                if isinstance(onward, Mapping)
                else None
            ),
        ),
        "has_without_consent": isinstance(without, Mapping),
        "without_consent_reason": _text(without, "reason") if isinstance(without, Mapping) else None,
        "transparency": Transparency(
            status=_text(transparency, "status"),
            reason=_text(transparency, "reason"),
            inform_by=_date(transparency, "inform_by"),
        ),
        "proportionality": Proportionality(
            risk_level=_text(proportionality, "risk_level"),
            imminent=_flag(proportionality, "imminent"),
            could_wait=_flag(proportionality, "could_wait"),
            expected_benefit=_text(proportionality, "expected_benefit"),
            relationship_impact_considered=_flag(proportionality, "relationship_impact_considered"),
        ),
        "in_reply_to": _text(document, "in_reply_to"),
        "derived_from": _codes(document, "derived_from"),
    }


def record_from_manifest(manifest: Mapping[str, Any]) -> SharingRecord:
    """Read a schema-valid manifest."""
    raw_fields = manifest.get("fields")
    raw_recipients = manifest.get("recipients")
    content = _section(manifest, "content")
    sealed = content.get("sealed_keys")
    return SharingRecord(
        **_common(manifest),
        fields=tuple(
            _field(f"/fields/{i}", str(raw.get("name")), raw, packet_file=False)
            for i, raw in enumerate(raw_fields if isinstance(raw_fields, list) else [])
            if isinstance(raw, Mapping)
        ),
        recipients=tuple(
            RecipientEntry(
                path=f"/recipients/{i}", key=str(raw.get("member")), encryption_key=_text(raw, "encryption_key")
            )
            for i, raw in enumerate(raw_recipients if isinstance(raw_recipients, list) else [])
            if isinstance(raw, Mapping)
        ),
        recipients_path="/recipients",
        sealed_keys=(
            tuple((str(s.get("member")), _text(s, "encryption_key")) for s in sealed if isinstance(s, Mapping))
            if isinstance(sealed, list)
            else None
        ),
        subject_path="/subject" if "subject" in manifest else None,
        necessity_stated=None,
    )


def record_from_packet_file(document: Mapping[str, Any]) -> SharingRecord:
    """Read a schema-valid packet file (explanations and nulls already removed)."""
    raw_fields = _section(document, "fields")
    to = document.get("to")
    necessity = document.get("necessity")
    return SharingRecord(
        **_common(document),
        fields=tuple(
            _field(f"/fields/{name}", name, raw, packet_file=True)
            for name, raw in raw_fields.items()
            if isinstance(raw, Mapping)
        ),
        recipients=tuple(
            RecipientEntry(path=f"/to/{i}", key=entry)
            for i, entry in enumerate(to if isinstance(to, list) else [])
            if isinstance(entry, str)
        ),
        recipients_path="/to",
        sealed_keys=None,
        subject_path="/subject_identifier" if "subject_identifier" in document else None,
        necessity_stated=isinstance(necessity, str) and bool(necessity.strip()),
    )
