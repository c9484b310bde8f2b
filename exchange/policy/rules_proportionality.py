"""Rules about openness, proportionality and timeliness."""

from __future__ import annotations

from collections.abc import Iterator

from exchange.policy import sources as src
from exchange.policy import vocabulary as v
from exchange.policy.facts import Facts, Finding, Rule


def _transparency_status_unknown(f: Facts) -> Iterator[Finding]:
    if f.record.transparency.status not in v.TRANSPARENCY_STATUSES:
        yield Finding(
            "/transparency/status",
            f"Say whether the person has been told about this sharing: {v.one_of(v.TRANSPARENCY_STATUSES)}.",
        )


def _transparency_reason_missing(f: Facts) -> Iterator[Finding]:
    transparency = f.record.transparency
    if transparency.status == "not_informed" and transparency.reason not in v.TRANSPARENCY_REASONS:
        yield Finding(
            "/transparency/reason",
            f"Say why the person has not been told: {v.one_of(v.TRANSPARENCY_REASONS)}.",
        )


def _inform_by_missing(f: Facts) -> Iterator[Finding]:
    transparency = f.record.transparency
    if (
        transparency.status == "not_informed"
        and transparency.reason == "will_inform_later"
        and transparency.inform_by is None
    ):
        yield Finding("/transparency/inform_by", "Give the date by which the person will be told (inform_by).")


def _not_applicable_but_identifying(f: Facts) -> Iterator[Finding]:
    if f.record.transparency.status == "not_applicable" and f.identifies_someone:
        yield Finding(
            "/transparency/status",
            "Telling the person is 'not applicable' only when nothing shared identifies anyone; this packet"
            " does. Record whether they were told, or why not.",
        )


def _risk_level_unknown(f: Facts) -> Iterator[Finding]:
    if f.record.proportionality.risk_level not in v.RISK_LEVELS:
        yield Finding("/proportionality/risk_level", f"Say how at risk the child is: {v.one_of(v.RISK_LEVELS)}.")


def _incomplete(f: Facts) -> Iterator[Finding]:
    answers = f.record.proportionality
    if answers.imminent is None:
        yield Finding("/proportionality/imminent", "Answer: is the risk imminent (true or false)?")
    if answers.expected_benefit not in v.EXPECTED_BENEFITS:
        yield Finding(
            "/proportionality/expected_benefit",
            f"Say what sharing will achieve: {v.one_of(v.EXPECTED_BENEFITS)}.",
        )
    if f.record.shares_without_consent:
        if answers.could_wait is None:
            yield Finding(
                "/proportionality/could_wait",
                "Answer: could this wait until the family agree (true or false)?",
            )
        if answers.relationship_impact_considered is None:
            yield Finding(
                "/proportionality/relationship_impact_considered",
                "Answer: have you considered the effect on your relationship with the family (true or false)?",
            )


def _relationship_impact(f: Facts) -> Iterator[Finding]:
    if f.record.shares_without_consent and f.record.proportionality.relationship_impact_considered is False:
        yield Finding(
            "/proportionality/relationship_impact_considered",
            "Before sharing against the family's wishes, consider how it will affect your relationship with them.",
        )


def _imminent_could_wait(f: Facts) -> Iterator[Finding]:
    answers = f.record.proportionality
    if answers.imminent is True and answers.could_wait is True:
        yield Finding(
            "/proportionality/could_wait",
            "The risk is recorded as imminent but the sharing as able to wait; both cannot be true.",
        )


def _urgency_unknown(f: Facts) -> Iterator[Finding]:
    if f.record.urgency not in v.URGENCIES:
        yield Finding("/urgency", f"Give the urgency: {v.one_of(v.URGENCIES)}.")


def _urgency_not_allowed(f: Facts) -> Iterator[Finding]:
    urgency = f.record.urgency
    if f.purpose is not None and urgency in v.URGENCIES and urgency not in f.purpose.allowed_urgencies:
        yield Finding(
            "/urgency",
            f"'{f.purpose.title}' can be {v.one_of(f.purpose.allowed_urgencies)}, not {urgency}.",
        )


def _imminent_not_immediate(f: Facts) -> Iterator[Finding]:
    urgency = f.record.urgency
    if f.record.proportionality.imminent is True and urgency in v.URGENCIES and urgency != "immediate":
        yield Finding(
            "/urgency",
            "The risk is recorded as imminent: notify at once (urgency immediate), not when convenient.",
        )


RULES: tuple[Rule, ...] = (
    Rule(
        "transparency.status_unknown",
        "Every packet records whether the person was told about the sharing.",
        src.OPEN_AND_HONEST,
        _transparency_status_unknown,
    ),
    Rule(
        "transparency.reason_missing",
        "When the person was not told, the packet records why: it would increase risk, prejudice an investigation, "
        "is not possible, or will happen later.",
        src.both(
            src.OPEN_AND_HONEST,
            src.key_points(
                "'The only time that you should not do this is, if letting them know, will leave someone at risk'"
            ),
        ),
        _transparency_reason_missing,
    ),
    Rule(
        "transparency.inform_by_missing",
        "Telling the person later comes with the date by which they will be told.",
        src.OPEN_AND_HONEST,
        _inform_by_missing,
    ),
    Rule(
        "transparency.not_applicable_but_identifying",
        "Telling the person is 'not applicable' only when nothing shared identifies anyone.",
        src.OPEN_AND_HONEST,
        _not_applicable_but_identifying,
    ),
    Rule(
        "proportionality.risk_level_unknown",
        "Every packet says how at risk the child is.",
        src.PROPORTIONALITY,
        _risk_level_unknown,
    ),
    Rule(
        "proportionality.incomplete",
        "The proportionality questions are answered: is the risk imminent, what will sharing achieve, and, without "
        "consent, "
        "could it wait and was the effect on the relationship with the family considered.",
        src.PROPORTIONALITY,
        _incomplete,
    ),
    Rule(
        "proportionality.relationship_impact_not_considered",
        "Sharing against the family's wishes weighs the damage to the relationship with them first.",
        src.PROPORTIONALITY,
        _relationship_impact,
    ),
    Rule(
        "proportionality.imminent_could_wait",
        "A risk cannot be both imminent and able to wait.",
        src.PROPORTIONALITY,
        _imminent_could_wait,
    ),
    Rule("urgency.unknown", "Every packet is routine, urgent or immediate.", src.NECESSARY, _urgency_unknown),
    Rule(
        "urgency.not_allowed_for_purpose",
        "The urgency is one the purpose allows (a notification of imminent harm is always immediate).",
        src.both(src.NECESSARY, src.design("§4 Timeliness")),
        _urgency_not_allowed,
    ),
    Rule(
        "urgency.imminent_not_immediate",
        "Imminent harm is notified at once: a packet recording imminent risk is immediate.",
        src.IMMINENT_HARM,
        _imminent_not_immediate,
    ),
)
