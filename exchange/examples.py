"""Example packet files (what a practitioner writes): the demo, the tests and the docs share them."""

from __future__ import annotations

import copy
from typing import Any

REFERRAL: dict[str, Any] = {
    "purpose": "referral_to_childrens_social_care",
    "kind": "referral",
    "urgency": "urgent",
    "lawful_basis": {
        "article6": "public_task",
        "article9": "safeguarding_children",
        "legal_power": ["children_act_2004_s11", "children_act_1989_s47"],
    },
    "consent": {
        "status": "obtained",
        "given_by": "parent_carer",
        "informed": {
            "what_will_happen": True,
            "who_will_be_told_what": True,
            "who_they_will_tell": True,
            "why_told": True,
        },
        "subject_age_band": "under_13",
        "obtained_on": "2026-11-20",
    },
    "transparency": {"status": "informed"},
    "proportionality": {
        "risk_level": "significant_harm",
        "imminent": False,
        "could_wait": False,
        "expected_benefit": "protects_from_harm",
        "relationship_impact_considered": True,
    },
    "subject_identifier": "943 476 5919",
    "necessity": "Bruising seen twice in a week; children's social care must assess (Children Act 1989 s.47).",
    "narrative": "Class teacher noticed bruising on the upper arm on Monday and again on Thursday.",
    "fields": {
        "child_name": {
            "value": "Jamie Example",
            "label": "fact_observed",
            "currency": "current",
            "as_of": "2026-11-20",
        },
        "child_date_of_birth": {
            "value": "2017-03-02",
            "label": "fact_reported",
            "source": "parent_carer",
            "currency": "current",
            "as_of": "2026-11-20",
        },
        "child_address": {
            "value": "1 Example Street, Northfield",
            "label": "fact_reported",
            "source": "parent_carer",
            "currency": "current",
            "as_of": "2026-11-20",
        },
        "parent_carer_names": {
            "value": "Sam Example (mother)",
            "label": "fact_reported",
            "source": "parent_carer",
            "currency": "current",
            "as_of": "2026-11-20",
        },
        "concern_category": {
            "value": "physical_abuse",
            "label": "opinion",
            "author_role": "designated_safeguarding_lead",
            "currency": "current",
            "as_of": "2026-11-20",
        },
        "concern_description": {
            "value": "Bruising to the upper left arm, finger-tip shaped, seen on 16 and 19 November.",
            "label": "fact_observed",
            "currency": "current",
            "as_of": "2026-11-19",
        },
    },
}


def referral(to: list[str], **changes: Any) -> dict[str, Any]:
    """The valid referral addressed to ``to``, with top-level sections replaced by ``changes``."""
    packet = copy.deepcopy(REFERRAL)
    packet["to"] = to
    packet.update(changes)
    return packet


def referral_without_consent(to: list[str]) -> dict[str, Any]:
    """Consent refused by the parent; significant harm risk; shared under the public-interest ground."""
    return referral(
        to,
        consent={"status": "refused", "refused_by": "parent_carer", "subject_age_band": "under_13"},
        without_consent={"reason": "significant_harm_risk"},
        transparency={"status": "not_informed", "reason": "would_increase_risk"},
    )


def imminent_harm(to: list[str], inform_by: str) -> dict[str, Any]:
    """A notification of imminent harm: sent at once without consent, the manager's approval owed."""
    packet = referral(
        to,
        kind="notification",
        purpose="imminent_harm_notification",
        urgency="immediate",
        consent={"status": "not_sought"},
        without_consent={"reason": "significant_harm_risk"},
        transparency={"status": "not_informed", "reason": "will_inform_later", "inform_by": inform_by},
        proportionality={
            "risk_level": "significant_harm",
            "imminent": True,
            "could_wait": False,
            "expected_benefit": "protects_from_harm",
            "relationship_impact_considered": True,
        },
    )
    fields = packet["fields"]
    packet["fields"] = {
        "child_name": fields["child_name"],
        "current_location": {
            "value": "Northfield Park",
            "label": "fact_observed",
            "currency": "current",
            "as_of": "2026-11-20",
        },
        "concern_description": fields["concern_description"],
    }
    return packet


def consultation(to: list[str], **changes: Any) -> dict[str, Any]:
    """An anonymous consultation packet file with nothing identifying in it, addressed to ``to``."""
    field_labels = {"label": "fact_observed", "currency": "current", "as_of": "2026-11-20"}
    packet: dict[str, Any] = {
        "purpose": "anonymous_consultation",
        "kind": "consultation",
        "urgency": "routine",
        "to": to,
        "lawful_basis": {"article6": "public_task", "legal_power": ["children_act_2004_s11"]},
        "consent": {"status": "not_required"},
        "transparency": {"status": "not_applicable"},
        "proportionality": {"risk_level": "not_yet_known", "imminent": False, "expected_benefit": "seeks_advice"},
        "necessity": "Advice on whether this meets the threshold for a referral.",
        "fields": {
            "anonymised_case_summary": {
                "value": "A child in Year 2 has come to school hungry on several days this term.",
                **field_labels,
            },
            "question_asked": {"value": "Does this meet the threshold for early help?", **field_labels},
            "child_age_band": {
                "value": "under_13",
                "label": "fact_reported",
                "source": "parent_carer",
                "currency": "current",
                "as_of": "2026-11-20",
            },
        },
    }
    packet.update(changes)
    return packet
