"""Spotting what could identify a family in the free text of an anonymous consultation.

The server cannot read a sealed body, so the sender's client checks a consultation's values before
sealing it (golden rule 3: seek advice without identifying the family). The detectors look for
the identifiers practitioners most often paste by mistake: NHS numbers (that pass the check digit),
full UK postcodes, full dates (a date of birth, or any date precise enough to be one) and the names
the sender's case data holds. They are a safety net, not a guarantee of anonymity.

Everything here is pure: no I/O, no clock. A finding says where and what kind, never the matched
text, so it is safe to show, log or put in an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from exchange.errors import IdentifyingContent, InvalidRequest

IdentifierKind = Literal["nhs_number", "postcode", "date_of_birth", "name"]

#: Every kind, in the order they are reported.
KINDS: Final[tuple[IdentifierKind, ...]] = ("nhs_number", "postcode", "date_of_birth", "name")

#: The reasons a sender may give for sending a consultation the check flagged (the manifest schema
#: lists the same codes).
OVERRIDE_REASONS: Final = ("not_identifying_in_context", "adviser_needs_it", "other")

#: One fixed sentence per kind: a message never depends on (so never repeats) the matched text.
MESSAGES: Final[Mapping[IdentifierKind, str]] = {
    "nhs_number": "This looks like an NHS number (it passes the check digit).",
    "postcode": "This looks like a full UK postcode.",
    "date_of_birth": "This looks like a full date (day, month and year), which could be a date of birth.",
    "name": "This matches a name from the case data.",
}

#: How a refusal names each kind in a sentence.
_KIND_WORDS: Final[Mapping[IdentifierKind, str]] = {
    "nhs_number": "an NHS number",
    "postcode": "a postcode",
    "date_of_birth": "a full date (possibly a date of birth)",
    "name": "a name from the case",
}


@dataclass(frozen=True)
class IdentifierFinding:
    """Something in a text that could identify a person: its kind and span (``text[start:end]``)."""

    kind: IdentifierKind
    start: int
    end: int
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "message": self.message}


def _finding(kind: IdentifierKind, match: re.Match[str]) -> IdentifierFinding:
    return IdentifierFinding(kind, match.start(), match.end(), MESSAGES[kind])


# ---------------------------------------------------------------------------------- NHS numbers

# Ten digits, grouped 3-3-4 by an optional space or hyphen, not part of a longer run of digits.
_NHS_NUMBER = re.compile(r"(?<![0-9])([0-9]{3})[ \u00a0-]?([0-9]{3})[ \u00a0-]?([0-9]{4})(?![0-9])")


def nhs_check_digit_ok(digits: str) -> bool:
    """Whether ten digits pass the NHS number's modulus 11 check.

    NHS Data Dictionary, "NHS Number": weight the first nine digits 10 down to 2, take the sum
    modulo 11 from 11; a result of 11 means 0 and 10 means the number is not valid.
    """
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def _nhs_numbers(text: str) -> Iterator[IdentifierFinding]:
    for match in _NHS_NUMBER.finditer(text):
        if nhs_check_digit_ok("".join(match.groups())):
            yield _finding("nhs_number", match)


# ---------------------------------------------------------------------------------- postcodes

# A full postcode: outward code (A9, A99, AA9, AA99, A9A, AA9A) then inward code (9AA), with the
# letters each position may hold (Royal Mail's format; Q, V and X never lead, C I K M O V never
# end), plus the special GIR 0AA. An outward code alone (a district) is not flagged.
_POSTCODE = re.compile(
    r"(?<![A-Z0-9])"
    r"(?:GIR[ \u00a0]?0AA"
    r"|(?:[A-PR-UWYZ][0-9][0-9]?"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][0-9]?"
    r"|[A-PR-UWYZ][0-9][A-HJKPSTUW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRV-Y])"
    r"[ \u00a0]?[0-9][ABD-HJLNP-UW-Z]{2})"
    r"(?![A-Z0-9])",
    re.IGNORECASE | re.ASCII,
)


def _postcodes(text: str) -> Iterator[IdentifierFinding]:
    for match in _POSTCODE.finditer(text):
        yield _finding("postcode", match)


# ---------------------------------------------------------------------------------- full dates

_MONTHS: Final = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sept", "sep"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
# Longest first, so "sept" is not read as "sep" followed by a stray letter.
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORDINAL = r"(?:st|nd|rd|th)?"
_GAP = r"[ \u00a0]+"

_DATE_PATTERNS: Final = (
    # 03/04/2015, 3-4-2015, 3.4.2015 and 03/04/15 (a two-digit year only with slashes): day first, as
    # written in the UK, though a date that is real only read month first (04/13/2015) counts too.
    re.compile(
        r"(?<![0-9])(?P<day>[0-9]{1,2})(?P<sep>[/.-])(?P<month>[0-9]{1,2})(?P=sep)"
        r"(?P<year>[0-9]{4}|(?<=/)[0-9]{2})(?![0-9])"
    ),
    # 2015-04-03, 2015/4/3
    re.compile(r"(?<![0-9])(?P<year>[0-9]{4})(?P<sep>[/.-])(?P<month>[0-9]{1,2})(?P=sep)(?P<day>[0-9]{1,2})(?![0-9])"),
    # 3 April 2015, 3rd of Apr. 2015, 03-APR-2015, 3 April, 2015
    re.compile(
        rf"(?<![0-9])(?P<day>[0-9]{{1,2}}){_ORDINAL}(?:{_GAP}of)?[ \u00a0,./-]{{0,3}}"
        rf"(?P<month_name>{_MONTH})(?![a-z])\.?[ \u00a0,./-]{{0,3}}(?P<year>[0-9]{{4}})(?![0-9])",
        re.IGNORECASE | re.ASCII,
    ),
    # April 3, 2015, Apr 3rd 2015
    re.compile(
        rf"(?<![a-z])(?P<month_name>{_MONTH})\.?{_GAP}(?P<day>[0-9]{{1,2}}){_ORDINAL},?{_GAP}"
        r"(?P<year>[0-9]{4})(?![0-9])",
        re.IGNORECASE | re.ASCII,
    ),
)


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _is_real(match: re.Match[str]) -> bool:
    parts = match.groupdict()
    day = int(parts["day"])
    written_year = parts["year"]
    # A two-digit year is this century's or the last one's; either will do.
    years = [int(written_year)] if len(written_year) == 4 else [2000 + int(written_year), 1900 + int(written_year)]
    if parts.get("month_name"):
        months = [(_MONTHS[parts["month_name"].lower()], day)]
    elif match.re is _DATE_PATTERNS[0]:
        month = int(parts["month"])
        months = [(month, day), (day, month)]
    else:
        months = [(int(parts["month"]), day)]
    return any(_real_date(year, m, d) for year in years for m, d in months)


def _full_dates(text: str) -> Iterator[IdentifierFinding]:
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            if _is_real(match):
                yield _finding("date_of_birth", match)


# ---------------------------------------------------------------------------------- names


def _letters(part: str) -> int:
    return sum(character.isalpha() for character in part)


def _word_pattern(parts: Sequence[str]) -> re.Pattern[str]:
    """The parts as whole words, case-insensitively, any spacing or hyphen between them; ' matches ’."""

    def literal(part: str) -> str:
        return "".join("['’]" if character in "'’" else re.escape(character) for character in part)

    return re.compile(r"(?<!\w)" + r"[\s-]+".join(literal(p) for p in parts) + r"(?!\w)", re.IGNORECASE)


