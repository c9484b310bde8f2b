"""Walk-throughs of the guidance in seeds/: real sharing decisions and what the exchange does with each."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exchange.errors import PolicyViolation, SchemaViolation
from exchange.policy import OnwardLimit, evaluate, validate_manifest_schema
from tests.factories import (
    CATALOGUE,
    NOW,
    POLICE_AGENCY,
    POLICE_MEMBER,
    consultation_manifest,
    imminent_harm_manifest,
    make_context,
    make_manifest,
    recipient,
    without_consent_manifest,
)
from tests.factories import (
    field as field_entry,
)

EARLIER = "pkt_" + "e4" * 12
TO_POLICE = [recipient(POLICE_MEMBER, POLICE_AGENCY)]


@dataclass(frozen=True)
class Scenario:
    story: str
    manifest: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    outcome: str = "deliver"
    rules: frozenset[str] = frozenset()


SCENARIOS = [
    Scenario(
        "A 14-year-old consents alone, with no parent and no competence assessment: refused.",
        make_manifest(consent__given_by="subject", consent__subject_age_band="age_13_to_15"),
        outcome="rejected",
        rules=frozenset({"consent.under_16_needs_parent"}),
    ),
    Scenario(
        "A 14-year-old assessed as Gillick competent consents for themselves: delivered.",
        make_manifest(
            consent__given_by="subject",
            consent__subject_age_band="age_13_to_15",
            consent__child_competence="competent",
        ),
    ),
    Scenario(
        "A 16-year-old's mother consents on their behalf: refused, they consent for themselves.",
        make_manifest(consent__subject_age_band="age_16_to_17"),
        outcome="rejected",
        rules=frozenset({"consent.over_16_consents_for_self"}),
    ),
    Scenario(
        "An unborn child's expectant mother consents to a pre-birth referral: delivered.",
        make_manifest(consent__subject_age_band="unborn"),
    ),
    Scenario(
        "Consent is 'obtained' but the parent was never told who the recipients would tell: refused.",
        make_manifest(consent__informed={"what_will_happen": True, "who_will_be_told_what": True, "why_told": True}),
        outcome="rejected",
        rules=frozenset({"consent.not_informed"}),
    ),
    Scenario(
        "The parent refuses; the child is at risk of significant harm; a manager approved: delivered.",
        without_consent_manifest(),
        {"approval_attached": True},
    ),
    Scenario(
        "The same refusal without an approval yet: held for a manager, not refused.",
        without_consent_manifest(),
        outcome="awaiting_approval",
    ),
    Scenario(
        "The same refusal reaching delivery still without approval: refused.",
        without_consent_manifest(),
        {"stage": "delivery"},
        outcome="rejected",
        rules=frozenset({"without_consent.approval_missing"}),
    ),
    Scenario(
        "The parent refuses and there is only a wellbeing concern: their wishes are respected.",
        without_consent_manifest(proportionality__risk_level="wellbeing_concern"),
        {"approval_attached": True},
        outcome="rejected",
        rules=frozenset({"without_consent.below_threshold"}),
    ),
    Scenario(
        "Sharing without consent although it could wait until the family agree: refused.",
        without_consent_manifest(proportionality__could_wait=True),
        {"approval_attached": True},
        outcome="rejected",
        rules=frozenset({"without_consent.could_wait"}),
    ),
    Scenario(
        "A court order requires disclosure; waiting would not change the duty: delivered with approval.",
        without_consent_manifest(
            without_consent__reason="legal_obligation",
            proportionality__could_wait=True,
            lawful_basis__article6="legal_obligation",
            lawful_basis__legal_power=["court_order"],
        ),
        {"approval_attached": True},
    ),
    Scenario(
        "A competent 15-year-old refuses and the refusal places them at risk: delivered with approval.",
        without_consent_manifest(
            consent={
                "status": "refused",
                "refused_by": "subject",
                "subject_age_band": "age_13_to_15",
                "child_competence": "competent",
            },
            without_consent__reason="competent_child_refusal_at_risk",
        ),
        {"approval_attached": True},
    ),
    Scenario(
        "A competent 14-year-old refuses but their mother consents: refused, a parent cannot override them.",
        make_manifest(
            consent__subject_age_band="age_13_to_15",
            consent__child_competence="competent",
            consent__child_view="refused",
        ),
        {"approval_attached": True},
        outcome="rejected",
        rules=frozenset({"consent.competent_child_refusal_overrides_parent"}),
    ),
    Scenario(
        "The same refusal recorded as sharing without consent, the child at risk: held for a manager's approval.",
        without_consent_manifest(
            consent={
                "status": "refused",
                "refused_by": "subject",
                "subject_age_band": "age_13_to_15",
                "child_competence": "competent",
                "child_view": "refused",
            },
            without_consent__reason="competent_child_refusal_at_risk",
        ),
        outcome="awaiting_approval",
    ),
    Scenario(
        "A 12-year-old not assessed as competent objects while their mother consents: delivered, she decides.",
        make_manifest(consent__child_competence="not_assessed", consent__child_view="refused"),
    ),
    Scenario(
        "A school asks children's social care for advice without naming the family: delivered, no approval needed.",
        consultation_manifest(),
    ),
    Scenario(
        "A consultation that names the child: refused.",
        consultation_manifest(
            fields=[field_entry("anonymised_case_summary"), field_entry("question_asked"), field_entry("child_name")]
        ),
        outcome="rejected",
        rules=frozenset(
            {
                "consultation.identifying_field",
                "consent.not_required_but_identifying",
                "transparency.not_applicable_but_identifying",
            }
        ),
    ),
    Scenario(
        "Imminent harm: notified at once without waiting for approval, which is owed within the hour.",
        imminent_harm_manifest(),
        outcome="deliver_approval_owed",
    ),
    Scenario(
        "Imminent harm still goes out at delivery time while the approval is outstanding.",
        imminent_harm_manifest(),
        {"stage": "delivery"},
        outcome="deliver_approval_owed",
    ),
    Scenario(
        "Imminent risk recorded but sent as routine: refused, imminent harm is notified at once.",
        make_manifest(proportionality__imminent=True),
        outcome="rejected",
        rules=frozenset({"urgency.imminent_not_immediate"}),
    ),
    Scenario(
        "Passing on, in reliance on consent, information whose consent allowed only health: refused.",
        make_manifest(
            derived_from=[EARLIER],
            recipients=TO_POLICE,
            purpose="police_investigation",
            kind="information",
            fields=[field_entry("child_name"), field_entry("child_date_of_birth"), field_entry("offence_details")],
        ),
        {"onward_limits": {EARLIER: OnwardLimit("agency_kinds", frozenset({"health"}))}},
        outcome="rejected",
        rules=frozenset({"consent.onward_sharing_exceeded"}),
    ),
    Scenario(
        "Passing the same information to the police to detect a serious crime, with approval: delivered.",
        without_consent_manifest(
            derived_from=[EARLIER],
            recipients=TO_POLICE,
            purpose="police_investigation",
            kind="information",
            without_consent__reason="serious_crime",
            transparency={"status": "not_informed", "reason": "would_prejudice_investigation"},
            fields=[field_entry("child_name"), field_entry("child_date_of_birth"), field_entry("offence_details")],
        ),
        {"approval_attached": True, "onward_limits": {EARLIER: OnwardLimit("agency_kinds", frozenset({"health"}))}},
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.story for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    """Each story ends as the guidance says, citing the rules it should and no others."""
    decision = evaluate(scenario.manifest, make_context(**scenario.context), CATALOGUE)
    assert decision.outcome == scenario.outcome, [v.rule for v in decision.violations]
    assert {v.rule for v in decision.violations} == scenario.rules


def test_every_violation_is_listed_not_just_the_first() -> None:
    """A packet with three unrelated problems gets all three back, each pointing at its place."""
    manifest = make_manifest(
        purpose="referral_to_childrens_social_care",
        lawful_basis__article6="contract",
        consent__given_by="nobody",
        fields=[*make_manifest()["fields"], field_entry("offence_details")],
    )
    decision = evaluate(manifest, make_context(), CATALOGUE)
    found = {(v.rule, v.path) for v in decision.violations}
    assert found == {
        ("basis.article6_unknown", "/lawful_basis/article6"),
        ("consent.given_by_missing", "/consent/given_by"),
        ("necessity.field_not_allowed", "/fields/7"),
    }
    with pytest.raises(PolicyViolation) as raised:
        decision.raise_if_rejected()
    assert len(raised.value.extras["violations"]) == 3


def test_evaluation_is_deterministic() -> None:
    """The same manifest and context always give the same decision, in the same order."""
    manifest = without_consent_manifest(consent__refused_by="nobody", urgency="whenever")
    first = evaluate(manifest, make_context(), CATALOGUE)
    assert first == evaluate(manifest, make_context(), CATALOGUE)
    assert [v.rule for v in first.violations] == ["consent.refused_by_missing", "urgency.unknown"]


def test_referral_deadlines_follow_local_procedure() -> None:
    """A routine referral on Friday 16:00 is acknowledged by Monday 16:00 and decided within 24 hours."""
    decision = evaluate(make_manifest(), make_context(), CATALOGUE)
    assert decision.ack_due_by == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    assert decision.action_due_by == NOW + timedelta(hours=24)
    assert decision.approval_due_by is None


def test_imminent_harm_approval_is_owed_within_the_hour() -> None:
    """Delivered first, the imminent-harm packet's approval and acknowledgement are due in an hour."""
    decision = evaluate(imminent_harm_manifest(), make_context(), CATALOGUE)
    assert decision.deliver_before_approval
    assert decision.approval_due_by == NOW + timedelta(hours=1)
    assert decision.ack_due_by == NOW + timedelta(hours=1)


