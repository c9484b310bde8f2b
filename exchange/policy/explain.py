"""Plain-English texts for practitioners: the rules, the purposes, a starting packet file, a verdict.

Pure text builders (no I/O): the CLI prints what they return.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from exchange.domain import iso
from exchange.errors import InvalidRequest, Violation
from exchange.policy import vocabulary as v
from exchange.policy.catalogue import Catalogue, Purpose
from exchange.policy.decision import Decision
from exchange.policy.requests import REQUEST_RULES, SERVICE_REQUEST_RULES
from exchange.policy.rules import RULES, SERVICE_RULES

# --------------------------------------------------------------------------- rules


def rules_as_json() -> list[dict[str, str]]:
    """Every rule id with its sentence and source; ``checked_by`` says where it is enforced."""
    out = [{"id": r.id, "sentence": r.sentence, "source": r.source, "checked_by": "policy"} for r in RULES]
    out += [{"id": r.id, "sentence": r.sentence, "source": r.source, "checked_by": "service"} for r in SERVICE_RULES]
    # Requests, declines and decisions not to share (exchange.policy.requests).
    out += [{"id": r.id, "sentence": r.sentence, "source": r.source, "checked_by": "policy"} for r in REQUEST_RULES]
    out += [
        {"id": r.id, "sentence": r.sentence, "source": r.source, "checked_by": "service"} for r in SERVICE_REQUEST_RULES
    ]
    return out


def render_rules(json_output: bool = False) -> str:
    """The text of ``exchange rules``: every rule id, its sentence and its source in the guidance."""
    rules = rules_as_json()
    if json_output:
        return json.dumps({"rules": rules}, indent=2)
    lines = [
        f"The exchange's {len(rules)} sharing rules. A refused packet cites the id of each rule it breaks.",
        "",
    ]
    for rule in rules:
        lines.append(rule["id"])
        lines.append(f"    {rule['sentence']}")
        lines.append(f"    Source: {rule['source']}")
        if rule["checked_by"] == "service":
            lines.append("    (Checked by the exchange server, which verifies signatures and knows the directory.)")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- purposes


def _deadlines_json(purpose: Purpose) -> dict[str, Any]:
    return {
        urgency: {
            "ack": d.ack.as_json(),
            "action": d.action.as_json(),
            "approval": d.approval.as_json(),
            "query": d.query.as_json(),
        }
        for urgency, d in purpose.deadlines.items()
    }


def purpose_as_json(purpose: Purpose) -> dict[str, Any]:
    return {
        "code": purpose.code,
        "title": purpose.title,
        "description": purpose.description,
        "kinds": list(purpose.kinds),
        "senders": sorted(purpose.senders),
        "recipients": sorted(purpose.recipients),
        "required_fields": list(purpose.required_fields),
        "allowed_fields": list(purpose.allowed_fields),
        "identifying_fields": list(purpose.identifying_fields),
        "special_category_fields": list(purpose.special_category_fields),
        "judgement_fields": list(purpose.judgement_fields),
        "default_urgency": purpose.default_urgency,
        "allowed_urgencies": list(purpose.allowed_urgencies),
        "deadlines": _deadlines_json(purpose),
        "anonymous": purpose.anonymous,
        "requires_request": purpose.requires_request,
        "requires_imminent_risk": purpose.requires_imminent_risk,
    }


def _agencies(kinds: frozenset[str], catalogue: Catalogue) -> str:
    if kinds >= set(catalogue.agency_kinds):
        return "any agency"
    return ", ".join(sorted(kinds))


def render_purposes(catalogue: Catalogue, json_output: bool = False) -> str:
    """The text of ``exchange purposes``: each purpose, its fields, agencies, urgency and deadlines."""
    purposes = list(catalogue.purposes.values())
    calendar = catalogue.calendar
    if json_output:
        working_days = {
            "region": calendar.region,
            "time_zone": str(calendar.time_zone),
            "covers_until": calendar.covers_until.isoformat(),
            "bank_holidays": {day.isoformat(): title for day, title in sorted(calendar.bank_holidays.items())},
        }
        return json.dumps({"purposes": [purpose_as_json(p) for p in purposes], "working_days": working_days}, indent=2)
    lines = [
        f"{len(purposes)} purposes. Start a packet with: exchange template PURPOSE > packet.json",
        f"Working days are Monday to Friday in {calendar.time_zone}, less the bank holidays of {calendar.region}"
        f" (listed to {calendar.covers_until.isoformat()}).",
        "",
    ]
    for p in purposes:
        optional = [name for name in p.allowed_fields if name not in p.required_fields]
        lines += [
            f"{p.code} — {p.title}",
            f"    {p.description}",
            f"    kind: {', '.join(p.kinds)}; urgency: {p.default_urgency} by default"
            f" (allowed: {', '.join(p.allowed_urgencies)})",
            f"    sent by: {_agencies(p.senders, catalogue)}; received by: {_agencies(p.recipients, catalogue)}",
            f"    required fields: {', '.join(p.required_fields) or 'none'}",
            f"    other allowed fields: {', '.join(optional) or 'none'}",
            f"    identifying fields: {', '.join(p.identifying_fields) or 'none'}",
            f"    special-category fields: {', '.join(p.special_category_fields) or 'none'}",
            f"    professional judgements (labelled opinion): {', '.join(p.judgement_fields) or 'none'}",
        ]
        for urgency, d in p.deadlines.items():
            lines.append(
                f"    {urgency}: acknowledge within {d.ack.describe()}, report action within {d.action.describe()},"
                f" manager's approval (without consent) within {d.approval.describe()},"
                f" answer a query about the report within {d.query.describe()}"
            )
        flags = [
            text
            for flag, text in (
                (p.anonymous, "anonymous: nothing may identify the child or family"),
                (p.requires_request, "answers a request (in_reply_to)"),
                (p.requires_imminent_risk, "only for imminent harm"),
            )
            if flag
        ]
        if flags:
            lines.append(f"    {'; '.join(flags)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- template


def _choices(vocabulary: Mapping[str, str]) -> str:
    return "; ".join(f"{code} = {words}" for code, words in vocabulary.items())


def render_template(catalogue: Catalogue, purpose_code: str, today: date | None = None) -> dict[str, Any]:
    """A starting packet file for ``purpose_code``, with every required field and an explanation of each choice.

    Explanations are keys starting with ``_``; ``null`` marks what the practitioner must fill in.
    The loader ignores both, so the filled-in file is what ``exchange check`` and ``exchange send``
    read. Raises :class:`InvalidRequest` for an unknown purpose.
    """
    purpose = catalogue.purpose(purpose_code)
    if purpose is None:
        raise InvalidRequest(f"There is no purpose {purpose_code!r}. Choose one of: {', '.join(catalogue.purposes)}.")
    s = purpose.suggested
    as_of = today.isoformat() if today is not None else None
    without_consent = s.consent_status in v.WITHOUT_CONSENT_STATUSES
    doc: dict[str, Any] = {
        "_about": (
            f"A starting packet file for '{purpose.title}'. Fill in every null, check every choice, then run"
            " `exchange check FILE` and `exchange send FILE`. Keys starting with _ are explanations and are"
            " ignored; nothing in 'fields', 'necessity' or 'narrative' is readable by the server."
        ),
        "purpose": purpose.code,
        "_purpose": purpose.description,
        "kind": purpose.kinds[0],
        "_kind": f"For this purpose: {', '.join(purpose.kinds)}.",
        "to": [],
        "_to": (
            "Who needs this: member ids (mem_...) or agency inboxes (agency:agy_...); see `exchange members list`."
            f" This purpose can go to: {_agencies(purpose.recipients, catalogue)}. Share only with those who need it."
        ),
        "urgency": purpose.default_urgency,
        "_urgency": "; ".join(
            f"{u}: acknowledged within {purpose.deadlines[u].ack.describe()}, action reported within"
            f" {purpose.deadlines[u].action.describe()}"
            for u in purpose.allowed_urgencies
        ),
        "lawful_basis": _template_basis(catalogue, purpose),
        "consent": _template_consent(purpose),
    }
    if without_consent:
        doc["without_consent"] = {
            "reason": s.without_consent_reason,
            "_reason": (
                "The ground for sharing without consent. A manager or safeguarding lead of your agency must"
                f" approve before delivery (except imminent harm). Choices: {_choices(v.WITHOUT_CONSENT_REASONS)}."
            ),
        }
    doc["transparency"] = _template_transparency(purpose)
    doc["proportionality"] = _template_proportionality(purpose, without_consent)
    if not purpose.anonymous:
        doc["subject_identifier"] = None
        doc["_subject_identifier"] = (
            "Optional: the child's NHS number or another stable identifier. Your computer turns it into a"
            " keyed pseudonym so records about the same child can be found later; it is never sent."
        )
    if purpose.requires_request:
        doc["in_reply_to"] = None
        doc["_in_reply_to"] = "The id of the request you are answering (req_...). Share only the fields it asked for."
    doc["necessity"] = None
    doc["_necessity"] = "Why is sharing necessary for this purpose? Sealed: only the recipients read it."
    doc["narrative"] = None
    doc["_narrative"] = "Optional narrative for the recipients (sealed). Keep fact apart from opinion."
    doc["fields"] = _template_fields(catalogue, purpose, as_of)
    return doc


def _template_basis(catalogue: Catalogue, purpose: Purpose) -> dict[str, Any]:
    s = purpose.suggested
    basis: dict[str, Any] = {
        "article6": s.article6,
        "_article6": f"UK GDPR Article 6 basis. Choices: {_choices(v.ARTICLE6)}.",
    }
    if purpose.special_category_fields or s.article9 is not None:
        basis["article9"] = s.article9
        basis["_article9"] = (
            "Needed if you share any of: "
            f"{', '.join(purpose.special_category_fields) or 'no field of this purpose'}."
            f" Choices: {_choices(v.ARTICLE9)}."
        )
    basis["legal_power"] = list(s.legal_power)
    basis["_legal_power"] = "The powers or duties you rely on. Known: " + "; ".join(
        f"{code} = {citation}" for code, citation in catalogue.legal_powers.items()
    )
    return basis


def _template_consent(purpose: Purpose) -> dict[str, Any]:
    status = purpose.suggested.consent_status
    consent: dict[str, Any] = {
        "status": status,
        "_status": (
            f"{_choices(v.CONSENT_STATUSES)}. Seek consent unless that is unsafe; if it is refused or not sought,"
            " give the reason in without_consent."
        ),
    }
    if status != "obtained":
        return consent
    consent.update(
        {
            "given_by": None,
            "_given_by": f"{_choices(v.CONSENT_PARTIES)}.",
            "informed": dict.fromkeys(v.INFORMED_POINTS, False),
            "_informed": "Set each to true only if the person understood: "
            + "; ".join(v.INFORMED_POINTS.values())
            + ".",
            "subject_age_band": None,
            "_subject_age_band": (
                f"{_choices(v.AGE_BANDS)}. Under 16: a person with parental responsibility consents, unless the"
                " child is assessed as competent; 16 and over consent for themselves."
            ),
            "child_competence": None,
            "_child_competence": f"For a child under 16 who consents: {_choices(v.COMPETENCE)}.",
            "child_view": None,
            "_child_view": (
                f"When a parent consents for a child, the child's own view: {_choices(v.CHILD_VIEWS)}. A parent's"
                " consent does not override a competent child's refusal: that is sharing without consent."
            ),
            "onward_sharing": {"scope": "any"},
            "_onward_sharing": (
                f"What the consent lets the recipients pass on: {_choices(v.ONWARD_SCOPES)}"
                ' (e.g. {"scope": "agency_kinds", "agency_kinds": ["health"]}).'
            ),
        }
    )
    return consent


def _template_transparency(purpose: Purpose) -> dict[str, Any]:
    s = purpose.suggested
    transparency: dict[str, Any] = {
        "status": s.transparency_status,
        "_status": f"{_choices(v.TRANSPARENCY_STATUSES)}. Tell the person unless that would increase the risk.",
    }
    if s.transparency_status == "not_informed":
        transparency["reason"] = s.transparency_reason
        transparency["_reason"] = f"{_choices(v.TRANSPARENCY_REASONS)}."
        if s.transparency_reason == "will_inform_later":
            transparency["inform_by"] = None
            transparency["_inform_by"] = "The date (YYYY-MM-DD) by which they will be told."
    return transparency


def _template_proportionality(purpose: Purpose, without_consent: bool) -> dict[str, Any]:
    s = purpose.suggested
    answers: dict[str, Any] = {
        "risk_level": s.risk_level,
        "_risk_level": f"How at risk is the child? {_choices(v.RISK_LEVELS)}.",
        "imminent": s.imminent,
        "_imminent": "Is the risk imminent? If so, urgency must be immediate.",
        "expected_benefit": s.expected_benefit,
        "_expected_benefit": f"How much safer or better off will the child be? {_choices(v.EXPECTED_BENEFITS)}.",
    }
    if without_consent:
        answers["could_wait"] = None
        answers["_could_wait"] = "Could this wait until the family agree? If true, sharing without consent is refused."
        answers["relationship_impact_considered"] = None
        answers["_relationship_impact_considered"] = (
            "Have you weighed the damage to your relationship with the family? Must be true to share without consent."
        )
    return answers


def _template_fields(catalogue: Catalogue, purpose: Purpose, as_of: str | None) -> dict[str, Any]:
    optional = [name for name in purpose.allowed_fields if name not in purpose.required_fields]
    fields: dict[str, Any] = {
        "_fields": (
            "Each field: its value; label fact_observed, fact_reported (add source: who reported it, by role) or"
            " opinion (add author_role); currency current or historical; as_of date. You may also add: "
            + ", ".join(optional)
            + ". Add only what the purpose needs."
        )
    }
    for name in purpose.required_fields:
        definition = catalogue.fields[name]
        entry: dict[str, Any] = {"_explain": f"Required. {definition.meaning}"}
        if definition.is_attachment:
            entry.update({"file": None, "media_type": None})
        else:
            entry["value"] = None
        if definition.is_judgement:
            # label.judgement_as_fact: a judgement is only ever an opinion, so the label is not a choice.
            entry["_explain"] += " A professional judgement: always an opinion, with the role of whoever made it."
            entry.update({"label": "opinion", "author_role": None})
        else:
            entry["label"] = None
        entry.update({"currency": "current", "as_of": as_of})
        fields[name] = entry
    return fields


def template_explanations(template: Mapping[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """The template's ``_`` explanations as ``{"path", "text"}`` (JSON Pointer of what each explains)."""
    out: list[dict[str, str]] = []
    for key, item in template.items():
        if key.startswith("_") and isinstance(item, str):
            # "_x" explains its sibling "x"; any other "_..." key explains the object it sits in.
            target = key[1:]
            out.append({"path": f"{prefix}/{target}" if target in template else prefix, "text": item})
        elif isinstance(item, Mapping):
            out.extend(template_explanations(item, f"{prefix}/{key}"))
    return out


