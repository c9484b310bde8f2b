"""The client's identifier check for anonymous consultations: detectors, properties, and the SDK refusing."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from exchange import policy, schemas
from exchange.errors import IdentifyingContent, InvalidRequest
from exchange.examples import consultation, referral
from exchange.identifiers import (
    KINDS,
    MESSAGES,
    OVERRIDE_REASONS,
    IdentifierFinding,
    check_consultation,
    find_identifiers,
    identifier_check,
    nhs_check_digit_ok,
)
from tests.conftest import Deployment, ledger_entries


def kinds(text: str, names: tuple[str, ...] = ()) -> list[str]:
    return [f.kind for f in find_identifiers(text, names=names)]


def matched(text: str, names: tuple[str, ...] | str = ()) -> list[str]:
    return [text[f.start : f.end] for f in find_identifiers(text, names=names)]


def with_check_digit(nine: str) -> str | None:
    """The ten-digit NHS number that starts with ``nine``, or None when no check digit fits."""
    check = 11 - sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True)) % 11
    if check == 10:
        return None
    return nine + str(0 if check == 11 else check)


def spaced(number: str, separator: str = " ") -> str:
    return separator.join((number[:3], number[3:6], number[6:]))


# ---------------------------------------------------------------------------------- NHS numbers


@pytest.mark.parametrize("text", ["943 476 5919", "9434765919", "943-476-5919", "NHS no:9434765919."])
def test_a_valid_nhs_number_is_found(text: str) -> None:
    """An NHS number that passes the check digit is found, spaced, hyphenated or run together."""
    assert kinds(text) == ["nhs_number"]
    assert matched(text)[0].replace(" ", "").replace("-", "") == "9434765919"


@pytest.mark.parametrize(
    "text",
    [
        "943 476 5918",  # wrong check digit
        "1234567890",  # the check digit would be 10: no NHS number has these nine digits
        "94347659190",  # eleven digits
        "19434765919",  # a valid number inside a longer run of digits
        "94 3476 5919",  # not grouped 3-3-4
    ],
)
def test_ten_digits_that_are_not_an_nhs_number_are_not_flagged(text: str) -> None:
    """Digits that fail the modulus 11 check, or are not ten digits grouped 3-3-4, are not NHS numbers."""
    assert "nhs_number" not in kinds(text)


def test_check_digit_follows_the_nhs_data_dictionary() -> None:
    """Weights 10 to 2, 11 minus the remainder, 11 meaning 0 and 10 meaning invalid."""
    assert nhs_check_digit_ok("9434765919")
    assert nhs_check_digit_ok("4010232137")  # 11 - (sum mod 11) = 11, so the check digit is 0
    assert with_check_digit("401023213") == "4010232137"
    assert with_check_digit("123456789") is None
    assert not nhs_check_digit_ok("123456789X")
    assert not nhs_check_digit_ok("943476591")


# ---------------------------------------------------------------------------------- postcodes


@pytest.mark.parametrize(
    "postcode", ["SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "EC1A 1BB", "W1A 0AX", "GIR 0AA"]
)
def test_a_full_postcode_is_found_in_any_case_with_or_without_its_space(postcode: str) -> None:
    """Every shape of full UK postcode is found upper or lower case, spaced or not."""
    for written in (postcode, postcode.lower(), postcode.replace(" ", "")):
        text = f"The family moved to {written} last year."
        assert matched(text) == [written]
        assert kinds(text) == ["postcode"]


@pytest.mark.parametrize(
    "text",
    [
        "They live somewhere in SW1A.",  # an outward code (a district) alone
        "Lives in the M1 area",
        "Q1 1AA",  # Q never starts a postcode
        "SW1A 1CI",  # C and I never end one
        "ABC1 1AA",  # part of a longer word
        "Year 7 class 7B",
    ],
)
def test_what_is_not_a_full_postcode_is_not_flagged(text: str) -> None:
    """A district alone, letters a postcode never uses, or a postcode shape inside a word is not flagged."""
    assert "postcode" not in kinds(text)


# ---------------------------------------------------------------------------------- full dates


@pytest.mark.parametrize(
    "text",
    [
        "03/04/2015",
        "3-4-2015",
        "3.4.2015",
        "03/04/15",
        "2015-04-03",
        "3 April 2015",
        "3rd Apr 2015",
        "3rd of April, 2015",
        "03-APR-2015",
        "April 3, 2015",
        "Sept 3rd 2015",
        "29/02/2016",
        "04/13/2015",  # real only read month first: still a full date
    ],
)
def test_a_full_date_is_found(text: str) -> None:
    """A real day, month and year in any of the usual ways of writing one is found."""
    assert matched(f"Born {text}.") == [text]
    assert kinds(text) == ["date_of_birth"]


@pytest.mark.parametrize(
    "text",
    [
        "April 2015",  # month and year: an age band's precision
        "born in 2015",
        "31/02/2015",  # no such day
        "29/02/2015",  # not a leap year
        "2015-13-01",
        "32 May 2015",
        "3 Mayfair 2015",
        "seen on 16 and 19 November",
        "3-4-15",  # a two-digit year only counts with slashes
        "1/2/20155",  # five digits where the year would be
    ],
)
def test_what_is_not_a_real_full_date_is_not_flagged(text: str) -> None:
    """A month and year, a year, an impossible day, or a date without its year is not flagged."""
    assert "date_of_birth" not in kinds(text)


# ---------------------------------------------------------------------------------- names


def test_a_case_name_is_found_whole_and_by_its_parts() -> None:
    """The full name is one finding, and each part of two letters or more is found on its own."""
    text = "Jamie Smith told staff that SMITH is her mum's name and jamie is shy."
    assert matched(text, ("Jamie Smith",)) == ["Jamie Smith", "SMITH", "jamie"]
    assert kinds(text, ("Jamie Smith",)) == ["name"] * 3


def test_names_match_whole_words_only() -> None:
    """A name inside a longer word (Smithson, Jamieson) is not flagged."""
    assert kinds("Mr Smithson and Jamieson", ("Jamie Smith",)) == []


def test_a_name_matches_across_spacing_hyphens_and_apostrophes() -> None:
    """Another spacing, a hyphen and a curly apostrophe still match the name the case data holds."""
    assert matched("Mary  Jane O’Brien-Jones came", ("Mary-Jane O'Brien Jones",)) == ["Mary  Jane O’Brien-Jones"]


def test_initials_and_empty_names_are_not_looked_for() -> None:
    """A one-letter part or a blank name would flag ordinary text, so it is skipped."""
    assert matched("J saw a J.", ("J.", "", "   ")) == []
    assert matched("J. Smith", ("J. Smith",)) == ["J. Smith"]
    assert matched("Smith was there", ("J. Smith",)) == ["Smith"]


def test_a_single_name_given_as_a_string_is_still_looked_for() -> None:
    """Passing one name as a bare string looks for that name, not for each of its letters."""
    assert matched("Jamie was there", "Jamie") == ["Jamie"]


def test_findings_come_in_order_of_position() -> None:
    """Several kinds in one text are reported in the order they appear."""
    text = "Jamie, born 3 April 2015, NHS 943 476 5919, lives at B33 8TH."
    assert kinds(text, ("Jamie",)) == ["name", "date_of_birth", "nhs_number", "postcode"]


# ---------------------------------------------------------------------------------- consultations


def test_check_consultation_names_the_field_of_each_finding() -> None:
    """Strings inside lists and objects are checked, and each finding names its field."""
    fields: dict[str, Any] = {
        "anonymised_case_summary": "A child of primary age at B33 8TH.",
        "risk_indicators": ["neglect", {"note": "NHS 9434765919"}],
        "child_age_band": "age_5_to_9",
        "school_attendance": 9434765919,
        "flag": True,
    }
    found = check_consultation(fields)
    assert [(name, f.kind) for name, f in found] == [
        ("anonymised_case_summary", "postcode"),
        ("risk_indicators", "nhs_number"),
        ("school_attendance", "nhs_number"),
    ]


def test_a_clear_consultation_is_recorded_as_clear() -> None:
    """Nothing found: the manifest says the check passed."""
    assert identifier_check([]) == {"result": "clear"}
    assert identifier_check([], "other") == {"result": "clear"}


def test_findings_without_an_override_are_refused_without_echoing_values() -> None:
    """The refusal names the fields and kinds and the override, but never the values."""
    text = "Jamie Smith, NHS 943 476 5919"
    found = check_consultation({"question_asked": text, "anonymised_case_summary": "at SW1A 1AA"}, ["Jamie Smith"])
    with pytest.raises(IdentifyingContent) as refused:
        identifier_check(found)
    error = refused.value
    assert (error.code, error.status) == ("consultation.identifying", 422)
    assert "question_asked" in error.detail and "anonymised_case_summary" in error.detail
    assert "NHS number" in error.detail and "a name" in error.detail and "postcode" in error.detail
    assert "allow_identifiers" in error.detail
    rendered = error.detail + json.dumps(error.extras)
    for value in ("Jamie", "Smith", "943", "5919", "SW1A", "1AA"):
        assert value not in rendered


def test_an_override_records_the_reason_and_kinds_only() -> None:
    """With a reason code the check passes, recording the reason and the kinds found, in a fixed order."""
    found = check_consultation({"question_asked": "B33 8TH, 943 476 5919"})
    assert identifier_check(found, "adviser_needs_it") == {
        "result": "overridden",
        "reason": "adviser_needs_it",
        "kinds": ["nhs_number", "postcode"],
    }


def test_an_unknown_override_reason_is_refused() -> None:
    """A reason that is not one of the codes fails closed."""
    with pytest.raises(InvalidRequest):
        identifier_check([], "because")


def test_the_manifest_schema_knows_the_same_reasons_and_kinds() -> None:
    """The schema's enumerations and the module's constants are the same lists."""
    schema = schemas.validator("manifest.v1").schema
    overridden = schema["properties"]["identifier_check"]["oneOf"][1]["properties"]
    assert tuple(overridden["reason"]["enum"]) == OVERRIDE_REASONS
    assert tuple(overridden["kinds"]["items"]["enum"]) == KINDS


# ---------------------------------------------------------------------------------- properties

nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9)
separators = st.sampled_from(["", " ", "-"])
filler = st.text(alphabet=st.characters(categories=["L", "Zs", "P"]), max_size=30)


@given(nine=nine_digits, separator=separators, before=filler, after=filler)
def test_every_valid_nhs_number_is_found(nine: str, separator: str, before: str, after: str) -> None:
    """Any number that passes the check digit is found, spaced, hyphenated or not, wherever it sits."""
    number = with_check_digit(nine)
    assume(number is not None)
    assert number is not None
    written = spaced(number, separator)
    text = before + written + after
    found = [f for f in find_identifiers(text) if f.kind == "nhs_number"]
    assert [(f.start, f.end) for f in found] == [(len(before), len(before) + len(written))]


@given(nine=nine_digits, wrong=st.integers(0, 9), separator=separators, before=filler, after=filler)
def test_a_wrong_check_digit_is_never_an_nhs_number(
    nine: str, wrong: int, separator: str, before: str, after: str
) -> None:
    """Ten digits whose last is not the check digit are never flagged as an NHS number."""
    valid = with_check_digit(nine)
    assume(valid is None or valid[-1] != str(wrong))
    text = before + spaced(nine + str(wrong), separator) + after
    assert "nhs_number" not in kinds(text)


@given(text=st.text(alphabet=st.characters(categories=["L", "M", "P", "S", "Z"])))
def test_text_without_digits_has_no_number_postcode_or_date(text: str) -> None:
    """Letters, punctuation and spaces alone never look like an NHS number, postcode or date."""
    assert kinds(text) == []


postcodes = st.from_regex(r"\A[A-PR-UWYZ][A-HK-Y]?[0-9][0-9]? ?[0-9][ABD-HJLNP-UW-Z]{2}\Z")
dates = st.builds(
    lambda d, style: [f"{d:%d/%m/%Y}", d.isoformat(), f"{d.day} {d:%B %Y}"][style],
    st.dates(date(1900, 1, 1), date(2099, 12, 31)),
    st.integers(0, 2),
)
# Names that are not part of a message's fixed words ("Thi" is in "This"), else the property is false.
names = st.from_regex(r"\A[A-Z][a-z]{2,10}( [A-Z][a-z]{2,10})?\Z").filter(
    lambda name: not any(part in message for part in name.split() for message in MESSAGES.values())
)


@given(
    value=st.one_of(
        nine_digits.map(with_check_digit).filter(lambda n: n is not None).map(lambda n: spaced(n or "")),
        postcodes,
        dates,
    ),
    name=names,
)
def test_a_message_never_contains_what_it_matched(value: str, name: str) -> None:
    """A finding's message is its kind's fixed sentence, so it never repeats the matched text."""
    text = f"{name} at {value}."
    found = find_identifiers(text, names=[name])
    assert found
    for finding in found:
        assert finding.message == MESSAGES[finding.kind]
        assert text[finding.start : finding.end] not in finding.message


def test_findings_are_frozen() -> None:
    """A finding cannot be changed once made."""
    finding = find_identifiers("9434765919")[0]
    with pytest.raises(AttributeError):
        finding.start = 0  # type: ignore[misc]
    assert isinstance(finding, IdentifierFinding)


# ---------------------------------------------------------------------------------- end to end


def with_summary(packet: dict[str, Any], summary: str) -> dict[str, Any]:
    packet["fields"]["anonymised_case_summary"]["value"] = summary
    return packet


def test_case_names_never_reach_the_manifest_or_the_body() -> None:
    """The packet file may carry case_names, and splitting it leaves them out of every part."""
    parts = policy.manifest_parts_from_packet_file(consultation([], case_names=["Jamie Smith"]))
    assert "Jamie" not in json.dumps(parts)


async def test_a_clear_consultation_is_sent_and_recorded_as_clear(deployment: Deployment) -> None:
    """A consultation with nothing identifying is delivered, its ledger entry saying the check passed."""
    lead = deployment.credentials("csc-manager").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(consultation([lead], case_names=["Jamie Smith"]))
    assert sent["status"] == "delivered"
    entry = next(e for e in await ledger_entries(deployment) if e["seq"] == sent["ledger"]["seq"])
    assert entry["details"]["identifier_check"] == {"result": "clear"}


async def test_a_consultation_with_an_nhs_number_is_refused_before_anything_is_sent(deployment: Deployment) -> None:
    """The client refuses to seal a consultation holding an NHS number, and the server never hears of it."""
    lead = deployment.credentials("csc-manager").member_id or ""
    before = await ledger_entries(deployment)
    packet = with_summary(consultation([lead]), "The child (NHS 943 476 5919) comes to school hungry.")
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(IdentifyingContent) as refused:
            await dsl.send(packet)
        assert await dsl.outbox() == []
    assert "anonymised_case_summary" in refused.value.detail
    assert "943" not in refused.value.detail
    after = await ledger_entries(deployment)
    assert [e["type"] for e in after] == [e["type"] for e in before]


async def test_an_overridden_consultation_is_sent_and_the_ledger_keeps_the_override(deployment: Deployment) -> None:
    """With the sender's reason, the consultation is delivered and its submission entry records the override."""
    lead = deployment.credentials("csc-manager").member_id or ""
    packet = with_summary(consultation([lead]), "The child (NHS 943 476 5919) comes to school hungry.")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(packet, allow_identifiers="adviser_needs_it")
    assert sent["status"] == "delivered"
    entry = next(e for e in await ledger_entries(deployment) if e["seq"] == sent["ledger"]["seq"])
    assert entry["type"] == "packet.submitted"
    check = entry["details"]["identifier_check"]
    assert check == {"result": "overridden", "reason": "adviser_needs_it", "kinds": ["nhs_number"]}
    assert "9434765919" not in json.dumps(entry) and "943 476" not in json.dumps(entry)
    async with deployment.client("csc-manager") as lead_client:
        opened = await lead_client.open(sent["packet_id"])
    assert opened.manifest["identifier_check"]["result"] == "overridden"
    assert "case_names" not in json.dumps(opened.body)


async def test_a_referral_is_not_checked(deployment: Deployment) -> None:
    """Only consultations are checked: a referral names the child on purpose and carries no identifier_check."""
    duty = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sealed = await dsl.prepare(referral([duty]))
    assert "identifier_check" not in sealed.manifest