def test_an_attached_approval_means_no_waiting() -> None:
    """With a verified approval attached, sharing without consent needs nothing more."""
    decision = evaluate(without_consent_manifest(), make_context(approval_attached=True), CATALOGUE)
    assert (decision.needs_approval, decision.approval_due_by, decision.outcome) == (False, None, "deliver")


def test_a_name_in_the_manifest_is_refused_without_being_repeated() -> None:
    """Personal data put where the manifest has no place for it is refused, and the error never echoes it."""
    manifest = make_manifest(fields=[{**make_manifest()["fields"][0], "value": "Jamie Example"}])
    manifest["consent"]["given_by"] = "Sam Example"
    with pytest.raises(SchemaViolation) as raised:
        evaluate(manifest, make_context(), CATALOGUE)
    text = repr(raised.value.extras) + raised.value.detail
    assert "Example" not in text
    paths = {error["path"] for error in raised.value.extras["errors"]}
    assert paths == {"/fields/0", "/consent/given_by"}


def test_schema_check_without_a_catalogue_uses_the_project_schemas() -> None:
    """validate_manifest_schema works with the project's schema registry when no catalogue is given."""
    validate_manifest_schema(make_manifest())
    with pytest.raises(SchemaViolation):
        validate_manifest_schema(make_manifest(recipients=[]))