# --------------------------------------------------------------------------- verdicts


def _where(path: str) -> str:
    return " > ".join(part.replace("~1", "/").replace("~0", "~") for part in path.split("/") if part) or "the packet"


def render_violations(violations: Sequence[Violation]) -> str:
    """Every broken rule in words a practitioner understands: what to fix, where, and why."""
    if not violations:
        return "No sharing rule is broken.\n"
    count = len(violations)
    lines = [f"The packet breaks {count} sharing {'rule' if count == 1 else 'rules'}; nothing was sent:", ""]
    for number, violation in enumerate(violations, start=1):
        lines.append(f"{number}. {violation.message}")
        lines.append(f"   where: {_where(violation.path)}   rule: {violation.rule}")
        if violation.source:
            lines.append(f"   from: {violation.source}")
    return "\n".join(lines) + "\n"


def _deadline_lines(decision: Decision) -> Iterable[str]:
    moments: tuple[tuple[str, datetime | None], ...] = (
        ("a manager's approval due by", decision.approval_due_by),
        ("acknowledgement due by", decision.ack_due_by),
        ("action report due by", decision.action_due_by),
    )
    for words, moment in moments:
        if moment is not None:
            yield f"  If sent now: {words} {iso(moment)}."


def render_decision(decision: Decision, json_output: bool = False) -> str:
    """The text of ``exchange check``: the verdict, every violation, and what happens next."""
    if json_output:
        return json.dumps({"passed": decision.accepted, **decision.as_json()}, indent=2)
    if decision.violations:
        text = render_violations(decision.violations).replace("; nothing was sent:", ":", 1)
    else:
        text = "Passed: the packet meets every sharing rule that can be checked here.\n"
        text += "".join(f"{line}\n" for line in _deadline_lines(decision))
    if decision.notes:
        text += "\nNotes:\n" + "".join(f"  - {note}\n" for note in decision.notes)
    return text
