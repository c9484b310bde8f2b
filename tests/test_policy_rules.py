"""Every sharing rule, one accepted and one rejected case each (the table must cover the registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from exchange.policy import RULES_BY_ID, Decision, check_packet_file, evaluate
from tests.factories import (
    CATALOGUE,
    CSC_AGENCY,
    CSC_MEMBER,
    NOW,
    POLICE_AGENCY,
    POLICE_MEMBER,
    PSEUDONYM,
    REMOVE,
    consultation_manifest,
    field,
    imminent_harm_manifest,
    make_context,
    make_manifest,
    make_packet_file,
    member_id,
    onward_limit,
    recipient,
    referral_fields,
    response_manifest,
    without_consent_manifest,
)

Judge = Callable[[], Decision]


def judge(manifest: dict[str, Any], **context: Any) -> Decision:
    return evaluate(manifest, make_context(**context), CATALOGUE)


def judge_file(packet: dict[str, Any]) -> Decision:
    return check_packet_file(packet, CATALOGUE, "education", {CSC_MEMBER: "children_social_care"}, NOW)


def fields_with(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [*referral_fields(), *extra]


def fields_changed(name: str, **labels: Any) -> list[dict[str, Any]]:
    """The referral's fields with ``name``'s labels changed (REMOVE deletes one)."""
    out = []
    for entry in referral_fields():
        if entry["name"] == name:
            entry = {**entry, **labels}
            entry = {k: v for k, v in entry.items() if v is not REMOVE}
        out.append(entry)
    return out


def fields_without(name: str) -> list[dict[str, Any]]:
    return [entry for entry in referral_fields() if entry["name"] != name]


REQUESTED = frozenset({"child_name"})
EARLIER = "pkt_" + "e4" * 12
PHOTO = field(
    "photograph_of_injury", attachment={"digest": "sha256:" + "f0" * 32, "size": 5120, "media_type": "image/jpeg"}
)
TWO = [recipient(member_id(1)), recipient(member_id(2))]
TWO_KINDS = {member_id(1): "children_social_care", member_id(2): "children_social_care"}
THREE = [*TWO, recipient(member_id(3))]
THREE_KINDS = TWO_KINDS | {member_id(3): "children_social_care"}
COMPETENT_CHILD_REFUSAL = {
    "status": "refused",
    "refused_by": "subject",
    "subject_age_band": "age_13_to_15",
    "child_competence": "competent",
}
#: A mother consents for her 14-year-old, who is assessed as competent.
FOR_A_COMPETENT_FOURTEEN = {
    "consent__subject_age_band": "age_13_to_15",
    "consent__child_competence": "competent",
}
FOURTEEN_ALONE = {
    "consent__given_by": "subject",
    "consent__subject_age_band": "age_13_to_15",
}


@dataclass(frozen=True)
class Case:
    rule: str
    accepted: Judge
    rejected: Judge


CASES = [
    # --- purpose, kind, requests
    Case(
        "purpose.unknown", lambda: judge(make_manifest()), lambda: judge(make_manifest(purpose="referral_to_nowhere"))
    ),
    Case("kind.unknown", lambda: judge(make_manifest()), lambda: judge(make_manifest(kind="letter"))),
    Case("kind.not_allowed_for_purpose", lambda: judge(make_manifest()), lambda: judge(make_manifest(kind="report"))),
    Case(
        "purpose.requires_imminent_risk",
        lambda: judge(imminent_harm_manifest()),
        lambda: judge(imminent_harm_manifest(proportionality__imminent=False)),
    ),
    Case(
        "request.reply_reference_missing",
        lambda: judge(response_manifest(), requested_fields=REQUESTED),
        lambda: judge(response_manifest(in_reply_to=REMOVE), requested_fields=REQUESTED),
    ),
    Case(
        "request.not_found",
        lambda: judge(response_manifest(), requested_fields=REQUESTED),
        lambda: judge(response_manifest()),
    ),
    Case(
        "necessity.field_not_requested",
        lambda: judge(response_manifest(), requested_fields=REQUESTED),
        lambda: judge(response_manifest(), requested_fields=frozenset({"response_summary"})),
    ),
    # --- sender, recipients, directory, envelope
    Case(
        "sender.agency_kind_not_allowed",
        lambda: judge(make_manifest(), sender_agency_kind="voluntary_sector"),
        lambda: judge(
            make_manifest(
                purpose="health_assessment_request",
                fields=[
                    field("child_name"),
                    field("child_date_of_birth"),
                    field("assessment_requested"),
                    field("concern_description"),
                ],
            ),
            sender_agency_kind="voluntary_sector",
            recipient_agency_kinds={CSC_MEMBER: "health"},
        ),
    ),
    Case(
        "recipient.missing",
        lambda: judge_file(make_packet_file()),
        lambda: judge_file(make_packet_file(to=[])),
    ),
    Case(
        "recipient.agency_kind_unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(), recipient_agency_kinds={}),
    ),
    Case(
        "recipient.agency_kind_not_allowed",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(recipients=[recipient(POLICE_MEMBER, POLICE_AGENCY)])),
    ),
    Case(
        "recipient.cap_exceeded",
        lambda: judge(make_manifest(recipients=TWO), recipient_cap=2, recipient_agency_kinds=TWO_KINDS),
        lambda: judge(make_manifest(recipients=THREE), recipient_cap=2, recipient_agency_kinds=THREE_KINDS),
    ),
    Case(
        "recipient.duplicate",
        lambda: judge(make_manifest(recipients=TWO), recipient_agency_kinds=TWO_KINDS),
        lambda: judge(make_manifest(recipients=[recipient(), recipient()])),
    ),
    Case(
        "directory.purpose_not_permitted",
        lambda: judge(make_manifest(), sender_purposes=frozenset({"referral_to_childrens_social_care"})),
        lambda: judge(make_manifest(), recipient_purposes={CSC_MEMBER: frozenset({"early_help_coordination"})}),
    ),
    Case(
        "envelope.sealed_keys_mismatch",
        lambda: judge(make_manifest()),
        lambda: judge(
            make_manifest(content=make_manifest(recipients=[recipient(POLICE_MEMBER, CSC_AGENCY)])["content"])
        ),
    ),
    # --- lawful basis
    Case(
        "basis.article6_unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(lawful_basis__article6="contract")),
    ),
    Case(
        "basis.special_category_condition_missing",
        lambda: judge(make_manifest(lawful_basis__article9=REMOVE, fields=fields_without("injuries_observed"))),
        lambda: judge(make_manifest(lawful_basis__article9=REMOVE)),
    ),
    Case(
        "basis.article9_unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(lawful_basis__article9="because")),
    ),
    Case(
        "basis.legal_power_missing",
        lambda: judge(
            make_manifest(lawful_basis__article6="recognised_legitimate_interest", lawful_basis__legal_power=[])
        ),
        lambda: judge(make_manifest(lawful_basis__legal_power=[])),
    ),
    Case(
        "basis.legal_power_unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(lawful_basis__legal_power=["children_act_2099_s1"])),
    ),
    Case(
        "basis.consent_not_obtained",
        lambda: judge(make_manifest(lawful_basis__article6="consent")),
        lambda: judge(without_consent_manifest(lawful_basis__article6="consent"), approval_attached=True),
    ),
    # --- consent
    Case(
        "consent.status_unknown", lambda: judge(make_manifest()), lambda: judge(make_manifest(consent__status="maybe"))
    ),
    Case(
        "consent.not_informed",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(consent__informed={"what_will_happen": True, "who_will_be_told_what": True})),
    ),
    Case(
        "consent.given_by_missing",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(consent__given_by=REMOVE)),
    ),
    Case(
        "consent.refused_by_missing",
        lambda: judge(without_consent_manifest(), approval_attached=True),
        lambda: judge(without_consent_manifest(consent__refused_by=REMOVE), approval_attached=True),
    ),
    Case(
        "consent.age_band_missing",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(consent__subject_age_band=REMOVE)),
    ),
    Case(
        "consent.under_16_needs_parent",
        lambda: judge(make_manifest(**FOURTEEN_ALONE, consent__child_competence="competent")),
        lambda: judge(make_manifest(**FOURTEEN_ALONE, consent__child_competence="not_assessed")),
    ),
    Case(
        "consent.over_16_consents_for_self",
        lambda: judge(make_manifest(consent__subject_age_band="age_16_to_17", consent__given_by="subject")),
        lambda: judge(make_manifest(consent__subject_age_band="age_16_to_17")),
    ),
    Case(
        "consent.child_view_unknown",
        lambda: judge(make_manifest(consent__child_view="not_asked")),
        lambda: judge(make_manifest(consent__child_view="sulking")),
    ),
    Case(
        "consent.competent_child_refusal_overrides_parent",
        lambda: judge(make_manifest(**FOR_A_COMPETENT_FOURTEEN, consent__child_view="agreed")),
        lambda: judge(make_manifest(**FOR_A_COMPETENT_FOURTEEN, consent__child_view="refused")),
    ),
    Case(
        "consent.onward_sharing_invalid",
        lambda: judge(make_manifest(consent__onward_sharing={"scope": "agency_kinds", "agency_kinds": ["health"]})),
        lambda: judge(make_manifest(consent__onward_sharing={"scope": "agency_kinds"})),
    ),
    Case(
        "consent.onward_source_unknown",
        lambda: judge(make_manifest(derived_from=[EARLIER]), onward_limits={EARLIER: onward_limit("any")}),
        lambda: judge(make_manifest(derived_from=[EARLIER])),
    ),
    Case(
        "consent.onward_sharing_exceeded",
        lambda: judge(
            make_manifest(derived_from=[EARLIER]),
            onward_limits={EARLIER: onward_limit("agency_kinds", "children_social_care")},
        ),
        lambda: judge(make_manifest(derived_from=[EARLIER]), onward_limits={EARLIER: onward_limit("none")}),
    ),
    Case(
        "consent.not_required_but_identifying",
        lambda: judge(consultation_manifest()),
        lambda: judge(make_manifest(consent={"status": "not_required"})),
    ),
    # --- without consent
    Case(
        "without_consent.reason_missing",
        lambda: judge(without_consent_manifest()),
        lambda: judge(without_consent_manifest(without_consent=REMOVE)),
    ),
    Case(
        "without_consent.reason_unknown",
        lambda: judge(without_consent_manifest()),
        lambda: judge(without_consent_manifest(without_consent__reason="gut_feeling")),
    ),
    Case(
        "without_consent.not_applicable",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(without_consent={"reason": "significant_harm_risk"})),
    ),
    Case(
        "without_consent.below_threshold",
        lambda: judge(without_consent_manifest()),
        lambda: judge(without_consent_manifest(proportionality__risk_level="wellbeing_concern")),
    ),
    Case(
        "without_consent.reason_contradicts_consent",
        lambda: judge(
            without_consent_manifest(
                consent=COMPETENT_CHILD_REFUSAL, without_consent__reason="competent_child_refusal_at_risk"
            )
        ),
        lambda: judge(
            without_consent_manifest(
                consent=COMPETENT_CHILD_REFUSAL | {"child_competence": "not_assessed"},
                without_consent__reason="competent_child_refusal_at_risk",
            )
        ),
    ),
    Case(
        "without_consent.could_wait",
        lambda: judge(without_consent_manifest()),
        lambda: judge(without_consent_manifest(proportionality__could_wait=True)),
    ),
    Case(
        "without_consent.approval_missing",
        lambda: judge(without_consent_manifest(), stage="delivery", approval_attached=True),
        lambda: judge(without_consent_manifest(), stage="delivery"),
    ),
    # --- transparency
    Case(
        "transparency.status_unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(transparency={"status": "maybe"})),
    ),
    Case(
        "transparency.reason_missing",
        lambda: judge(without_consent_manifest()),
        lambda: judge(without_consent_manifest(transparency={"status": "not_informed"})),
    ),
    Case(
        "transparency.inform_by_missing",
        lambda: judge(imminent_harm_manifest()),
        lambda: judge(imminent_harm_manifest(transparency__inform_by=REMOVE)),
    ),
    Case(
        "transparency.not_applicable_but_identifying",
        lambda: judge(consultation_manifest()),
        lambda: judge(make_manifest(transparency={"status": "not_applicable"})),
    ),
    # --- proportionality and urgency
    Case(
        "proportionality.risk_level_unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(proportionality__risk_level="high")),
    ),
    Case(
        "proportionality.incomplete",
        lambda: judge(make_manifest(proportionality__could_wait=REMOVE)),
        lambda: judge(without_consent_manifest(proportionality__could_wait=REMOVE)),
    ),
    Case(
        "proportionality.relationship_impact_not_considered",
        lambda: judge(make_manifest(proportionality__relationship_impact_considered=False)),
        lambda: judge(without_consent_manifest(proportionality__relationship_impact_considered=False)),
    ),
    Case(
        "proportionality.imminent_could_wait",
        lambda: judge(imminent_harm_manifest()),
        lambda: judge(imminent_harm_manifest(proportionality__could_wait=True)),
    ),
    Case("urgency.unknown", lambda: judge(make_manifest()), lambda: judge(make_manifest(urgency="whenever"))),
    Case(
        "urgency.not_allowed_for_purpose",
        lambda: judge(imminent_harm_manifest()),
        lambda: judge(imminent_harm_manifest(urgency="urgent")),
    ),
    Case(
        "urgency.imminent_not_immediate",
        lambda: judge(make_manifest(proportionality__imminent=True, urgency="immediate")),
        lambda: judge(make_manifest(proportionality__imminent=True)),
    ),
    # --- fields and labels
    Case(
        "field.unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(fields=fields_with(field("favourite_colour")))),
    ),
    Case(
        "field.duplicate",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(fields=fields_with(field("child_name")))),
    ),
    Case(
        "necessity.field_not_allowed",
        lambda: judge(make_manifest(fields=fields_with(field("household_members", "fact_reported")))),
        lambda: judge(make_manifest(fields=fields_with(field("offence_details")))),
    ),
    Case(
        "necessity.required_field_missing",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(fields=fields_without("child_address"))),
    ),
    Case(
        "necessity.statement_missing",
        lambda: judge_file(make_packet_file()),
        lambda: judge_file(make_packet_file(necessity="   ")),
    ),
    Case(
        "field.value_missing",
        lambda: judge_file(make_packet_file()),
        lambda: judge_file(
            make_packet_file(
                fields__child_name={
                    "value": None,
                    "label": "fact_observed",
                    "currency": "current",
                    "as_of": "2026-11-20",
                }
            )
        ),
    ),
    Case(
        "field.attachment_missing",
        lambda: judge(make_manifest(fields=fields_with(PHOTO))),
        lambda: judge(make_manifest(fields=fields_with(field("photograph_of_injury")))),
    ),
    Case(
        "field.attachment_not_allowed",
        lambda: judge(make_manifest(fields=fields_with(PHOTO))),
        lambda: judge(make_manifest(fields=fields_changed("child_name", attachment=PHOTO["attachment"]))),
    ),
    Case(
        "field.attachment_media_type",
        lambda: judge(make_manifest(fields=fields_with(PHOTO))),
        lambda: judge(
            make_manifest(
                fields=fields_with(
                    field(
                        "photograph_of_injury",
                        attachment={**PHOTO["attachment"], "media_type": "application/x-msdownload"},
                    )
                )
            )
        ),
    ),
    Case(
        "label.missing",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(fields=fields_changed("child_name", label=REMOVE))),
    ),
    Case(
        "label.unknown",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(fields=fields_changed("child_name", label="gossip"))),
    ),
    Case(
        "label.source_missing",
        lambda: judge(make_manifest(fields=fields_changed("child_address", source="neighbour"))),
        lambda: judge(make_manifest(fields=fields_changed("child_address", source=REMOVE))),
    ),
    Case(
        "label.author_role_missing",
        lambda: judge(make_manifest(fields=fields_changed("concern_category", author_role="social_worker"))),
        lambda: judge(make_manifest(fields=fields_changed("concern_category", author_role="neighbour"))),
    ),
    Case(
        "label.judgement_as_fact",
        lambda: judge(make_manifest(fields=fields_changed("concern_category", author_role="social_worker"))),
        lambda: judge(make_manifest(fields=fields_changed("concern_category", label="fact_observed"))),
    ),
    Case(
        "label.currency_missing",
        lambda: judge(make_manifest(fields=fields_changed("child_address", currency="historical"))),
        lambda: judge(make_manifest(fields=fields_changed("child_address", currency=REMOVE))),
    ),
    Case(
        "label.as_of_missing",
        lambda: judge(make_manifest()),
        lambda: judge(make_manifest(fields=fields_changed("child_address", as_of=REMOVE))),
    ),
    Case(
        "label.as_of_in_future",
        lambda: judge(make_manifest(fields=fields_changed("child_address", as_of="2019-05-01", currency="historical"))),
        lambda: judge(make_manifest(fields=fields_changed("child_address", as_of="2026-11-21"))),
    ),
    Case(
        "consultation.identifying_field",
        lambda: judge(consultation_manifest()),
        lambda: judge(
            consultation_manifest(
                fields=[field("anonymised_case_summary"), field("question_asked"), field("child_name")]
            )
        ),
    ),
    Case(
        "consultation.subject_reference",
        lambda: judge(consultation_manifest()),
        lambda: judge(consultation_manifest(subject={"pseudonym": PSEUDONYM})),
    ),
]


def test_every_rule_has_a_case() -> None:
    """The table names every rule in the registry exactly once."""
    named = [case.rule for case in CASES]
    assert sorted(named) == sorted(RULES_BY_ID)


@pytest.mark.parametrize("case", CASES, ids=[case.rule for case in CASES])
def test_accepted_case_passes_every_rule(case: Case) -> None:
    """The accepted variant breaks no rule at all."""
    decision = case.accepted()
    assert decision.violations == ()


@pytest.mark.parametrize("case", CASES, ids=[case.rule for case in CASES])
def test_rejected_case_breaks_the_rule(case: Case) -> None:
    """The rejected variant is refused and cites this rule, with its source, a path and a full sentence."""
    decision = case.rejected()
    assert not decision.accepted
    cited = [v for v in decision.violations if v.rule == case.rule]
    assert cited, [v.rule for v in decision.violations]
    for violation in cited:
        assert violation.source == RULES_BY_ID[case.rule].source
        assert violation.path.startswith("/")
        assert violation.message.endswith((".", "?"))
