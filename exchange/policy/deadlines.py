"""Deadline lengths from the purpose catalogue: a fixed duration, or a number of working days.

Local safeguarding procedures set some deadlines in working days ("a referral is acknowledged
within one working day") and others in hours ("the referrer hears the decision within 24
hours"; "imminent harm within the hour"), so the catalogue accepts both. Which days are working
days is data too (:class:`WorkingCalendar`, from ``schemas/working-days.v1.json``): a referral
made on Christmas Eve is not due on Christmas Day.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from types import MappingProxyType
from typing import Any

#: /health raises the calendar alarm when its bank holidays run out within this many days.
COVERAGE_WARNING_DAYS = 90

# ISO 8601 durations limited to days, hours and minutes: months and years have no fixed length.
_DURATION = re.compile(r"^P(?=\d|T\d)(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?)?$")


@dataclass(frozen=True)
class WorkingCalendar:
    """Working days: Monday to Friday in ``time_zone``, less the listed bank holidays.

    Days after ``covers_until`` are counted as Monday to Friday only, since their holidays are not
    yet listed; :meth:`coverage_ends_within` lets the service warn before that happens.
    """

    region: str
    time_zone: tzinfo
    covers_from: date
    covers_until: date
    #: Date -> its name, e.g. "Christmas Day".
    bank_holidays: Mapping[date, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def weekdays(cls, time_zone: tzinfo = UTC) -> WorkingCalendar:
        """Monday to Friday with no holidays (for tests and for rules run without the catalogue)."""
        return cls(region="weekdays only", time_zone=time_zone, covers_from=date.min, covers_until=date.max)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.bank_holidays

    def coverage_ends_within(self, now: datetime, days: int) -> bool:
        """True when the listed holidays run out less than ``days`` days after ``now``."""
        return now.astimezone(self.time_zone).date() + timedelta(days=days) > self.covers_until

    def health(self, now: datetime) -> dict[str, Any]:
        """For ``/health``: the calendar's reach, with an alarm once fewer than 90 days are left."""
        report: dict[str, Any] = {
            "region": self.region,
            "covers_until": self.covers_until.isoformat(),
            "alarm": self.coverage_ends_within(now, COVERAGE_WARNING_DAYS),
        }
        if report["alarm"]:
            report["detail"] = (
                f"The bank holidays are listed only to {report['covers_until']}: add the next year's to "
                "schemas/working-days.v1.json, or deadlines after that date will fall on bank holidays."
            )
        return report


@dataclass(frozen=True)
class Span:
    """How long something may take: an ISO 8601 ``duration`` or a number of ``working_days``."""

    #: As the catalogue writes it, e.g. ``PT4H``; None for a span in working days.
    iso: str | None = None
    working_days: int = 0

    @classmethod
    def parse(cls, spec: Any) -> Span:
        """Read ``"PT4H"``-style ISO 8601 durations or ``{"working_days": n}``; raise ValueError otherwise."""
        if isinstance(spec, str):
            if _DURATION.match(spec) is None:
                raise ValueError(f"{spec!r} is not an ISO 8601 duration in days, hours and minutes")
            span = cls(iso=spec)
            if span.duration <= timedelta(0):
                raise ValueError(f"{spec!r} is not a positive duration")
            return span
        if isinstance(spec, dict) and set(spec) == {"working_days"}:
            count = spec["working_days"]
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                return cls(working_days=count)
        raise ValueError(f"{spec!r} is neither an ISO 8601 duration nor {{'working_days': n}}")

    def _parts(self) -> tuple[int, int, int]:
        match = _DURATION.match(self.iso or "")
        if match is None:
            return (0, 0, 0)
        days, hours, minutes = (int(part) if part else 0 for part in match.groups())
        return days, hours, minutes

    @property
    def duration(self) -> timedelta:
        """The fixed length (zero for a span in working days, which depends on the start)."""
        days, hours, minutes = self._parts()
        return timedelta(days=days, hours=hours, minutes=minutes)

    def due_from(self, start: datetime, calendar: WorkingCalendar) -> datetime:
        """The moment this span after ``start`` (timezone-aware) ends, in ``start``'s time zone.

        A span in working days ends at the same local time of day, in the calendar's time zone, on
        the n-th following working day: Friday 16:00 plus one working day is Monday 16:00, or
        Tuesday 16:00 when that Monday is a bank holiday, whatever the clocks did over the weekend.
        """
        if self.iso is not None:
            return start + self.duration
        local = start.astimezone(calendar.time_zone)
        day, remaining = local.date(), self.working_days
        while remaining:
            day += timedelta(days=1)
            if calendar.is_working_day(day):
                remaining -= 1
        due = datetime.combine(day, local.time(), tzinfo=calendar.time_zone)
        return due.astimezone(start.tzinfo)

    def as_json(self) -> str | dict[str, int]:
        """The span as the catalogue writes it."""
        return self.iso if self.iso is not None else {"working_days": self.working_days}

    def describe(self) -> str:
        """In words: ``4 hours``, ``1 working day``, ``1 day 12 hours``."""
        if self.iso is None:
            return _count(self.working_days, "working day")
        days, hours, minutes = self._parts()
        units = ((days, "day"), (hours, "hour"), (minutes, "minute"))
        return " ".join(_count(n, unit) for n, unit in units if n)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
