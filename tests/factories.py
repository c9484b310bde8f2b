"""Factories for manifests, sharing contexts and packet files: valid by default, changed by keyword.

``make_manifest()`` is a valid referral from a school to children's social care. Keywords
replace top-level sections; ``section__key`` reaches one level down (``consent__status="refused"``)
and :data:`REMOVE` deletes. Changing ``recipients`` re-seals ``content`` to match, unless
``content`` is given too.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from exchange.examples import REFERRAL
from exchange.policy import DEFAULT_SCHEMAS_DIR, Catalogue, OnwardLimit, SharingContext, load_catalogue

CATALOGUE: Final[Catalogue] = load_catalogue()

#: Delete the key instead of setting it.
REMOVE: Final = object()

NOW: Final = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # a Friday afternoon
AS_OF: Final = "2026-11-20"

SENDER_MEMBER: Final = "mem_" + "5e" * 12
SENDER_AGENCY: Final = "agy_" + "5c" * 12  # a school
SIGNING_KEY: Final = "ed25519:" + "1" * 32
CSC_MEMBER: Final = "mem_" + "c5" * 12
CSC_AGENCY: Final = "agy_" + "cc" * 12
POLICE_MEMBER: Final = "mem_" + "90" * 12
POLICE_AGENCY: Final = "agy_" + "99" * 12
PSEUDONYM: Final = "ab" * 32


def member_id(n: int) -> str:
    """A distinct, well-formed member id for ``n``."""
    return f"mem_{n:024x}"


def encryption_key(member: str) -> str:
    return "mlkem768x25519:" + member[-24:].rjust(32, "0")


def recipient(member: str = CSC_MEMBER, agency: str = CSC_AGENCY) -> dict[str, str]:
    return {"member": member, "agency": agency, "encryption_key": encryption_key(member)}


def content_for(recipients: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """A well-formed ``content`` section sealed to exactly ``recipients``."""
    return {
        "cipher": "AES-256-GCM",
        "hpke_suite": "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM",
        "body_digest": "sha256:" + "0d" * 32,
        "body_size": 2048,
        "sealed_keys": [
            {"member": r["member"], "encryption_key": r["encryption_key"], "digest": "sha256:" + "5a" * 32}
            for r in recipients
        ],
    }


def field(name: str, label: str = "fact_observed", **labels: Any) -> dict[str, Any]:
    """A manifest field entry: ``fact_observed``, current, as of :data:`AS_OF` unless told otherwise."""
    entry: dict[str, Any] = {"name": name, "label": label, "currency": "current", "as_of": AS_OF}
    if label == "fact_reported":
        entry["source"] = "parent_carer"
    if label == "opinion":
        entry["author_role"] = "designated_safeguarding_lead"
    for key, value in labels.items():
        if value is REMOVE:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


def referral_fields() -> list[dict[str, Any]]:
    """The referral's fields: its six required ones and one special-category field."""
    return [
        field("child_name", "fact_reported", source="agency_records"),
        field("child_date_of_birth", "fact_reported", source="agency_records"),
        field("child_address", "fact_reported"),
        field("parent_carer_names", "fact_reported", source="agency_records"),
        field("concern_category", "opinion"),
        field("concern_description"),
        field("injuries_observed"),
    ]


