"""Working days: deadlines skip weekends and bank holidays, counted on the UK's local calendar."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.policy import CatalogueInvalid, Span, WorkingCalendar, evaluate, load_catalogue
from tests.factories import CATALOGUE, broken_catalogue, make_context, make_manifest

LONDON = ZoneInfo("Europe/London")
CALENDAR = CATALOGUE.calendar


def test_the_shipped_calendar_is_england_and_wales() -> None:
    """The calendar file names its region and time zone and lists the 2026 Christmas substitute day."""
    assert (CALENDAR.region, CALENDAR.time_zone) == ("England and Wales", LONDON)
    assert CALENDAR.bank_holidays[date(2026, 12, 28)] == "Boxing Day (substitute day)"
    assert not CALENDAR.is_working_day(date(2026, 12, 25))
    assert CALENDAR.is_working_day(date(2026, 12, 24))


@pytest.mark.parametrize(
    ("start", "working_days", "due"),
    [
        # Christmas Eve 2026 (Thursday): Friday is Christmas, then a weekend, then the substitute Boxing Day.
        (datetime(2026, 12, 24, 16, 0, tzinfo=UTC), 1, datetime(2026, 12, 29, 16, 0, tzinfo=UTC)),
        # Maundy Thursday 2026, 09:00 in London (BST): Good Friday and Easter Monday are skipped.
        (datetime(2026, 4, 2, 8, 0, tzinfo=UTC), 1, datetime(2026, 4, 7, 8, 0, tzinfo=UTC)),
        # The clocks go forward on Sunday 29 March 2026: Friday 16:00 GMT is due Monday 16:00 BST.
        (datetime(2026, 3, 27, 16, 0, tzinfo=UTC), 1, datetime(2026, 3, 30, 15, 0, tzinfo=UTC)),
        # ... and back on Sunday 25 October 2026: Friday 16:00 BST is due Monday 16:00 GMT.
        (datetime(2026, 10, 23, 15, 0, tzinfo=UTC), 1, datetime(2026, 10, 26, 16, 0, tzinfo=UTC)),
        # 23:30 UTC on a Friday in July is already Saturday in London: one working day is Monday.
        (datetime(2026, 7, 10, 23, 30, tzinfo=UTC), 1, datetime(2026, 7, 12, 23, 30, tzinfo=UTC)),
        # The late May bank holiday 2026 (Monday 25th) is skipped by a five-day span.
        (datetime(2026, 5, 22, 10, 0, tzinfo=UTC), 5, datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_working_days_skip_bank_holidays_in_local_time(start: datetime, working_days: int, due: datetime) -> None:
    """A span in working days ends at the same London time of day on the n-th following working day."""
    assert Span(working_days=working_days).due_from(start, CALENDAR) == due


def test_a_fixed_duration_ignores_the_calendar() -> None:
    """Hours are hours: "within 4 hours" on Christmas Day still means 4 hours."""
    start = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)
    assert Span.parse("PT4H").due_from(start, CALENDAR) == start + timedelta(hours=4)


def test_beyond_the_listed_years_only_weekends_are_skipped() -> None:
    """Christmas 2028 is not listed yet, so it counts as a working day; the calendar says it is running out."""
    start = datetime(2028, 12, 22, 12, 0, tzinfo=UTC)  # a Friday
    assert Span(working_days=1).due_from(start, CALENDAR) == datetime(2028, 12, 25, 12, 0, tzinfo=UTC)
    assert CALENDAR.coverage_ends_within(datetime(2027, 11, 1, tzinfo=UTC), 90)
    assert not CALENDAR.coverage_ends_within(datetime(2027, 9, 1, tzinfo=UTC), 90)


def test_a_referral_on_christmas_eve_is_due_after_the_holiday() -> None:
    """The rules' acknowledgement deadline for a routine referral uses the calendar, not bare weekdays."""
    christmas_eve = datetime(2026, 12, 24, 15, 0, tzinfo=UTC)
    decision = evaluate(make_manifest(), make_context(now=christmas_eve), CATALOGUE)
    assert decision.violations == ()
    assert decision.ack_due_by == datetime(2026, 12, 29, 15, 0, tzinfo=UTC)


@given(
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 1), timezones=st.just(UTC)
    ),
    st.integers(1, 15),
)
def test_a_working_day_deadline_lands_on_the_nth_working_day(start: datetime, count: int) -> None:
    """Property: the due day is a working day, exactly ``count`` working days follow the start's day up
    to it, and the London time of day is kept."""
    due = Span(working_days=count).due_from(start, CALENDAR)
    local_start, local_due = start.astimezone(LONDON), due.astimezone(LONDON)
    assert CALENDAR.is_working_day(local_due.date())
    days = (local_due.date() - local_start.date()).days
    between = [local_start.date() + timedelta(days=n) for n in range(1, days + 1)]
    assert sum(CALENDAR.is_working_day(day) for day in between) == count
    assert local_due.time() == local_start.time()


def test_weekdays_only_calendar() -> None:
    """Without a holiday list every Monday to Friday is a working day."""
    plain = WorkingCalendar.weekdays()
    assert plain.is_working_day(date(2026, 12, 25))
    assert not plain.is_working_day(date(2026, 12, 26))


def _holidays(doc: dict[str, Any]) -> list[dict[str, str]]:
    holidays: list[dict[str, str]] = doc["bank_holidays"]
    return holidays


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(time_zone="Europe/Atlantis"), "Europe/Atlantis"),
        (lambda d: _holidays(d).append({"date": "2026-12-25", "title": "Again"}), "twice"),
        (lambda d: _holidays(d).append({"date": "2026-12-26", "title": "Boxing Day"}), "weekend"),
        (lambda d: _holidays(d).append({"date": "2031-01-01", "title": "New Year's Day"}), "outside"),
        (lambda d: d.update(covers_until="2024-12-31"), "empty range"),
        (lambda d: _holidays(d).append({"date": "26/12/2025", "title": "Boxing Day"}), "26/12/2025"),
    ],
)
def test_a_broken_calendar_fails_closed_at_load(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    """An unknown time zone, a repeated, weekend or out-of-range holiday, or a bad date stops the load."""
    with pytest.raises(CatalogueInvalid) as raised:
        load_catalogue(broken_catalogue(tmp_path, change, "working-days.v1.json"))
    assert any(expected in error for error in raised.value.extras["errors"]), raised.value.extras["errors"]
