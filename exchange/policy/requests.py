"""The rules for information requests, declines and decisions not to share: pure, like the sharing rules.

A request asks a holder for fields for a purpose. The *answer* goes from the holder to the
requester, so the purpose must let the holder's agency kind send it and the requester's agency
kind receive it, and every field asked for must be one the purpose allows (the minimum
necessary, asked for as it would be shared). The lawful basis is judged by the very rules that
judge a manifest's (``basis.*``), and the purpose and fields by ``purpose.unknown`` and
``field.*``. A decline and a decision not to share give reason codes from :data:`REASONS`.

Every rule has a stable id, a sentence and its source (``exchange rules`` lists them with the
sharing rules). A refusal lists every broken rule at once (:class:`RequestRefused`, 422).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from exchange.errors import PolicyViolation, Violation
from exchange.policy import sources as src
from exchange.policy import vocabulary as v
from exchange.policy.catalogue import Catalogue, Purpose
from exchange.policy.context import SharingContext
from exchange.policy.facts import Facts, Finding, RuleText
from exchange.policy.model import record_from_manifest
from exchange.policy.rules import RULES_BY_ID

#: Why a holder declines a request, or a practitioner decides not to share (DESIGN.md §5).
REASONS: v.Vocabulary = MappingProxyType(
    {
        "no_lawful_basis": "there is no lawful basis to share this information for this purpose",
        "not_necessary_or_proportionate": "sharing it would not be necessary or proportionate to the purpose",
        "information_not_held": "we do not hold the information asked for",
        "consent_refused_and_no_override": "consent was refused and no ground to share without it applies",
        "would_increase_risk_to_child": "sharing it would increase the risk to the child",
        "request_unclear": "the request is unclear: ask again saying what is needed and why",
        "other": "another reason, explained in words",
    }
)


#: Guidance for recording a decline or a decision not to share, and its reasons.
DECLINE_SOURCE = src.both(
    src.practice_tip(9, "record the reasons for declining"),
    src.partnership("'record the reasons for this decision and discuss them with the requester'"),
)
DECISION_SOURCE = src.both(
    src.golden_rule(7, "keep a record of your decision and the reasons for it, whether to share or not"),
    src.practice_tip(8, "if you decide not to share, record the request and the reasons for not sharing"),
)


class RequestRefused(PolicyViolation):
    """The request, decline or decision breaks one or more rules; ``violations`` lists every one (422)."""

    def __init__(self, violations: Sequence[Violation], *, what: str = "request") -> None:
        super().__init__(violations)
        count = len(violations)
        self.detail = (
            f"The {what} was not recorded: it breaks {count} {'rule' if count == 1 else 'rules'}. Nothing was sent."
        )
        self.args = (self.detail,)


@dataclass(frozen=True)
class RequestParties:
    """What the request rules need from the directory: the two agencies' kinds and purpose lists."""

    requester_agency_kind: str
    holder_agency_kind: str
    #: The directory's purposes the requester's agency may receive (None: no list).
    requester_receive_purposes: frozenset[str] | None = None
    #: The directory's purposes the holder's agency may send (None: no list).
    holder_send_purposes: frozenset[str] | None = None


@dataclass(frozen=True)
class RequestFacts:
    """Everything a request rule may look at."""

    request: Mapping[str, Any]
    purpose: Purpose | None
    parties: RequestParties
    catalogue: Catalogue

    @property
    def fields(self) -> list[tuple[str, str]]:
        """``(path, name)`` of each field asked for."""
        names = self.request.get("fields")
        listed = names if isinstance(names, list) else []
        return [(f"/fields/{i}", n) for i, n in enumerate(listed) if isinstance(n, str)]


@dataclass(frozen=True)
class RequestRule(RuleText):
    """A rule over a request (or a decline or decision), with a pure check."""

    check: Callable[[RequestFacts], Iterable[Finding]] = field(repr=False, compare=False)


def _not_requestable(f: RequestFacts) -> Iterator[Finding]:
    p = f.purpose
    if p is not None and (p.anonymous or p.requires_request or p.requires_imminent_risk):
        yield Finding(
            "/purpose",
            f"'{p.title}' is not a purpose information is asked for. Name the purpose the information is needed"
            " for (for example police_investigation or strategy_discussion).",
        )