def _names(text: str, names: Iterable[str]) -> Iterator[IdentifierFinding]:
    # A name is matched whole and, when it has several parts, each part of two letters or more on its
    # own ("Jamie Smith" flags "Smith"); an initial ("J.") alone would flag every J, so it is skipped.
    patterns: dict[str, re.Pattern[str]] = {}
    for name in (names,) if isinstance(names, str) else names:
        parts = [part for part in re.split(r"[\s-]+", name.strip()) if part]
        if _letters("".join(parts)) < 2:
            continue
        patterns.setdefault(" ".join(parts).casefold(), _word_pattern(parts))
        if len(parts) > 1:
            for part in parts:
                if _letters(part) >= 2:
                    patterns.setdefault(part.casefold(), _word_pattern([part]))
    found = sorted(
        {(m.start(), m.end()) for pattern in patterns.values() for m in pattern.finditer(text)},
        key=lambda span: (span[0], -span[1]),
    )
    covered_to = -1
    for start, end in found:
        if end <= covered_to:
            continue  # inside a longer match already reported ("Smith" within "Jamie Smith")
        covered_to = end
        yield IdentifierFinding("name", start, end, MESSAGES["name"])


# ---------------------------------------------------------------------------------- the checks


def find_identifiers(text: str, *, names: Sequence[str] = ()) -> list[IdentifierFinding]:
    """Every NHS number, full postcode, full date and given name in ``text``, in order of position.

    ``names`` are the names the sender's case data holds (the child's, a parent's); each is matched
    case-insensitively as a whole word, and so is each part of two letters or more of a name with
    several parts. An NHS number must pass its check digit; a date must be a real day of a real
    month with its year (a month and year alone, or a year, is not flagged). A finding's message
    is fixed for its kind and never holds the matched text.
    """
    findings = [*_nhs_numbers(text), *_postcodes(text), *_full_dates(text), *_names(text, names)]
    unique = {(f.start, f.end, f.kind): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.start, f.end, KINDS.index(f.kind)))


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        yield str(value)  # an NHS number typed as a JSON number is still an NHS number
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def check_consultation(fields: Mapping[str, Any], names: Sequence[str] = ()) -> list[tuple[str, IdentifierFinding]]:
    """Findings in a consultation's field values, each with the name of the field it is in.

    ``fields`` maps a field's name to its value; every string inside a value is checked (lists and
    objects are searched through, and whole numbers are read as their digits). A finding's span is
    within the one string it was found in.
    """
    return [
        (name, finding)
        for name, value in fields.items()
        for text in _texts(value)
        for finding in find_identifiers(text, names=names)
    ]


