"""Deadline lengths from the purpose catalogue: a fixed duration, or a number of working days.

Local safeguarding procedures set some deadlines in working days ("a referral is acknowledged
within one working day") and others in hours ("the referrer hears the decision within 24
hours"; "imminent harm within the hour"), so the catalogue accepts both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# ISO 8601 durations limited to days, hours and minutes: months and years have no fixed length.
_DURATION = re.compile(r"^P(?=\d|T\d)(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?)?$")


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

    def due_from(self, start: datetime) -> datetime:
        """The moment this span after ``start`` ends.

        Working days are Monday to Friday in ``start``'s time zone: the deadline is the same time
        of day on the n-th following weekday (Friday 16:00 plus one working day is Monday 16:00).
        Bank holidays are not known here.
        """
        if self.iso is not None:
            return start + self.duration
        moment, remaining = start, self.working_days
        while remaining:
            moment += timedelta(days=1)
            if moment.weekday() < 5:
                remaining -= 1
        return moment

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