def _urgency_not_allowed(f: RequestFacts) -> Iterator[Finding]:
    urgency = f.request.get("urgency")
    if f.purpose is not None and urgency not in f.purpose.allowed_urgencies:
        yield Finding("/urgency", f"For '{f.purpose.title}' the urgency is {v.one_of(f.purpose.allowed_urgencies)}.")


def _field_not_allowed(f: RequestFacts) -> Iterator[Finding]:
    if f.purpose is None:
        return
    for path, name in f.fields:
        definition = f.catalogue.field(name)
        if definition is not None and name not in f.purpose.allowed_fields:
            yield Finding(
                path,
                f"'{definition.title}' may not be shared for '{f.purpose.title}', so it cannot be asked for."
                " Ask only for what the purpose needs.",
            )


def _requester_kind(f: RequestFacts) -> Iterator[Finding]:
    kind = f.parties.requester_agency_kind
    if f.purpose is not None and kind not in f.purpose.recipients:
        yield Finding(
            "/purpose",
            f"The answer would go to {f.catalogue.agency_kinds.get(kind, kind)}, and '{f.purpose.title}' cannot go"
            f" there. It can go to: {', '.join(sorted(f.purpose.recipients))}.",
        )


def _holder_kind(f: RequestFacts) -> Iterator[Finding]:
    kind = f.parties.holder_agency_kind
    if f.purpose is not None and kind not in f.purpose.senders:
        yield Finding(
            "/holder/agency",
            f"{f.catalogue.agency_kinds.get(kind, kind).capitalize()} cannot send '{f.purpose.title}', so it cannot"
            f" answer this request. It can be sent by: {', '.join(sorted(f.purpose.senders))}.",
        )


def _directory_purpose(f: RequestFacts) -> Iterator[Finding]:
    code = f.request.get("purpose")
    if f.purpose is None:
        return
    sends = f.parties.holder_send_purposes
    if sends is not None and code not in sends:
        yield Finding("/holder/agency", f"The directory does not let the holder's agency send '{f.purpose.title}'.")
    receives = f.parties.requester_receive_purposes
    if receives is not None and code not in receives:
        yield Finding("/purpose", f"The directory does not let your agency receive '{f.purpose.title}'.")


REQUEST_RULES: tuple[RequestRule, ...] = (
    RequestRule(
        "request.purpose_not_requestable",
        "A request names the purpose the information is needed for; an anonymous consultation, a response or a"
        " notification of imminent harm is not asked for.",
        src.both(src.LEGITIMATE_PURPOSE, src.REQUESTS),
        _not_requestable,
    ),
    RequestRule(
        "request.urgency_not_allowed",
        "A request's urgency is one its purpose allows; the answer is due by the purpose's action deadline.",
        src.both(src.REQUESTS, src.design("§5 Requests")),
        _urgency_not_allowed,
    ),
    RequestRule(
        "request.field_not_allowed",
        "A request asks only for fields its purpose allows to be shared (the minimum necessary for the purpose).",
        src.both(src.NECESSARY, src.REQUESTS),
        _field_not_allowed,
    ),
    RequestRule(
        "request.requester_kind_not_allowed",
        "The answer goes to the requester, so the requester's agency kind must be one the purpose may go to.",
        src.both(src.ONLY_THOSE_WHO_NEED_IT, src.REQUESTS),
        _requester_kind,
    ),
    RequestRule(
        "request.holder_kind_not_allowed",
        "The holder answers, so the holder's agency kind must be one that may send the purpose.",
        src.both(src.LEGITIMATE_PURPOSE, src.REQUESTS),
        _holder_kind,
    ),
    RequestRule(
        "request.directory_purpose_not_permitted",
        "Where the directory lists the purposes an agency may send or receive, the holder's agency may send and"
        " the requester's agency may receive the request's purpose.",
        src.design("§4 Purpose catalogue: 'The directory says which purposes each agency may send and receive'"),
        _directory_purpose,
    ),
)

