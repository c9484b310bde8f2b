"""Rules about what is shared: known fields, minimum necessary, labels, attachments, anonymity."""

from __future__ import annotations

from collections.abc import Iterator

from exchange.policy import sources as src
from exchange.policy import vocabulary as v
from exchange.policy.facts import Facts, Finding, Rule


def _field_unknown(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        if f.definition(entry) is None:
            yield Finding(entry.path, "This is not a field the exchange knows; use a field from `exchange purposes`.")


def _field_duplicate(f: Facts) -> Iterator[Finding]:
    seen: set[str] = set()
    for entry in f.record.fields:
        if entry.name in seen:
            yield Finding(entry.path, f"The field '{entry.name}' is listed more than once.")
        seen.add(entry.name)


def _field_not_allowed(f: Facts) -> Iterator[Finding]:
    if f.purpose is None:
        return
    for entry in f.record.fields:
        definition = f.definition(entry)
        if definition is None or entry.name in f.purpose.allowed_fields:
            continue
        if f.is_consultation and definition.identifying:
            continue  # consultation.identifying_field says this more precisely
        yield Finding(
            entry.path,
            f"'{definition.title}' is not needed for '{f.purpose.title}' and may not be shared for it."
            " Share only what the purpose needs.",
        )


def _required_field_missing(f: Facts) -> Iterator[Finding]:
    if f.purpose is None:
        return
    present = {entry.name for entry in f.record.fields}
    for name in f.purpose.required_fields:
        if name not in present:
            definition = f.catalogue.field(name)
            title = definition.title if definition is not None else name
            yield Finding("/fields", f"'{f.purpose.title}' needs the field '{name}' ({title}).")


def _value_missing(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        if entry.value_missing:
            yield Finding(
                entry.path, "This field has no value. Fill it in, or remove the field if you are not sharing it."
            )


def _attachment_missing(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        definition = f.definition(entry)
        if definition is not None and definition.is_attachment and not entry.has_attachment:
            yield Finding(entry.path, f"'{definition.title}' is a {definition.value_type}: attach the file.")


def _attachment_not_allowed(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        definition = f.definition(entry)
        if definition is not None and not definition.is_attachment and entry.has_attachment:
            yield Finding(
                entry.path,
                f"'{definition.title}' is {definition.value_type}, not a document or image: it cannot carry a file.",
            )


def _attachment_media_type(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        definition = f.definition(entry)
        if definition is None or not definition.is_attachment or not entry.has_attachment:
            continue
        if entry.media_type not in v.ATTACHMENT_MEDIA_TYPES:
            yield Finding(
                entry.path,
                "Attach a PDF, JPEG, PNG, plain text or Word (.docx) file, and say which (media_type).",
            )


def _label_missing(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        if entry.label is None:
            yield Finding(
                f"{entry.path}/label",
                "Say whether this is a fact you observed, a fact someone reported, or an opinion"
                " (fact_observed, fact_reported or opinion).",
            )


def _label_unknown(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        if entry.label is not None and entry.label not in v.LABELS:
            yield Finding(f"{entry.path}/label", "The label must be fact_observed, fact_reported or opinion.")


def _source_missing(f: Facts) -> Iterator[Finding]:
    roles = f.catalogue.source_roles
    for entry in f.record.fields:
        if entry.label == "fact_reported" and entry.source not in roles:
            yield Finding(
                f"{entry.path}/source",
                "A reported fact must say who reported it, as a role (for example parent_carer, child,"
                " neighbour, teacher), never a name.",
            )


def _author_role_missing(f: Facts) -> Iterator[Finding]:
    roles = f.catalogue.professional_roles
    for entry in f.record.fields:
        if entry.label == "opinion" and entry.author_role not in roles:
            yield Finding(
                f"{entry.path}/author_role",
                "An opinion must say the professional role of whoever holds it (for example social_worker, gp,"
                " teacher), never a name.",
            )


def _judgement_as_fact(f: Facts) -> Iterator[Finding]:
    for entry in f.entries_where(lambda d: d.is_judgement):
        if entry.label in v.FACT_LABELS:
            definition = f.definition(entry)
            title = definition.title if definition is not None else entry.name
            yield Finding(
                f"{entry.path}/label",
                f"'{title}' is a professional judgement, not a fact, even when it rests on facts: label it"
                " opinion and give the professional role of whoever made it (author_role). Share the facts it"
                " rests on in their own fields.",
            )


def _currency_missing(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        if entry.currency not in v.CURRENCIES:
            yield Finding(f"{entry.path}/currency", "Say whether this is current or historical information.")


def _as_of_missing(f: Facts) -> Iterator[Finding]:
    for entry in f.record.fields:
        if entry.as_of is None:
            yield Finding(f"{entry.path}/as_of", "Give the date this information was true (as_of, YYYY-MM-DD).")


def _as_of_in_future(f: Facts) -> Iterator[Finding]:
    today = f.context.now.date()
    for entry in f.record.fields:
        if entry.as_of is not None and entry.as_of > today:
            yield Finding(
                f"{entry.path}/as_of", "The as-of date is in the future; information can only be true up to today."
            )


def _consultation_identifying(f: Facts) -> Iterator[Finding]:
    if not f.is_consultation:
        return
    for entry in f.identifying_entries:
        definition = f.definition(entry)
        title = definition.title if definition is not None else entry.name
        yield Finding(
            entry.path,
            f"A consultation must not identify the child or family, and '{title}' can."
            " Describe the situation without it, or make a referral instead.",
        )


def _consultation_subject(f: Facts) -> Iterator[Finding]:
    if f.is_consultation and f.record.subject_path is not None:
        yield Finding(f.record.subject_path, "A consultation carries no reference to the child, not even a pseudonym.")


def _necessity_statement(f: Facts) -> Iterator[Finding]:
    if f.record.necessity_stated is False:
        yield Finding(
            "/necessity",
            "Say why sharing is necessary (it is sealed in the body, so only the recipients read it).",
        )


RULES: tuple[Rule, ...] = (
    Rule("field.unknown", "Every field shared is one the field catalogue defines.", src.NECESSARY, _field_unknown),
    Rule("field.duplicate", "Each field is listed once.", src.ACCURATE, _field_duplicate),
    Rule(
        "necessity.field_not_allowed",
        "Only the fields the purpose allows may be shared (the minimum necessary for the purpose).",
        src.both(
            src.NECESSARY, src.key_points("'Having decided to share information you need not tell everyone everything'")
        ),
        _field_not_allowed,
    ),
    Rule(
        "necessity.required_field_missing",
        "Every field the purpose requires is shared, so the recipient can act on it.",
        src.both(
            src.partnership("'Adequate – of sufficient quality to ensure that it can be relied upon'"), src.NECESSARY
        ),
        _required_field_missing,
    ),
    Rule(
        "necessity.statement_missing",
        "The packet file says why sharing is necessary; the statement is sealed in the body (checked locally only).",
        src.both(src.RECORD, src.design("§4 Lawful basis")),
        _necessity_statement,
    ),
    Rule(
        "field.value_missing",
        "Every field listed in a packet file has a value or a file (checked locally only: the manifest never holds "
        "values).",
        src.both(src.partnership("Adequate"), src.RECORD),
        _value_missing,
    ),
    Rule(
        "field.attachment_missing",
        "A document or image field carries its file (its digest and size in the manifest).",
        src.both(src.ACCURATE, src.design("§3")),
        _attachment_missing,
    ),
    Rule(
        "field.attachment_not_allowed",
        "Only document and image fields carry files.",
        src.design("§3"),
        _attachment_not_allowed,
    ),
    Rule(
        "field.attachment_media_type",
        "An attached file is a PDF, JPEG, PNG, plain text or Word (.docx) file.",
        src.both(src.golden_rule(6, "shared securely"), src.design("§7 Security")),
        _attachment_media_type,
    ),
    Rule(
        "label.missing",
        "Every field is labelled fact_observed, fact_reported or opinion: fact is kept apart from opinion.",
        src.ACCURATE,
        _label_missing,
    ),
    Rule(
        "label.unknown",
        "A field's label is one of fact_observed, fact_reported or opinion.",
        src.ACCURATE,
        _label_unknown,
    ),
    Rule(
        "label.source_missing",
        "A reported fact names its source by role (never by name).",
        src.both(src.ACCURATE, src.partnership("'Distinguish fact from opinion'")),
        _source_missing,
    ),
    Rule(
        "label.author_role_missing",
        "An opinion names the professional role of its author.",
        src.both(src.ACCURATE, src.partnership("'Distinguish fact from opinion'")),
        _author_role_missing,
    ),
    Rule(
        "label.judgement_as_fact",
        "A field that is by nature a professional judgement (the field catalogue marks it, such as the category of"
        " concern or a professional assessment) is labelled opinion with its author's role, never as a fact.",
        src.both(
            src.ACCURATE,
            src.partnership("'Distinguish fact from opinion'"),
            src.key_points(
                "'inference or interpretation can result in a difference between what is said and what is understood'"
            ),
        ),
        _judgement_as_fact,
    ),
    Rule(
        "label.currency_missing",
        "Every field says whether it is current or historical.",
        src.ACCURATE,
        _currency_missing,
    ),
    Rule(
        "label.as_of_missing",
        "Every field gives the date it was true (as of).",
        src.both(src.ACCURATE, src.practice_tip(7, "accurate and up-to-date")),
        _as_of_missing,
    ),
    Rule(
        "label.as_of_in_future",
        "No as-of date is later than today.",
        src.both(src.ACCURATE, src.practice_tip(7, "accurate and up-to-date")),
        _as_of_in_future,
    ),
    Rule(
        "consultation.identifying_field",
        "An anonymous consultation carries no field that could identify the child or family.",
        src.SEEK_ADVICE_ANONYMOUSLY,
        _consultation_identifying,
    ),
    Rule(
        "consultation.subject_reference",
        "An anonymous consultation carries no subject reference, not even a pseudonym.",
        src.both(src.SEEK_ADVICE_ANONYMOUSLY, src.design("§4 Anonymous consultation")),
        _consultation_subject,
    ),
)
