"""The next wall-clock time a cron expression names, stepped field by field.

A `CronSpec` holds explicit value sets, so the first matching naive time at or after a
given one is found by skipping whole months, days, hours and minutes that do not match
-- a few microseconds, against ~100 µs for APScheduler's CronTrigger, which
daemon.schedule.firetimes used for this before: `flowerd schedules` with 10,000 schedules
asks for 30,000 fire times. Naive datetimes: no DST here; daemon.schedule.firetimes maps
a wall-clock time to its instant. Pinned to APScheduler's answers by
tests/schedule/test_wallclock.py.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.schedule.cron import CronSpec

ONE_SECOND = timedelta(seconds=1)
ONE_DAY = timedelta(days=1)
SEARCH_YEARS = 400  # the Gregorian cycle: what matches no day in 400 years never does


@dataclass(frozen=True, slots=True)
class WallClock:
    """Steps through the wall-clock times of one CronSpec (cron's day rule included)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    days: frozenset[int]
    weekdays: frozenset[int]  # Python's numbering: Monday = 0
    days_or_weekdays: bool

    @classmethod
    def of(cls, spec: CronSpec) -> WallClock:
        return cls(
            seconds=spec.seconds,
            minutes=spec.minutes,
            hours=spec.hours,
            months=frozenset(spec.months),
            days=frozenset(spec.days),
            weekdays=frozenset((day - 1) % 7 for day in spec.weekdays),  # cron: Sunday = 0
            days_or_weekdays=spec.days_or_weekdays,
        )

    def first_at_or_after(self, wall: datetime) -> datetime | None:
        """The first wall-clock time at or after the naive `wall` (whole seconds)."""
        moment = wall.replace(microsecond=0)
        if moment < wall:
            moment += ONE_SECOND
        last_year = moment.year + SEARCH_YEARS
        while moment.year <= last_year:
            step = self._mismatch(moment)
            if step is None:
                return moment
            moment = step
        return None

    def _mismatch(self, moment: datetime) -> datetime | None:
        """None when `moment` matches; else the next time that might."""
        if moment.month not in self.months:
            if moment.month == 12:
                return datetime(moment.year + 1, 1, 1)
            return datetime(moment.year, moment.month + 1, 1)
        if not self._day_matches(moment):
            return datetime(moment.year, moment.month, moment.day) + ONE_DAY
        hour = _at_least(self.hours, moment.hour)
        if hour is None:
            return datetime(moment.year, moment.month, moment.day) + ONE_DAY
        if hour != moment.hour:
            return moment.replace(hour=hour, minute=0, second=0)
        minute = _at_least(self.minutes, moment.minute)
        if minute is None:
            return moment.replace(minute=0, second=0) + timedelta(hours=1)
        if minute != moment.minute:
            return moment.replace(minute=minute, second=0)
        second = _at_least(self.seconds, moment.second)
        if second is None:
            return moment.replace(second=0) + timedelta(minutes=1)
        if second != moment.second:
            return moment.replace(second=second)
        return None

    def _day_matches(self, moment: datetime) -> bool:
        by_day = moment.day in self.days
        by_weekday = moment.weekday() in self.weekdays
        return (by_day or by_weekday) if self.days_or_weekdays else (by_day and by_weekday)


def _at_least(values: tuple[int, ...], value: int) -> int | None:
    """The first of the sorted `values` that is >= `value`."""
    index = bisect_left(values, value)
    return values[index] if index < len(values) else None