#: Rules the service checks where it holds the facts (the stored request, the directory, signatures).
SERVICE_REQUEST_RULES: tuple[RuleText, ...] = (
    RuleText(
        "request.reply_not_to_requester",
        "A packet answering a request goes to the requester, and to nobody else.",
        src.both(src.ONLY_THOSE_WHO_NEED_IT, src.REQUESTS),
    ),
    RuleText(
        "request.reply_purpose_mismatch",
        "A packet answering a request is shared for the request's purpose, or as a response to an information"
        " request.",
        src.both(src.LEGITIMATE_PURPOSE, src.REQUESTS),
    ),
    RuleText(
        "decline.reason_unknown",
        "A decline gives at least one reason code from the exchange's list, and explains it in words sealed to"
        " the requester.",
        DECLINE_SOURCE,
    ),
    RuleText(
        "decision.reason_unknown",
        "A decision not to share gives at least one reason code from the exchange's list, and the reasons in"
        " words, sealed to its author.",
        DECISION_SOURCE,
    ),
    RuleText(
        "decision.request_not_found",
        "A decision not to share that names a request names one its author holds.",
        DECISION_SOURCE,
    ),
)

#: The sharing rules a request is judged by as well: the purpose, the fields asked for, the lawful basis.
_SHARED_FOR_REQUESTS = (
    "purpose.unknown",
    "field.unknown",
    "field.duplicate",
    "basis.article6_unknown",
    "basis.special_category_condition_missing",
    "basis.article9_unknown",
    "basis.legal_power_missing",
    "basis.legal_power_unknown",
)
_SHARED_FOR_DECISIONS = ("purpose.unknown", "field.unknown", "field.duplicate")

ALL_REQUEST_RULES: tuple[RuleText, ...] = (*REQUEST_RULES, *SERVICE_REQUEST_RULES)
_BY_ID: Mapping[str, RuleText] = {rule.id: rule for rule in ALL_REQUEST_RULES}

if len(_BY_ID) != len(ALL_REQUEST_RULES) or set(_BY_ID) & set(RULES_BY_ID):
    raise RuntimeError("two rules share an id")  # refusals would be ambiguous


def violation(rule_id: str, path: str, message: str) -> Violation:
    """A violation of the request rule ``rule_id``, citing its source."""
    return Violation(rule_id, path, message, _BY_ID[rule_id].source)


def _record(document: Mapping[str, Any], fields_key: str, now: datetime, catalogue: Catalogue) -> Facts:
    """The request (or decision) as the sharing rules read a manifest: its purpose, fields and basis.

    Read through :func:`record_from_manifest` so the rules see exactly what they see in a manifest;
    only the fields' paths are this document's own.
    """
    names = document.get(fields_key)
    as_manifest = {
        "purpose": document.get("purpose"),
        "urgency": document.get("urgency"),
        "lawful_basis": document.get("lawful_basis"),
        "fields": [{"name": n} for n in (names if isinstance(names, list) else []) if isinstance(n, str)],
    }
    record = record_from_manifest(as_manifest)
    record = replace(
        record,
        fields=tuple(replace(entry, path=f"/{fields_key}/{i}") for i, entry in enumerate(record.fields)),
        recipients_path="/holder",
    )
    context = SharingContext(now=now, sender_agency_kind=None)
    return Facts(record=record, purpose=catalogue.purpose(record.purpose), catalogue=catalogue, context=context)


def _shared(facts: Facts, rule_ids: Iterable[str]) -> list[Violation]:
    out = []
    for rule_id in rule_ids:
        rule = RULES_BY_ID[rule_id]
        out += [Violation(rule.id, f.path, f.message, rule.source) for f in rule.check(facts) if not f.advisory]
    return out


def check_request(
    request: Mapping[str, Any], parties: RequestParties, catalogue: Catalogue, now: datetime
) -> list[Violation]:
    """Every rule a schema-valid request breaks, in a stable order (empty: it may be sent)."""
    facts = _record(request, "fields", now, catalogue)
    found = _shared(facts, _SHARED_FOR_REQUESTS)
    request_facts = RequestFacts(request, facts.purpose, parties, catalogue)
    for rule in REQUEST_RULES:
        found += [violation(rule.id, f.path, f.message) for f in rule.check(request_facts)]
    return found


