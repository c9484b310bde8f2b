"""Packet files: split into a value-free manifest and a sealed body, and checked locally."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from exchange import crypto
from exchange.errors import InvalidRequest, SchemaViolation
from exchange.policy import check_packet_file, evaluate, manifest_parts_from_packet_file
from tests.factories import (
    CATALOGUE,
    CSC_MEMBER,
    NOW,
    PSEUDONYM,
    content_for,
    make_context,
    make_manifest,
    make_packet_file,
    recipient,
)


def _manifest_from(parts: dict[str, Any]) -> dict[str, Any]:
    """What the SDK does: the envelope around the sharing parts."""
    envelope = make_manifest()
    recipients = [recipient()]
    manifest = {key: envelope[key] for key in ("version", "packet_id", "created", "sender")} | {
        "recipients": recipients,
        "subject": {"pseudonym": PSEUDONYM},
        "content": content_for(recipients),
    }
    return manifest | parts


def test_the_manifest_parts_carry_no_value_and_no_identifier() -> None:
    """Values, the necessity statement, the narrative and the subject identifier stay out of the manifest."""
    packet = make_packet_file(narrative="Seen at the school gate.")
    manifest_parts, body_fields, sealed = manifest_parts_from_packet_file(packet, CATALOGUE)
    text = json.dumps(manifest_parts)
    assert "value of" not in text
    assert "943 476 5919" not in text and "943 476 5919" not in json.dumps([body_fields, sealed])
    assert sealed == {"necessity": packet["necessity"], "narrative": "Seen at the school gate."}
    assert [f["name"] for f in manifest_parts["fields"]] == list(packet["fields"])


def test_body_fields_match_the_manifest_fields_exactly() -> None:
    """Each body field is its manifest entry plus the value, so recipients' checks line up."""
    manifest_parts, body_fields, _ = manifest_parts_from_packet_file(make_packet_file(), CATALOGUE)
    assert [crypto.field_labels(f) for f in body_fields] == manifest_parts["fields"]
    body = {"packet_id": "pkt_x", "fields": body_fields}
    crypto.check_body_matches_manifest({"packet_id": "pkt_x", "fields": manifest_parts["fields"]}, body)


def test_the_assembled_manifest_is_valid_and_accepted() -> None:
    """Parts from a valid packet file, in the SDK's envelope, pass the schema and every rule."""
    manifest_parts, _, _ = manifest_parts_from_packet_file(make_packet_file())
    decision = evaluate(_manifest_from(manifest_parts), make_context(), CATALOGUE)
    assert decision.violations == ()


def test_attachments_are_read_through_the_callers_reader() -> None:
    """A document field's bytes come from the reader given; the manifest gets only their digest and size."""
    photo = b"\xff\xd8\xff\xe0 not really a jpeg"
    packet = make_packet_file(
        fields__photograph_of_injury={
            "file": "injury.jpg",
            "media_type": "image/jpeg",
            "label": "fact_observed",
            "currency": "current",
            "as_of": "2026-11-20",
        }
    )
    read: list[str] = []

    def reader(path: str) -> bytes:
        read.append(path)
        return photo

    manifest_parts, body_fields, _ = manifest_parts_from_packet_file(packet, CATALOGUE, read_attachment=reader)
    assert read == ["injury.jpg"]
    entry = manifest_parts["fields"][-1]
    assert entry["attachment"] == {
        "digest": "sha256:" + hashlib.sha256(photo).hexdigest(),
        "size": len(photo),
        "media_type": "image/jpeg",
    }
    assert base64.b64decode(body_fields[-1]["attachment"]["data"]) == photo
    assert evaluate(_manifest_from(manifest_parts), make_context(), CATALOGUE).violations == ()


def test_a_file_field_without_a_reader_is_refused() -> None:
    """Splitting a packet that attaches a file needs the file's bytes."""
    packet = make_packet_file(fields__conference_report={"file": "report.pdf", "media_type": "application/pdf"})
    with pytest.raises(InvalidRequest, match="conference_report"):
        manifest_parts_from_packet_file(packet, CATALOGUE)


def test_explanations_and_blanks_are_ignored() -> None:
    """Keys starting with _ and null values are dropped before the schema applies."""
    packet = make_packet_file(_about="notes", narrative=None, consent__obtained_on=None)
    packet["fields"]["child_name"]["_explain"] = "who"
    manifest_parts, _, sealed = manifest_parts_from_packet_file(packet, CATALOGUE)
    assert "_explain" not in json.dumps(manifest_parts)
    assert "narrative" not in sealed


def test_a_malformed_packet_file_lists_every_error() -> None:
    """Unknown sections and wrong types are all reported, with paths."""
    packet = make_packet_file(colour="blue", urgency=3)
    with pytest.raises(SchemaViolation) as raised:
        check_packet_file(packet, CATALOGUE, None, None, NOW)
    paths = {error["path"] for error in raised.value.extras["errors"]}
    assert paths == {"", "/urgency"}


def test_the_local_check_says_what_it_could_not_judge() -> None:
    """Offline, unknown agency kinds are noted rather than refused, and the approval queue is explained."""
    packet = make_packet_file(
        consent={"status": "refused", "refused_by": "parent_carer", "subject_age_band": "under_13"},
        without_consent={"reason": "significant_harm_risk"},
        transparency={"status": "not_informed", "reason": "would_increase_risk"},
    )
    decision = check_packet_file(packet, CATALOGUE, None, None, NOW)
    assert decision.accepted
    assert decision.outcome == "awaiting_approval"
    assert any("--sender-kind" in note for note in decision.notes)
    assert any("--recipient-kind" in note for note in decision.notes)
    assert any("approve" in note for note in decision.notes)


def test_the_local_check_applies_known_agency_kinds() -> None:
    """Given the recipients' kinds, the local check refuses a purpose they may not receive."""
    decision = check_packet_file(make_packet_file(), CATALOGUE, "education", {CSC_MEMBER: "police"}, NOW)
    assert [v.rule for v in decision.violations] == ["recipient.agency_kind_not_allowed"]
    assert decision.violations[0].path == "/to/0"
