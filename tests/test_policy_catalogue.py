"""The purpose and field catalogue, its deadlines, and the texts `exchange rules/purposes/template` print."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exchange.domain import AgencyKind
from exchange.errors import InvalidRequest
from exchange.policy import (
    DEFAULT_SCHEMAS_DIR,
    RULES,
    SERVICE_RULES,
    CatalogueInvalid,
    Span,
    check_packet_file,
    load_catalogue,
    manifest_parts_from_packet_file,
)
from exchange.policy import vocabulary as v
from exchange.policy.explain import render_purposes, render_rules, render_template, template_explanations
from exchange.policy.requests import ALL_REQUEST_RULES
from tests.factories import CATALOGUE, CSC_MEMBER, NOW, broken_catalogue

ISSUE_PURPOSES = {
    "referral_to_childrens_social_care",
    "early_help_coordination",
    "strategy_discussion",
    "child_protection_conference_report",
    "health_assessment_request",
    "education_welfare",
    "police_investigation",
    "anonymous_consultation",
    "response_to_information_request",
    "imminent_harm_notification",
}


def _raw(name: str) -> Any:
    return json.loads((DEFAULT_SCHEMAS_DIR / name).read_text(encoding="utf-8"))


def test_catalogue_has_the_issues_ten_purposes_at_least() -> None:
    """The catalogue loads and holds every purpose the issue names (at least ten)."""
    assert len(CATALOGUE.purposes) >= 10
    assert set(CATALOGUE.purposes) >= ISSUE_PURPOSES


def test_every_field_a_purpose_names_is_defined_once() -> None:
    """Every allowed and required field is in fields.v1.json, required fields are allowed, none twice."""
    names = [entry["name"] for entry in _raw("fields.v1.json")["fields"]]
    assert len(names) == len(set(names))
    for purpose in _raw("purposes.v1.json")["purposes"]:
        assert set(purpose["allowed_fields"]) <= set(names), purpose["code"]
        assert set(purpose["required_fields"]) <= set(purpose["allowed_fields"]), purpose["code"]


def test_identifying_and_special_fields_are_derived_from_the_field_catalogue() -> None:
    """A purpose's identifying and special-category fields are exactly its allowed fields so marked."""
    for purpose in CATALOGUE.purposes.values():
        allowed = [CATALOGUE.fields[name] for name in purpose.allowed_fields]
        assert purpose.identifying_fields == tuple(d.name for d in allowed if d.identifying)
        assert purpose.special_category_fields == tuple(d.name for d in allowed if d.special_category)


def test_anonymous_consultation_allows_nothing_identifying() -> None:
    """Seeking advice anonymously: no allowed field of the consultation can identify anyone."""
    consultation = CATALOGUE.purposes["anonymous_consultation"]
    assert consultation.anonymous
    assert consultation.identifying_fields == ()


def test_agency_kinds_match_the_directory() -> None:
    """The catalogue's agency kinds are exactly the kinds the directory can register."""
    assert set(CATALOGUE.agency_kinds) == {kind.value for kind in AgencyKind}


def test_deadlines_cover_every_allowed_urgency() -> None:
    """Each purpose has ack, action and approval deadlines at each urgency it allows, and only those."""
    for purpose in CATALOGUE.purposes.values():
        assert set(purpose.deadlines) == set(purpose.allowed_urgencies)
        assert purpose.default_urgency in purpose.allowed_urgencies


def test_local_procedure_deadlines() -> None:
    """Referral: acknowledged in one working day, decided in 24 hours; imminent harm: within the hour."""
    referral = CATALOGUE.purposes["referral_to_childrens_social_care"].deadlines["routine"]
    assert referral.ack == Span(working_days=1)
    assert referral.action.duration == timedelta(hours=24)
    imminent = CATALOGUE.purposes["imminent_harm_notification"]
    assert imminent.allowed_urgencies == ("immediate",)
    assert imminent.deadlines["immediate"].approval.duration == timedelta(hours=1)


