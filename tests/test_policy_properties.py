"""Properties: whatever a manifest says, an accepted one satisfies the sharing invariants."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import SchemaViolation
from exchange.policy import RULES_BY_ID, Decision, SharingContext, evaluate
from exchange.policy import vocabulary as v
from tests.factories import (
    CATALOGUE,
    PSEUDONYM,
    REMOVE,
    consultation_manifest,
    field,
    imminent_harm_manifest,
    make_context,
    make_manifest,
    response_manifest,
    without_consent_manifest,
)

BASES: list[Callable[[], dict[str, Any]]] = [
    make_manifest,
    without_consent_manifest,
    consultation_manifest,
    imminent_harm_manifest,
    response_manifest,
]

ROLES = [*CATALOGUE.source_roles, "jane_smith", REMOVE]


def _codes(vocabulary: Any, *wrong: str) -> st.SearchStrategy[Any]:
    return st.sampled_from([*sorted(vocabulary), *wrong, REMOVE])


# One change to a manifest: a path into it and the value to put there (REMOVE deletes).
SECTION_CHANGES = st.one_of(
    st.tuples(st.just(("purpose",)), st.sampled_from([*CATALOGUE.purposes, "bogus"])),
    st.tuples(st.just(("kind",)), _codes(v.KINDS, "letter")),
    st.tuples(st.just(("urgency",)), _codes(v.URGENCIES, "whenever")),
    st.tuples(st.just(("lawful_basis", "article6")), _codes(v.ARTICLE6, "contract")),
    st.tuples(st.just(("lawful_basis", "article9")), _codes(v.ARTICLE9, "because")),
    st.tuples(st.just(("lawful_basis", "legal_power")), st.sampled_from([[], ["children_act_1989_s47"], ["made_up"]])),
    st.tuples(st.just(("consent", "status")), _codes(v.CONSENT_STATUSES, "maybe")),
    st.tuples(st.just(("consent", "given_by")), _codes(v.CONSENT_PARTIES)),
    st.tuples(st.just(("consent", "refused_by")), _codes(v.CONSENT_PARTIES)),
    st.tuples(st.just(("consent", "subject_age_band")), _codes(v.AGE_BANDS)),
    st.tuples(st.just(("consent", "child_competence")), _codes(v.COMPETENCE)),
    st.tuples(st.just(("consent", "child_view")), _codes(v.CHILD_VIEWS, "sulking")),
    st.tuples(st.just(("consent", "informed", "why_told")), st.sampled_from([True, False, REMOVE])),
    st.tuples(
        st.just(("without_consent",)),
        st.sampled_from([REMOVE, {}, *({"reason": r} for r in v.WITHOUT_CONSENT_REASONS)]),
    ),
    st.tuples(st.just(("transparency", "status")), _codes(v.TRANSPARENCY_STATUSES)),
    st.tuples(st.just(("transparency", "reason")), _codes(v.TRANSPARENCY_REASONS)),
    st.tuples(st.just(("proportionality", "risk_level")), _codes(v.RISK_LEVELS)),
    st.tuples(st.just(("proportionality", "imminent")), st.sampled_from([True, False, REMOVE])),
    st.tuples(st.just(("proportionality", "could_wait")), st.sampled_from([True, False, REMOVE])),
    st.tuples(st.just(("subject",)), st.sampled_from([REMOVE, {"pseudonym": PSEUDONYM}])),
)
FIELD_CHANGES = st.one_of(
    st.tuples(st.just("label"), _codes(v.LABELS, "gossip")),
    st.tuples(st.just("source"), st.sampled_from(ROLES)),
    st.tuples(st.just("author_role"), st.sampled_from(ROLES)),
    st.tuples(st.just("currency"), _codes(v.CURRENCIES)),
    st.tuples(st.just("as_of"), st.sampled_from(["2026-11-20", "2031-01-01", REMOVE])),
)


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = document
    for key in path[:-1]:
        target = target.setdefault(key, {})
    if value is REMOVE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = copy.deepcopy(value)


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid manifest, then a few random changes: to sections, to field labels, to the field list."""
    base: Callable[[], dict[str, Any]] = draw(st.sampled_from(BASES))
    manifest = base()
    for path, value in draw(st.lists(SECTION_CHANGES, max_size=3)):
        _set(manifest, path, value)
    for _ in range(draw(st.integers(0, 2))):
        fields = manifest["fields"]
        action = draw(st.sampled_from(["drop", "add", "label"]))
        if action == "drop" and len(fields) > 1:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif action == "add":
            fields.append(field(draw(st.sampled_from(sorted(CATALOGUE.fields)))))
        else:
            key, value = draw(FIELD_CHANGES)
            _set(fields[draw(st.integers(0, len(fields) - 1))], (key,), value)
    return manifest