def _apply(document: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        section, _, inner = key.partition("__")
        target = document
        if inner:
            target = document.setdefault(section, {})
            key = inner
        if value is REMOVE:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
    return document


def make_manifest(**overrides: Any) -> dict[str, Any]:
    """A valid referral manifest (see the module docstring for how ``overrides`` apply)."""
    recipients = [recipient()]
    manifest: dict[str, Any] = {
        "version": 1,
        "packet_id": "pkt_" + "0a1b2c3d" * 3,
        "created": "2026-11-20T16:00:00Z",
        "sender": {"member": SENDER_MEMBER, "agency": SENDER_AGENCY, "signing_key": SIGNING_KEY},
        "recipients": recipients,
        "kind": "referral",
        "purpose": "referral_to_childrens_social_care",
        # The sharing sections of the example referral the demo and the end-to-end tests send.
        **{k: copy.deepcopy(REFERRAL[k]) for k in ("lawful_basis", "consent", "transparency", "proportionality")},
        "urgency": "routine",
        "fields": referral_fields(),
        "subject": {"pseudonym": PSEUDONYM},
        "content": content_for(recipients),
    }
    _apply(manifest, overrides)
    if "recipients" in overrides and "content" not in overrides:
        manifest["content"] = content_for(manifest["recipients"])
    return manifest


def without_consent_manifest(**overrides: Any) -> dict[str, Any]:
    """A referral shared although the parent refused: significant harm, the person not told."""
    changes: dict[str, Any] = {
        "consent": {"status": "refused", "refused_by": "parent_carer", "subject_age_band": "under_13"},
        "without_consent": {"reason": "significant_harm_risk"},
        "transparency": {"status": "not_informed", "reason": "would_increase_risk"},
    }
    return make_manifest(**(changes | overrides))


def consultation_manifest(**overrides: Any) -> dict[str, Any]:
    """An anonymous consultation: nothing identifies the family, no subject reference."""
    changes: dict[str, Any] = {
        "kind": "consultation",
        "purpose": "anonymous_consultation",
        "lawful_basis": {"article6": "public_task", "legal_power": ["children_act_2004_s11"]},
        "consent": {"status": "not_required"},
        "transparency": {"status": "not_applicable"},
        "proportionality": {"risk_level": "not_yet_known", "imminent": False, "expected_benefit": "seeks_advice"},
        "fields": [
            field("anonymised_case_summary"),
            field("question_asked"),
            field("child_age_band", "fact_reported"),
        ],
        "subject": REMOVE,
    }
    return make_manifest(**(changes | overrides))


def imminent_harm_manifest(**overrides: Any) -> dict[str, Any]:
    """A notification of imminent harm sent at once, without consent."""
    changes: dict[str, Any] = {
        "kind": "notification",
        "purpose": "imminent_harm_notification",
        "urgency": "immediate",
        "consent": {"status": "not_sought"},
        "without_consent": {"reason": "significant_harm_risk"},
        "transparency": {"status": "not_informed", "reason": "will_inform_later", "inform_by": "2026-11-21"},
        "proportionality": {
            "risk_level": "significant_harm",
            "imminent": True,
            "could_wait": False,
            "expected_benefit": "protects_from_harm",
            "relationship_impact_considered": True,
        },
        "fields": [field("child_name"), field("current_location"), field("concern_description")],
    }
    return make_manifest(**(changes | overrides))


def response_manifest(**overrides: Any) -> dict[str, Any]:
    """A response to an information request, carrying the requested child's name."""
    changes: dict[str, Any] = {
        "kind": "request_response",
        "purpose": "response_to_information_request",
        "in_reply_to": "req_" + "7e" * 12,
        "fields": [field("response_summary"), field("child_name", "fact_reported", source="agency_records")],
        "lawful_basis": {"article6": "public_task", "legal_power": ["children_act_2004_s11"]},
    }
    return make_manifest(**(changes | overrides))


def make_context(**overrides: Any) -> SharingContext:
    """A school sending to children's social care, judged at :data:`NOW` on submission."""
    settings: dict[str, Any] = {
        "now": NOW,
        "sender_agency_kind": "education",
        "recipient_agency_kinds": {CSC_MEMBER: "children_social_care", POLICE_MEMBER: "police"},
        "approval_attached": False,
        "stage": "submission",
        "recipient_cap": 25,
    }
    settings.update(overrides)
    return SharingContext(**settings)


def onward_limit(scope: str, *kinds: str) -> OnwardLimit:
    return OnwardLimit(scope=scope, agency_kinds=frozenset(kinds))


def make_packet_file(**overrides: Any) -> dict[str, Any]:
    """A valid referral packet file (what a practitioner writes), addressed to the CSC duty member."""
    manifest = make_manifest()
    packet: dict[str, Any] = {
        key: copy.deepcopy(manifest[key])
        for key in (
            "purpose",
            "kind",
            "lawful_basis",
            "consent",
            "transparency",
            "proportionality",
            "urgency",
        )
    }
    packet["to"] = [CSC_MEMBER]
    packet["subject_identifier"] = "943 476 5919"
    packet["necessity"] = "Bruising seen twice in a week; children's social care must assess."
    packet["fields"] = {
        entry["name"]: {"value": f"value of {entry['name']}", **{k: v for k, v in entry.items() if k != "name"}}
        for entry in manifest["fields"]
    }
    return _apply(packet, overrides)


def broken_catalogue(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], file_name: str = "purposes.v1.json"
) -> Path:
    """A copy of the catalogue with ``change`` applied to one of its files."""
    folder = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, folder)
    document = json.loads((folder / file_name).read_text(encoding="utf-8"))
    change(document)
    (folder / file_name).write_text(json.dumps(document), encoding="utf-8")
    return folder