def check_reply(manifest: Mapping[str, Any], requester_member: str, request_purpose: str) -> list[Violation]:
    """The rules a packet answering a request must meet besides the sharing rules (which check its fields)."""
    found = []
    for i, recipient in enumerate(manifest.get("recipients") or []):
        if isinstance(recipient, Mapping) and recipient.get("member") != requester_member:
            found.append(
                violation(
                    "request.reply_not_to_requester",
                    f"/recipients/{i}/member",
                    "An answer to a request goes only to the member who asked for it.",
                )
            )
    purpose = manifest.get("purpose")
    if purpose not in (request_purpose, "response_to_information_request"):
        found.append(
            violation(
                "request.reply_purpose_mismatch",
                "/purpose",
                f"The request was made for {request_purpose}: answer for that purpose, or as"
                " response_to_information_request.",
            )
        )
    return found


def _reasons(reason_codes: Sequence[str], rule_id: str, path: str) -> list[Violation]:
    if not reason_codes:
        return [violation(rule_id, path, f"Give at least one reason: {v.one_of(REASONS)}.")]
    return [
        violation(rule_id, f"{path}/{i}", f"This is not a reason code the exchange knows; use {v.one_of(REASONS)}.")
        for i, code in enumerate(reason_codes)
        if code not in REASONS
    ]


def check_decline(reason_codes: Sequence[str]) -> list[Violation]:
    """A decline's reasons: at least one, each from :data:`REASONS`."""
    return _reasons(reason_codes, "decline.reason_unknown", "/reason_codes")


def check_decision(decision: Mapping[str, Any], catalogue: Catalogue, now: datetime) -> list[Violation]:
    """A decision not to share: a known purpose, known fields considered, and known reasons."""
    facts = _record(decision, "fields_considered", now, catalogue)
    codes = decision.get("reason_codes")
    reasons = [c for c in codes if isinstance(c, str)] if isinstance(codes, list) else []
    return [*_shared(facts, _SHARED_FOR_DECISIONS), *_reasons(reasons, "decision.reason_unknown", "/reason_codes")]


def request_template(catalogue: Catalogue, purpose_code: str) -> dict[str, Any] | None:
    """A starting request file for ``purpose_code`` (None for an unknown purpose), explained as a packet file is."""
    purpose = catalogue.purpose(purpose_code)
    if purpose is None:
        return None
    s = purpose.suggested
    basis: dict[str, Any] = {"article6": s.article6, "legal_power": list(s.legal_power)}
    if purpose.special_category_fields or s.article9 is not None:
        basis["article9"] = s.article9
    return {
        "_about": (
            f"A request for information for '{purpose.title}'. Fill in every null, then `exchange request FILE`."
            " The server reads everything here except 'details', which is sealed to the holders."
        ),
        "purpose": purpose.code,
        "_purpose": purpose.description,
        "from": None,
        "_from": (
            "Who holds the information: an agency (agency:agy_..., every duty member) or one member (mem_...)."
            f" For this purpose the holder can be: {', '.join(sorted(purpose.senders))}."
        ),
        "urgency": purpose.default_urgency,
        "_urgency": f"One of: {', '.join(purpose.allowed_urgencies)}. The answer is due by the purpose's action"
        " deadline.",
        "lawful_basis": basis,
        "_lawful_basis": "Your basis for asking (and theirs for sharing): as in a packet file.",
        "fields": [],
        "_fields": "The fields you need, and no more. This purpose allows: " + ", ".join(purpose.allowed_fields),
        "subject_identifier": None,
        "_subject_identifier": "Optional: the child's NHS number; only its keyed pseudonym is sent.",
        "details": {"child_name": None, "child_date_of_birth": None, "why": None},
        "_details": (
            "What the holder needs to find the child and why you need the information. Sealed: only the holders"
            " read it."
        ),
    }
