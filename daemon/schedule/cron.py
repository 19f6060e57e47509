"""Cron expressions parsed into the explicit value sets daemon.schedule.firetimes schedules from.

Five fields (or six with leading seconds) and the @macros; `L`, `W`, `#` and `?` are
refused by name; errors (ValueError) name the field and the token, and the schedule
loader turns them into a line naming the file, the schedule and the field `cron`. Parsed
by hand rather than with APScheduler's `CronTrigger.from_crontab` (see parse_cron).
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class CronSpec:
    """A cron expression as explicit value sets. `weekdays` use cron's numbering:
    0 = Sunday ... 6 = Saturday (7 is read as Sunday too).

    `days_or_weekdays`: both day fields are restricted (neither starts with `*`), so
    a day matches when EITHER matches -- cron's rule (`0 0 1 * mon` = the 1st and
    every Monday)."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    days_or_weekdays: bool


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (name in messages, lowest, highest, names allowed)
_FIELDS = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DAY_NAMES),
)
_ITEM = re.compile(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\w+))?")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists


@functools.lru_cache(maxsize=4096)  # validation and the trigger parse it; specs are frozen
def parse_cron(expression: str) -> CronSpec:
    """`'30 2 * * *'` (5 fields), or 6 with a leading seconds field, or `@daily` & co.

    Parsed by hand rather than with APScheduler's `CronTrigger.from_crontab`, which reads
    day-of-week 1 as Tuesday (measured on 3.11.3: `0 9 * * 1` fired on Tuesdays), lacks
    cron's day-of-month OR day-of-week rule, and names no field in its errors. The
    explicit value sets are then stepped by APScheduler's CronTrigger in daemon.schedule.firetimes.

    ValueError says what is wrong, e.g. "minute 61 out of 0-59"."""
    text = _MACROS.get(expression.strip().lower(), expression)
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ValueError(
            f"{len(parts)} fields; want 5 (minute hour day-of-month month day-of-week) "
            "or 6 (a leading seconds field)"
        )
    values = [_expand(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = tuple(sorted({day % 7 for day in values[5]}))
    spec = CronSpec(
        expression=expression.strip(),
        seconds=values[0],
        minutes=values[1],
        hours=values[2],
        days=values[3],
        months=values[4],
        weekdays=weekdays,
        days_or_weekdays=not parts[3].startswith("*") and not parts[5].startswith("*"),
    )
    if not spec.days_or_weekdays and not _some_day_exists(spec):
        raise ValueError("it never fires: no month given has that day")
    return spec


def _some_day_exists(spec: CronSpec) -> bool:
    return any(day <= _DAYS_IN_MONTH[month - 1] for month in spec.months for day in spec.days)


def _expand(part: str, name: str, low: int, high: int, names: Mapping[str, int]) -> tuple[int, ...]:
    values: set[int] = set()
    for item in part.split(","):
        match = _ITEM.fullmatch(item)
        if not match:
            raise ValueError(f"{name}: cannot read {item!r}")
        star, first, last, step = match.groups()
        every = _number(step, name, 1, None, {}) if step else 1
        if star:
            start, stop = low, high
        else:
            start = _number(first, name, low, high, names)
            stop = _number(last, name, low, high, names) if last else (high if step else start)
        if start > stop:
            raise ValueError(f"{name}: range {item!r} runs backwards")
        values.update(range(start, stop + 1, every))
    return tuple(sorted(values))


def _number(token: str, name: str, low: int, high: int | None, names: Mapping[str, int]) -> int:
    if token.lower() in names:
        return names[token.lower()]
    if not token.isdigit():
        raise ValueError(f"{name}: {token!r} is not a number")
    value = int(token)
    if high is None and value < low:
        raise ValueError(f"{name}: step {value} must be at least {low}")
    if high is not None and not low <= value <= high:
        raise ValueError(f"{name} {value} out of {low}-{high}")
    return value