def identifier_check(
    findings: Sequence[tuple[str, IdentifierFinding]], allow_identifiers: str | None = None
) -> dict[str, Any]:
    """The manifest's ``identifier_check`` for a consultation whose values gave ``findings``.

    Nothing found: ``{"result": "clear"}``. Something found and the sender overrides with one of
    :data:`OVERRIDE_REASONS`: ``{"result": "overridden", "reason": ..., "kinds": [...]}``, kinds
    only (never a value or a position), so the ledger keeps that the sender chose to send them.
    Raises :class:`IdentifyingContent` when something is found and there is no override, and
    :class:`InvalidRequest` for a reason that is not one of the codes.
    """
    if allow_identifiers is not None and allow_identifiers not in OVERRIDE_REASONS:
        raise InvalidRequest(f"allow_identifiers must be one of {', '.join(OVERRIDE_REASONS)}.")
    if not findings:
        return {"result": "clear"}
    if allow_identifiers is None:
        raise IdentifyingContent(
            refusal_detail(findings),
            extras={"findings": [{"field": name, **finding.as_json()} for name, finding in findings]},
        )
    kinds = {finding.kind for _, finding in findings}
    return {"result": "overridden", "reason": allow_identifiers, "kinds": [k for k in KINDS if k in kinds]}


def refusal_detail(findings: Sequence[tuple[str, IdentifierFinding]]) -> str:
    """A plain-English refusal naming each field and the kinds found in it (never the values)."""
    by_field: dict[str, list[IdentifierKind]] = {}
    for name, finding in findings:
        kinds = by_field.setdefault(name, [])
        if finding.kind not in kinds:
            kinds.append(finding.kind)
    described = "; ".join(
        f"{name} holds what looks like {_and([_KIND_WORDS[k] for k in KINDS if k in kinds])}"
        for name, kinds in by_field.items()
    )
    return (
        f"The consultation was not sealed or sent: it may identify the family. {described}. Remove them,"
        " or, if they do not identify anyone in context, send it again with allow_identifiers and a reason"
        f" ({_and(list(OVERRIDE_REASONS), 'or')}); the override is recorded in the ledger."
    )


def _and(items: Sequence[str], word: str = "and") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"
