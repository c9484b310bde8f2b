"""Rules about why and to whom: purpose, kind, requests, sender, recipients and the sealed envelope.

Messages repeat only codes from the exchange's own vocabularies and catalogue, never a value
the sender wrote that the exchange does not know (it might be personal data in the wrong place).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from exchange.policy import sources as src
from exchange.policy import vocabulary as v
from exchange.policy.facts import Facts, Finding, Rule


def _purpose_unknown(f: Facts) -> Iterator[Finding]:
    if f.purpose is None:
        said = "No purpose is given" if f.record.purpose is None else "This is not a purpose the exchange knows"
        yield Finding("/purpose", f"{said}. Choose one of the purposes listed by `exchange purposes`.")


def _kind_unknown(f: Facts) -> Iterator[Finding]:
    if f.record.kind not in v.KINDS:
        yield Finding("/kind", f"The kind of packet is missing or unknown; it must be {v.one_of(v.KINDS)}.")


def _kind_not_allowed(f: Facts) -> Iterator[Finding]:
    kind = f.record.kind
    if f.purpose is not None and kind in v.KINDS and kind not in f.purpose.kinds:
        yield Finding(
            "/kind",
            f"A {kind} cannot be sent for the purpose '{f.purpose.title}'; use {v.one_of(f.purpose.kinds)}.",
        )


def _requires_imminent_risk(f: Facts) -> Iterator[Finding]:
    if f.purpose is not None and f.purpose.requires_imminent_risk and f.record.proportionality.imminent is not True:
        yield Finding(
            "/proportionality/imminent",
            f"'{f.purpose.title}' is only for imminent harm; record that the risk is imminent,"
            " or choose another purpose such as a referral.",
        )


def _reply_reference_missing(f: Facts) -> Iterator[Finding]:
    needs = f.record.kind == "request_response" or (f.purpose is not None and f.purpose.requires_request)
    if needs and f.record.in_reply_to is None:
        yield Finding("/in_reply_to", "A response must say which request it answers (in_reply_to).")


def _request_not_found(f: Facts) -> Iterator[Finding]:
    if f.record.in_reply_to is not None and f.context.requested_fields is None:
        if f.context.offline:
            yield Finding(
                "/in_reply_to",
                "The request this packet answers can only be checked by the exchange when you send it.",
                advisory=True,
            )
        else:
            yield Finding("/in_reply_to", "The request this packet answers is not known to the exchange.")


def _field_not_requested(f: Facts) -> Iterator[Finding]:
    requested = f.context.requested_fields
    if f.record.in_reply_to is None or requested is None:
        return
    required = set(f.purpose.required_fields) if f.purpose is not None else set()
    for entry in f.record.fields:
        if entry.name not in requested and entry.name not in required:
            yield Finding(
                entry.path,
                f"The request did not ask for '{entry.name}'. Answer with what was asked for; if more is"
                " needed, say so in the response summary or share it as a separate packet.",
            )


def _sender_kind_not_allowed(f: Facts) -> Iterator[Finding]:
    if f.purpose is None:
        return
    kind = f.context.sender_agency_kind
    if kind is None:
        if f.context.offline:
            yield Finding(
                "/purpose",
                "Your agency's kind was not given (--sender-kind), so whether it may send this purpose"
                " is checked when you send.",
                advisory=True,
            )
        else:
            yield Finding("/sender/agency", "The exchange does not know what kind of agency you send from.")
    elif kind not in f.purpose.senders:
        yield Finding(
            "/purpose",
            f"{f.catalogue.agency_kinds.get(kind, kind).capitalize()} cannot send '{f.purpose.title}'."
            f" It can be sent by: {', '.join(sorted(f.purpose.senders))}.",
        )


def _recipient_missing(f: Facts) -> Iterator[Finding]:
    if not f.record.recipients:
        yield Finding(
            f.record.recipients_path,
            "Name at least one recipient: a member (mem_...) or an agency inbox (agency:agy_...).",
        )


def _recipient_kind_unknown(f: Facts) -> Iterator[Finding]:
    kinds = f.context.recipient_agency_kinds
    unknown = [r for r in f.record.recipients if r.key not in kinds]
    if not unknown:
        return
    if f.context.offline:
        yield Finding(
            f.record.recipients_path,
            "The recipients' agency kinds were not given (--recipient-kind), so whether they may receive"
            " this purpose is checked when you send.",
            advisory=True,
        )
        return
    for recipient in unknown:
        yield Finding(recipient.path, "This recipient's agency is not in the exchange's directory.")


def _recipient_kind_not_allowed(f: Facts) -> Iterator[Finding]:
    if f.purpose is None:
        return
    for recipient in f.record.recipients:
        kind = f.context.recipient_agency_kinds.get(recipient.key)
        if kind is not None and kind not in f.purpose.recipients:
            yield Finding(
                recipient.path,
                f"'{f.purpose.title}' cannot go to {f.catalogue.agency_kinds.get(kind, kind)}."
                f" It can go to: {', '.join(sorted(f.purpose.recipients))}.",
            )


def _recipient_cap(f: Facts) -> Iterator[Finding]:
    count, cap = len(f.record.recipients), f.context.recipient_cap
    if count > cap:
        yield Finding(
            f.record.recipients_path,
            f"This packet goes to {count} recipients; at most {cap} are allowed. Share only with those who need it.",
        )


def _recipient_duplicate(f: Facts) -> Iterator[Finding]:
    seen: set[str] = set()
    for recipient in f.record.recipients:
        if recipient.key in seen:
            yield Finding(recipient.path, "This recipient is listed more than once.")
        seen.add(recipient.key)


def _directory_purpose(f: Facts) -> Iterator[Finding]:
    code = f.record.purpose
    if f.purpose is None or code is None:
        return
    allowed_to_send = f.context.sender_purposes
    if allowed_to_send is not None and code not in allowed_to_send:
        yield Finding("/purpose", f"The directory does not let your agency send '{f.purpose.title}'.")
    per_recipient = f.context.recipient_purposes or {}
    for recipient in f.record.recipients:
        allowed_to_receive = per_recipient.get(recipient.key)
        if allowed_to_receive is not None and code not in allowed_to_receive:
            yield Finding(
                recipient.path, f"The directory does not let this recipient's agency receive '{f.purpose.title}'."
            )


def _sealed_keys_mismatch(f: Facts) -> Iterator[Finding]:
    sealed = f.record.sealed_keys
    if sealed is None:
        return
    addressed = Counter((r.key, r.encryption_key) for r in f.record.recipients)
    if Counter(sealed) != addressed:
        yield Finding(
            "/content/sealed_keys",
            "The content key must be sealed exactly once to each recipient's listed encryption key, and to no one "
            "else.",
        )


RULES: tuple[Rule, ...] = (
    Rule(
        "purpose.unknown",
        "A packet names a purpose from the exchange's catalogue; an unknown or missing purpose is refused.",
        src.LEGITIMATE_PURPOSE,
        _purpose_unknown,
    ),
    Rule(
        "kind.unknown",
        "A packet says what kind it is: referral, information, request response, consultation, notification or report.",
        src.RECORD,
        _kind_unknown,
    ),
    Rule(
        "kind.not_allowed_for_purpose",
        "The kind of packet must be one the purpose allows (for example, a consultation for anonymous advice).",
        src.LEGITIMATE_PURPOSE,
        _kind_not_allowed,
    ),
    Rule(
        "purpose.requires_imminent_risk",
        "A notification of imminent harm must record that the risk is imminent.",
        src.IMMINENT_HARM,
        _requires_imminent_risk,
    ),
    Rule(
        "request.reply_reference_missing",
        "A response to a request names the request it answers.",
        src.REQUESTS,
        _reply_reference_missing,
    ),
    Rule(
        "request.not_found",
        "The request a packet answers must be known to the exchange (checked when sending, not in a local check).",
        src.REQUESTS,
        _request_not_found,
    ),
    Rule(
        "necessity.field_not_requested",
        "A response carries only the fields the request asked for (and the purpose's required fields).",
        src.NECESSARY,
        _field_not_requested,
    ),
    Rule(
        "sender.agency_kind_not_allowed",
        "Only the agency kinds the purpose lists may send it.",
        src.both(src.LEGITIMATE_PURPOSE, src.design("§4 Purpose catalogue")),
        _sender_kind_not_allowed,
    ),
    Rule(
        "recipient.missing",
        "A packet names at least one recipient.",
        src.ONLY_THOSE_WHO_NEED_IT,
        _recipient_missing,
    ),
    Rule(
        "recipient.agency_kind_unknown",
        "Every recipient must belong to an agency in the directory (checked when sending, not in a local check).",
        src.ONLY_THOSE_WHO_NEED_IT,
        _recipient_kind_unknown,
    ),
    Rule(
        "recipient.agency_kind_not_allowed",
        "Every recipient's agency must be of a kind the purpose may go to.",
        src.ONLY_THOSE_WHO_NEED_IT,
        _recipient_kind_not_allowed,
    ),
    Rule(
        "recipient.cap_exceeded",
        "A packet goes to no more recipients than the exchange's configured cap (25 by default).",
        src.both(src.ONLY_THOSE_WHO_NEED_IT, src.design("§7 Security")),
        _recipient_cap,
    ),
    Rule(
        "recipient.duplicate",
        "Each recipient is listed once.",
        src.RECORD,
        _recipient_duplicate,
    ),
    Rule(
        "directory.purpose_not_permitted",
        "Where the directory lists the purposes an agency may send or receive, the packet's purpose must be among "
        "them.",
        src.design("§4 Purpose catalogue: 'The directory says which purposes each agency may send and receive'"),
        _directory_purpose,
    ),
    Rule(
        "envelope.sealed_keys_mismatch",
        "The content key is sealed exactly to the listed recipients' keys: no one missing, no one added.",
        src.both(src.golden_rule(6, "shared securely"), src.design("§3")),
        _sealed_keys_mismatch,
    ),
)