contexts = st.builds(
    lambda stage, approval, requested: make_context(
        stage=stage, approval_attached=approval, requested_fields=requested
    ),
    st.sampled_from(["submission", "delivery"]),
    st.booleans(),
    st.sampled_from([None, frozenset({"child_name"})]),
)


def judge(manifest: dict[str, Any], context: SharingContext) -> Decision | None:
    """The decision, or None when the manifest is malformed (refused before any rule runs)."""
    try:
        return evaluate(manifest, context, CATALOGUE)
    except SchemaViolation:
        return None


def _assert_invariants(manifest: dict[str, Any], context: SharingContext, decision: Decision) -> None:
    purpose = CATALOGUE.purposes[manifest["purpose"]]
    names = [entry["name"] for entry in manifest["fields"]]
    # Minimum necessary: only allowed fields, each once, and all the required ones.
    assert set(names) <= set(purpose.allowed_fields) and len(names) == len(set(names))
    assert set(purpose.required_fields) <= set(names)
    # Accuracy: every field labelled, reported facts sourced, opinions attributed, dated.
    for entry in manifest["fields"]:
        assert entry.get("label") in v.LABELS
        assert entry.get("currency") in v.CURRENCIES and "as_of" in entry
        if entry["label"] == "fact_reported":
            assert entry.get("source") in CATALOGUE.source_roles
        if entry["label"] == "opinion":
            assert entry.get("author_role") in CATALOGUE.professional_roles
        # A professional judgement is never presented as a fact.
        if CATALOGUE.fields[entry["name"]].is_judgement:
            assert entry["label"] == "opinion"
    # A lawful basis, with an Article 9 condition whenever special-category data is shared.
    assert manifest["lawful_basis"].get("article6") in v.ARTICLE6
    if any(CATALOGUE.fields[name].special_category for name in names):
        assert manifest["lawful_basis"].get("article9") in v.ARTICLE9
    # Without consent: a recognised ground, and an approval or the approval queue.
    status = manifest["consent"]["status"]
    assert status in v.CONSENT_STATUSES
    if status in v.WITHOUT_CONSENT_STATUSES:
        assert manifest["without_consent"]["reason"] in v.WITHOUT_CONSENT_REASONS
        assert context.approval_attached or decision.needs_approval
        if context.stage == "delivery":
            assert context.approval_attached or decision.deliver_before_approval
        if decision.deliver_before_approval:
            assert manifest["urgency"] == "immediate" and manifest["proportionality"]["imminent"] is True
    else:
        assert not decision.needs_approval
    # A competent child's refusal is never overridden by a parent's consent.
    if status == "obtained" and manifest["consent"].get("child_competence") == "competent":
        assert manifest["consent"].get("child_view") != "refused"
    # Anonymous consultation: nothing identifying, no subject reference.
    if purpose.anonymous or manifest["kind"] == "consultation":
        assert not any(CATALOGUE.fields[name].identifying for name in names)
        assert "subject" not in manifest


@settings(max_examples=300, deadline=None)
@given(manifest=manifests(), context=contexts)
def test_accepted_manifests_satisfy_the_invariants(manifest: dict[str, Any], context: SharingContext) -> None:
    """Any manifest the rules accept shares only allowed, labelled fields on a basis, with approval when needed."""
    decision = judge(manifest, context)
    if decision is not None and decision.accepted:
        _assert_invariants(manifest, context, decision)


@settings(max_examples=300, deadline=None)
@given(manifest=manifests(), context=contexts)
def test_every_violation_names_a_known_rule_and_a_place(manifest: dict[str, Any], context: SharingContext) -> None:
    """Rejections only cite registered rules, with a JSON Pointer, a sentence and the rule's source."""
    decision = judge(manifest, context)
    if decision is None:
        return
    for violation in decision.violations:
        assert violation.rule in RULES_BY_ID
        assert violation.path.startswith("/")
        assert violation.message and violation.source == RULES_BY_ID[violation.rule].source
    assert decision.accepted == (decision.outcome != "rejected")