@pytest.mark.parametrize(
    ("spec", "start", "due"),
    [
        ("PT4H", datetime(2026, 11, 20, 16, 0, tzinfo=UTC), datetime(2026, 11, 20, 20, 0, tzinfo=UTC)),
        ("P1DT12H", datetime(2026, 11, 20, 16, 0, tzinfo=UTC), datetime(2026, 11, 22, 4, 0, tzinfo=UTC)),
        ({"working_days": 1}, datetime(2026, 11, 20, 16, 0, tzinfo=UTC), datetime(2026, 11, 23, 16, 0, tzinfo=UTC)),
        ({"working_days": 1}, datetime(2026, 11, 21, 10, 0, tzinfo=UTC), datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ({"working_days": 3}, datetime(2026, 11, 18, 9, 0, tzinfo=UTC), datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
    ],
)
def test_span_due_dates(spec: Any, start: datetime, due: datetime) -> None:
    """Durations add exactly; working days skip Saturday and Sunday."""
    span = Span.parse(spec)
    assert span.due_from(start, CATALOGUE.calendar) == due
    assert span.as_json() == spec


@pytest.mark.parametrize("spec", ["P1M", "PT0H", "P", "4 hours", {"working_days": 0}, {"working_days": True}, 3])
def test_span_refuses_what_it_cannot_count(spec: Any) -> None:
    """Months, zero, empty and free text are not deadlines."""
    with pytest.raises(ValueError, match="duration"):
        Span.parse(spec)


def _purpose(doc: dict[str, Any], code: str) -> dict[str, Any]:
    return next(p for p in doc["purposes"] if p["code"] == code)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: _purpose(d, "education_welfare")["allowed_fields"].append("shoe_size"), "shoe_size"),
        (lambda d: _purpose(d, "education_welfare")["required_fields"].append("crime_reference"), "crime_reference"),
        (lambda d: _purpose(d, "anonymous_consultation")["allowed_fields"].append("child_name"), "identifying"),
        (lambda d: _purpose(d, "education_welfare")["recipients"].append("fire_service"), "fire_service"),
        (lambda d: _purpose(d, "education_welfare")["deadlines"].pop("urgent"), "deadlines"),
        (lambda d: _purpose(d, "education_welfare")["suggested"].update(article6="contract"), "contract"),
        (lambda d: _purpose(d, "education_welfare").update(colour="blue"), "colour"),
    ],
)
def test_a_broken_catalogue_fails_closed_at_load(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    """A catalogue naming an unknown field, agency kind or code is refused at start-up, saying what is wrong."""
    with pytest.raises(CatalogueInvalid) as raised:
        load_catalogue(broken_catalogue(tmp_path, change))
    assert any(expected in error for error in raised.value.extras["errors"])


def _set_nature(document: dict[str, Any], nature: str) -> None:
    next(f for f in document["fields"] if f["name"] == "child_views")["nature"] = nature


def test_a_field_nature_the_rules_do_not_know_fails_closed_at_load(tmp_path: Path) -> None:
    """A field whose nature is neither judgement nor fact_or_opinion is refused at start-up, naming the field."""
    with pytest.raises(CatalogueInvalid) as raised:
        load_catalogue(broken_catalogue(tmp_path, lambda d: _set_nature(d, "hunch"), "fields.v1.json"))
    assert any("nature" in error and "hunch" in error for error in raised.value.extras["errors"])


def test_field_natures_are_the_vocabularys_and_judgements_are_derived_per_purpose(tmp_path: Path) -> None:
    """The schema allows exactly the natures the rules know; a field marked judgement is listed as such."""
    schema = _raw("catalogue.schema.v1.json")["$defs"]["field"]["properties"]["nature"]
    assert set(schema["enum"]) == set(v.FIELD_NATURES)
    catalogue = load_catalogue(broken_catalogue(tmp_path, lambda d: _set_nature(d, "judgement"), "fields.v1.json"))
    assert catalogue.fields["child_views"].is_judgement
    assert not CATALOGUE.fields["child_views"].is_judgement
    for purpose in catalogue.purposes.values():
        allowed = [catalogue.fields[name] for name in purpose.allowed_fields]
        assert purpose.judgement_fields == tuple(d.name for d in allowed if d.is_judgement)
    referral = json.loads(render_purposes(CATALOGUE, json_output=True))["purposes"][0]
    assert "concern_category" in referral["judgement_fields"]


def test_every_rule_id_appears_in_exchange_rules() -> None:
    """`exchange rules` lists every rule id with its sentence and its source, in text and in JSON."""
    text = render_rules(json_output=False)
    listed = json.loads(render_rules(json_output=True))["rules"]
    every = [*RULES, *SERVICE_RULES, *ALL_REQUEST_RULES]
    for rule in every:
        assert f"\n{rule.id}\n    {rule.sentence}\n    Source: {rule.source}\n" in "\n" + text
    assert [entry["id"] for entry in listed] == [rule.id for rule in every]
    assert all(entry["source"] and entry["sentence"] for entry in listed)


def test_every_rule_cites_the_guidance_or_the_design() -> None:
    """Each rule's source names a seeds/ file or DESIGN.md."""
    for rule in [*RULES, *SERVICE_RULES, *ALL_REQUEST_RULES]:
        assert "seeds/" in rule.source or "DESIGN.md" in rule.source, rule.id


def test_exchange_purposes_lists_every_purpose() -> None:
    """`exchange purposes` names each purpose with its fields; --json carries the deadlines."""
    text = render_purposes(CATALOGUE)
    listed = json.loads(render_purposes(CATALOGUE, json_output=True))["purposes"]
    for code, purpose in CATALOGUE.purposes.items():
        assert f"{code} — {purpose.title}" in text
    referral = next(p for p in listed if p["code"] == "referral_to_childrens_social_care")
    assert referral["deadlines"]["routine"] == {
        "ack": {"working_days": 1},
        "action": "PT24H",
        "approval": {"working_days": 1},
        "query": {"working_days": 1},
    }
    assert "child_name" in referral["identifying_fields"]
    assert "injuries_observed" in referral["special_category_fields"]


def _fill_in(template: dict[str, Any], purpose_code: str) -> dict[str, Any]:
    """What a practitioner does with a template: fill every null with a sensible answer."""
    packet: dict[str, Any] = json.loads(json.dumps(template))
    packet["to"] = [CSC_MEMBER]
    packet["necessity"] = "The purpose cannot be met without it."
    packet["narrative"] = None
    if "subject_identifier" in packet:
        packet["subject_identifier"] = "943 476 5919"
    if "in_reply_to" in packet:
        packet["in_reply_to"] = "req_" + "7e" * 12
    consent = packet["consent"]
    if consent["status"] == "obtained":
        consent.update(given_by="parent_carer", subject_age_band="under_13")
        consent["informed"] = dict.fromkeys(consent["informed"], True)
    for key in ("could_wait", "relationship_impact_considered"):
        if key in packet["proportionality"]:
            packet["proportionality"][key] = key == "relationship_impact_considered"
    if "inform_by" in packet["transparency"]:
        packet["transparency"]["inform_by"] = "2026-11-27"
    for name, entry in packet["fields"].items():
        if name.startswith("_"):
            continue
        if entry["label"] is None:
            entry["label"] = "fact_observed"
        if "author_role" in entry:
            entry["author_role"] = "social_worker"
        if "file" in entry:
            entry.update(file=f"{name}.pdf", media_type="application/pdf")
        else:
            entry["value"] = f"the {name}"
    return packet


@pytest.mark.parametrize("code", sorted(CATALOGUE.purposes))
def test_a_filled_in_template_passes_the_check(code: str) -> None:
    """Every purpose's template, once its blanks are filled, meets every rule and splits into a manifest."""
    purpose = CATALOGUE.purposes[code]
    template = render_template(CATALOGUE, code, today=NOW.date())
    assert set(purpose.required_fields) <= set(template["fields"])
    packet = _fill_in(template, code)
    decision = check_packet_file(
        packet, CATALOGUE, sorted(purpose.senders)[0], {CSC_MEMBER: sorted(purpose.recipients)[0]}, NOW
    )
    assert decision.violations == ()
    parts = manifest_parts_from_packet_file(packet, CATALOGUE, read_attachment=lambda path: b"%PDF-1.7")
    assert [entry["name"] for entry in parts.manifest_parts["fields"]] == list(purpose.required_fields)


def test_an_unfilled_template_is_refused_with_every_blank_named() -> None:
    """Checking the template as printed lists what is still to do, not just the first blank."""
    template = render_template(CATALOGUE, "referral_to_childrens_social_care", today=NOW.date())
    decision = check_packet_file(template, CATALOGUE, "education", None, NOW)
    rules = {v.rule for v in decision.violations}
    assert {"recipient.missing", "necessity.statement_missing", "field.value_missing", "label.missing"} <= rules
    assert {"consent.not_informed", "consent.given_by_missing", "consent.age_band_missing"} <= rules


def test_the_template_labels_a_judgement_as_an_opinion_and_asks_who_made_it() -> None:
    """A required judgement-natured field starts labelled opinion, with its author's role still to give."""
    template = render_template(CATALOGUE, "referral_to_childrens_social_care", today=NOW.date())
    assert template["fields"]["concern_category"]["label"] == "opinion"
    assert template["fields"]["concern_category"]["author_role"] is None
    assert template["fields"]["child_name"]["label"] is None
    decision = check_packet_file(template, CATALOGUE, "education", None, NOW)
    assert "/fields/concern_category/author_role" in {violation.path for violation in decision.violations}


def test_template_explanations_point_at_what_they_explain() -> None:
    """Every explanation in a template is addressed to a key that exists in the template."""
    template = render_template(CATALOGUE, "strategy_discussion")
    explanations = template_explanations(template)
    assert explanations
    for item in explanations:
        target: Any = template
        for part in [p for p in item["path"].split("/") if p]:
            target = target[part]
    assert any(item["path"] == "/without_consent/reason" for item in explanations)


def test_template_for_an_unknown_purpose_names_the_real_ones() -> None:
    """Asking for a template of a purpose that does not exist is refused, listing the purposes."""
    with pytest.raises(InvalidRequest, match="referral_to_childrens_social_care"):
        render_template(CATALOGUE, "referral_to_anywhere")
