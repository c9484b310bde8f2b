"""The request rules (exchange.policy.requests): pure, each with an id, a sentence and a source."""

from __future__ import annotations

from typing import Any

import pytest

from exchange.policy.requests import (
    ALL_REQUEST_RULES,
    REASONS,
    RequestParties,
    RequestRefused,
    check_decision,
    check_decline,
    check_reply,
    check_request,
    request_template,
)
from tests.factories import CATALOGUE, CSC_MEMBER, NOW, POLICE_MEMBER

POLICE_ASKS_CSC = RequestParties(requester_agency_kind="police", holder_agency_kind="children_social_care")


def police_request(**changes: Any) -> dict[str, Any]:
    """The police ask children's social care for a household's details, for an investigation."""
    request: dict[str, Any] = {
        "purpose": "police_investigation",
        "urgency": "urgent",
        "lawful_basis": {"article6": "public_task", "legal_power": ["crime_and_disorder_act_1998_s115"]},
        "fields": ["child_address", "household_members"],
    }
    return request | changes


def rules_of(violations: Any) -> list[str]:
    return [v.rule for v in violations]


def test_a_proportionate_request_breaks_no_rule() -> None:
    """Fields the purpose allows, a known basis, the right agency kinds: nothing to report."""
    assert check_request(police_request(), POLICE_ASKS_CSC, CATALOGUE, NOW) == []


@pytest.mark.parametrize(
    ("changes", "parties", "rule", "path"),
    [
        (
            {"fields": ["child_address", "school_attendance"]},
            POLICE_ASKS_CSC,
            "request.field_not_allowed",
            "/fields/1",
        ),
        ({"fields": ["favourite_colour"]}, POLICE_ASKS_CSC, "field.unknown", "/fields/0"),
        ({"purpose": "gossip"}, POLICE_ASKS_CSC, "purpose.unknown", "/purpose"),
        ({"urgency": "whenever"}, POLICE_ASKS_CSC, "request.urgency_not_allowed", "/urgency"),
        (
            {"lawful_basis": {"article6": "because"}},
            POLICE_ASKS_CSC,
            "basis.article6_unknown",
            "/lawful_basis/article6",
        ),
        ({"lawful_basis": {"article6": "public_task"}}, POLICE_ASKS_CSC, "basis.legal_power_missing", None),
        (
            {"fields": ["health_conditions"]},
            POLICE_ASKS_CSC,
            "basis.special_category_condition_missing",
            "/lawful_basis/article9",
        ),
        (
            {"purpose": "anonymous_consultation", "urgency": "routine"},
            POLICE_ASKS_CSC,
            "request.purpose_not_requestable",
            None,
        ),
        ({}, RequestParties("education", "children_social_care"), "request.requester_kind_not_allowed", "/purpose"),
        (
            {"purpose": "health_assessment_request", "fields": ["child_name"]},
            RequestParties("health", "health"),
            "request.holder_kind_not_allowed",
            "/holder/agency",
        ),
        (
            {},
            RequestParties("police", "children_social_care", holder_send_purposes=frozenset()),
            "request.directory_purpose_not_permitted",
            "/holder/agency",
        ),
    ],
)
def test_each_request_rule_names_itself_and_where(
    changes: dict[str, Any], parties: RequestParties, rule: str, path: str | None
) -> None:
    """A request breaking one rule is reported under that rule's id, at the path to fix, with its source."""
    violations = check_request(police_request(**changes), parties, CATALOGUE, NOW)
    found = [v for v in violations if v.rule == rule]
    assert found, rules_of(violations)
    assert all(v.source and v.message for v in violations)
    if path is not None:
        assert found[0].path == path


def test_an_answer_goes_to_the_requester_for_the_requests_purpose() -> None:
    """Copied to someone else, or for another purpose, an answer breaks the reply rules."""
    answer = {"purpose": "strategy_discussion", "recipients": [{"member": POLICE_MEMBER}, {"member": CSC_MEMBER}]}
    assert rules_of(check_reply(answer, POLICE_MEMBER, "police_investigation")) == [
        "request.reply_not_to_requester",
        "request.reply_purpose_mismatch",
    ]
    for purpose in ("police_investigation", "response_to_information_request"):
        answer = {"purpose": purpose, "recipients": [{"member": POLICE_MEMBER}]}
        assert check_reply(answer, POLICE_MEMBER, "police_investigation") == []


def test_declines_and_decisions_give_known_reasons() -> None:
    """A reason code must come from the list; a decision also needs a known purpose and fields."""
    assert check_decline(["information_not_held"]) == []
    assert rules_of(check_decline([])) == ["decline.reason_unknown"]
    unknown = check_decline(["other", "busy"])
    assert [(v.rule, v.path) for v in unknown] == [("decline.reason_unknown", "/reason_codes/1")]
    decision = {
        "purpose": "referral_to_childrens_social_care",
        "fields_considered": ["child_name"],
        "reason_codes": ["other"],
    }
    assert check_decision(decision, CATALOGUE, NOW) == []
    bad = decision | {"fields_considered": ["child_name", "shoe_size"], "reason_codes": ["busy"]}
    assert [(v.rule, v.path) for v in check_decision(bad, CATALOGUE, NOW)] == [
        ("field.unknown", "/fields_considered/1"),
        ("decision.reason_unknown", "/reason_codes/0"),
    ]


def test_every_request_rule_cites_the_guidance_and_every_reason_has_words() -> None:
    """Each request rule's source names a seeds/ file or DESIGN.md; each reason code reads as a sentence."""
    for rule in ALL_REQUEST_RULES:
        assert "seeds/" in rule.source or "DESIGN.md" in rule.source, rule.id
        assert rule.sentence.endswith("."), rule.id
    assert all(words for words in REASONS.values()) and "other" in REASONS


def test_a_refusal_counts_the_rules_and_promises_nothing_was_sent() -> None:
    """The refusal's detail says what was not recorded and how many rules it breaks."""
    violations = check_request(police_request(fields=["school_attendance"]), POLICE_ASKS_CSC, CATALOGUE, NOW)
    refused = RequestRefused(violations)
    assert refused.status == 422 and refused.code == "policy.violation"
    assert refused.detail == "The request was not recorded: it breaks 1 rule. Nothing was sent."
    assert [v["rule"] for v in refused.extras["violations"]] == ["request.field_not_allowed"]


def test_the_request_template_names_what_to_fill_in() -> None:
    """A request template starts from the purpose's suggested basis; an unknown purpose gives None."""
    template = request_template(CATALOGUE, "police_investigation")
    assert template is not None
    assert template["from"] is None and template["fields"] == []
    assert template["lawful_basis"]["legal_power"] == ["crime_and_disorder_act_1998_s115"]
    assert request_template(CATALOGUE, "gossip") is None