def test_the_generator_reaches_both_verdicts() -> None:
    """The strategy produces both accepted and refused manifests, so the invariant test is not vacuous."""
    outcomes: set[bool | None] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(manifest=manifests(), context=contexts)
    def collect(manifest: dict[str, Any], context: SharingContext) -> None:
        decision = judge(manifest, context)
        outcomes.add(decision.accepted if decision is not None else None)

    collect()
    assert outcomes >= {True, False}


JUDGEMENTS = sorted(name for name, definition in CATALOGUE.fields.items() if definition.is_judgement)


def _with_field(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` carrying ``entry`` in place of any field of the same name (or added at the end)."""
    fields = [f for f in manifest["fields"] if f["name"] != entry["name"]]
    manifest["fields"] = [*fields, entry]
    return manifest


def _cited(decision: Decision | None, rule: str) -> bool:
    assert decision is not None
    return any(violation.rule == rule for violation in decision.violations)


def test_the_catalogue_marks_judgements() -> None:
    """The category of concern and the professional assessment are judgements; names and dates are not."""
    assert {"concern_category", "professional_assessment"} <= set(JUDGEMENTS)
    assert not {"child_name", "child_date_of_birth", "concern_description", "injuries_observed"} & set(JUDGEMENTS)


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(BASES),
    name=st.sampled_from(JUDGEMENTS),
    label=st.sampled_from(sorted(v.FACT_LABELS)),
    source=st.sampled_from(sorted(CATALOGUE.source_roles)),
)
def test_a_judgement_labelled_as_a_fact_is_refused(
    base: Callable[[], dict[str, Any]], name: str, label: str, source: str
) -> None:
    """Whatever the packet and whoever is named, a judgement-natured field labelled as any fact is refused."""
    manifest = _with_field(base(), field(name, label, source=source))
    decision = judge(manifest, make_context())
    assert decision is not None and not decision.accepted
    assert _cited(decision, "label.judgement_as_fact")


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(BASES),
    name=st.sampled_from(JUDGEMENTS),
    author_role=st.sampled_from(sorted(CATALOGUE.professional_roles)),
)
def test_a_judgement_labelled_as_an_attributed_opinion_is_accepted(
    base: Callable[[], dict[str, Any]], name: str, author_role: str
) -> None:
    """A judgement-natured field labelled opinion, with any professional author role, breaks no labelling rule."""
    manifest = _with_field(base(), field(name, "opinion", author_role=author_role))
    decision = judge(manifest, make_context())
    assert not _cited(decision, "label.judgement_as_fact")
    assert not _cited(decision, "label.author_role_missing")


@settings(max_examples=200, deadline=None)
@given(
    age_band=st.sampled_from([*sorted(v.AGE_BANDS), REMOVE]),
    given_by=st.sampled_from([*sorted(v.CONSENT_PARTIES), REMOVE]),
    context=contexts,
)
def test_consent_obtained_over_a_competent_childs_refusal_is_always_refused(
    age_band: Any, given_by: Any, context: SharingContext
) -> None:
    """Whoever is recorded as consenting, at any age and any stage, a competent child's refusal makes it refused."""
    manifest = make_manifest(
        consent__subject_age_band=age_band,
        consent__given_by=given_by,
        consent__child_competence="competent",
        consent__child_view="refused",
    )
    decision = judge(manifest, context)
    assert decision is not None and not decision.accepted
    assert _cited(decision, "consent.competent_child_refusal_overrides_parent")


@settings(max_examples=100, deadline=None)
@given(view=st.sampled_from(["refused", REMOVE]), context=contexts)
def test_a_competent_childs_refusal_can_be_shared_over_only_without_consent(view: Any, context: SharingContext) -> None:
    """Recorded as refused by the child, on the ground that the refusal puts them at risk, it goes to a manager."""
    manifest = without_consent_manifest(
        consent={
            "status": "refused",
            "refused_by": "subject",
            "subject_age_band": "age_13_to_15",
            "child_competence": "competent",
        },
        consent__child_view=view,
        without_consent__reason="competent_child_refusal_at_risk",
    )
    decision = judge(manifest, context)
    assert decision is not None
    rules = {violation.rule for violation in decision.violations}
    if context.approval_attached:
        assert decision.outcome == "deliver" and not rules
    elif context.stage == "submission":
        assert decision.outcome == "awaiting_approval" and not rules
    else:
        assert decision.outcome == "rejected" and rules == {"without_consent.approval_missing"}
