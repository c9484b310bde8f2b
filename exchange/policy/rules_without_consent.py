"""Rules about sharing without consent: a recognised ground, a threshold, and a manager's approval."""

from __future__ import annotations

from collections.abc import Iterator

from exchange.policy import sources as src
from exchange.policy import vocabulary as v
from exchange.policy.facts import Facts, Finding, Rule


def _reason_missing(f: Facts) -> Iterator[Finding]:
    if f.record.shares_without_consent and f.record.without_consent_reason is None:
        yield Finding(
            "/without_consent/reason",
            "Consent was refused or not sought: give the reason for sharing without it"
            f" ({v.one_of(v.WITHOUT_CONSENT_REASONS)}).",
        )


def _reason_unknown(f: Facts) -> Iterator[Finding]:
    reason = f.record.without_consent_reason
    if reason is not None and reason not in v.WITHOUT_CONSENT_REASONS:
        yield Finding(
            "/without_consent/reason",
            "Information is shared without consent only on one of these grounds: "
            f"{v.one_of(v.WITHOUT_CONSENT_REASONS)}.",
        )


def _without_consent_not_applicable(f: Facts) -> Iterator[Finding]:
    status = f.record.consent.status
    if f.record.has_without_consent and status in ("obtained", "not_required"):
        yield Finding(
            "/without_consent",
            f"Consent is recorded as {status}, so nothing is shared without consent: remove this section,"
            " or correct the consent status.",
        )


def _below_threshold(f: Facts) -> Iterator[Finding]:
    reason = f.record.without_consent_reason
    level = f.record.proportionality.risk_level
    if not f.record.shares_without_consent or reason is None:
        return
    if reason in v.HARM_REASONS and level not in v.HARM_LEVELS:
        yield Finding(
            "/proportionality/risk_level",
            f"The ground '{reason}' needs a risk of significant harm. Where the risk is lower, consent must be"
            " sought and respected.",
        )
    elif reason in v.PICTURE_REASONS and level not in v.PICTURE_LEVELS:
        yield Finding(
            "/proportionality/risk_level",
            "Building a picture of risk without consent needs at least possible significant harm.",
        )


def _reason_contradicts_consent(f: Facts) -> Iterator[Finding]:
    reason = f.record.without_consent_reason
    consent = f.record.consent
    if not f.record.shares_without_consent:
        return
    if reason == "competent_child_refusal_at_risk":
        if consent.status != "refused" or consent.refused_by not in ("subject", "subject_and_parent_carer"):
            yield Finding("/consent/refused_by", "This ground applies only when the child themselves refused consent.")
        if consent.child_competence != "competent":
            yield Finding(
                "/consent/child_competence",
                "This ground applies only to a child assessed as competent (Gillick/Fraser); record the assessment.",
            )
    elif reason == "seeking_consent_increases_risk" and consent.status != "not_sought":
        yield Finding(
            "/consent/status",
            "The ground is that seeking consent would increase the risk, but consent was sought.",
        )


def _could_wait(f: Facts) -> Iterator[Finding]:
    reason = f.record.without_consent_reason
    if (
        f.record.shares_without_consent
        and f.record.proportionality.could_wait is True
        and reason not in v.WAIT_EXEMPT_REASONS
    ):
        yield Finding(
            "/proportionality/could_wait",
            "You recorded that sharing could wait. Without consent, share only what cannot wait: wait for"
            " the family's agreement, or record why it cannot wait.",
        )


def _approval_missing(f: Facts) -> Iterator[Finding]:
    if (
        f.context.stage == "delivery"
        and f.record.shares_without_consent
        and not f.context.approval_attached
        and not f.imminent_harm
    ):
        yield Finding(
            "/without_consent",
            "This packet shares without consent and has no approval from a manager or safeguarding lead of"
            " your agency; it cannot be delivered until one approves it.",
        )


RULES: tuple[Rule, ...] = (
    Rule(
        "without_consent.reason_missing",
        "Sharing when consent was refused or not sought gives one of the recognised grounds.",
        src.WITHOUT_CONSENT_GROUNDS,
        _reason_missing,
    ),
    Rule(
        "without_consent.reason_unknown",
        "The ground for sharing without consent is one of: legal obligation, statutory requirement, risk of "
        "significant harm, "
        "seeking consent would increase risk, building a picture of risk, a competent child's refusal placing them "
        "at risk, "
        "serious crime.",
        src.WITHOUT_CONSENT_GROUNDS,
        _reason_unknown,
    ),
    Rule(
        "without_consent.not_applicable",
        "A without-consent section appears only when consent was refused or not sought.",
        src.RECORD,
        _without_consent_not_applicable,
    ),
    Rule(
        "without_consent.below_threshold",
        "Grounds that rest on harm need a risk of significant harm (possible significant harm to build a picture of "
        "risk).",
        src.both(src.WITHOUT_CONSENT_GROUNDS, src.golden_rule(5, "consider safety and well-being")),
        _below_threshold,
    ),
    Rule(
        "without_consent.reason_contradicts_consent",
        "The ground agrees with the consent record: a competent child's refusal needs the child's own refusal and a "
        "competence "
        "assessment; 'seeking consent would increase risk' means consent was not sought.",
        src.WITHOUT_CONSENT_GROUNDS,
        _reason_contradicts_consent,
    ),
    Rule(
        "without_consent.could_wait",
        "Sharing without consent when it could wait is refused (legal and statutory duties excepted).",
        src.both(src.PROPORTIONALITY, src.RESPECT_WISHES),
        _could_wait,
    ),
    Rule(
        "without_consent.approval_missing",
        "Sharing without consent needs the approval of a manager or safeguarding lead of the sender's agency before "
        "delivery. On submission without it, the packet waits for approval (it is not refused); at delivery a missing "
        "approval is refused, except for imminent harm (immediate urgency and imminent risk), which is delivered at "
        "once "
        "with the approval owed by the purpose's approval deadline.",
        src.MANAGER_APPROVAL,
        _approval_missing,
    ),
)
