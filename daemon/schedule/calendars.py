"""Calendars: the dates whose slots do not run (`exclude`, `holidays`).

A schedule's `exclude` lists dates and `holidays` names a country ("DE") or a country and
subdivision ("DE-BY") whose public holidays are excluded too, from the maintained
`holidays` package (a hand-kept list runs out at year's end). Dates are in the schedule's
timezone. An excluded slot is recorded `skipped` with error type `Excluded`, and
`flowerd schedules --next` leaves it out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from daemon.errors import did_you_mean

EXCLUDED = "Excluded"  # the error type of an excluded slot's `skipped` row


def parse_date(value: object) -> date:
    """A TOML date (`2026-12-24`) or a string "2026-12-24"; ValueError otherwise."""
    if isinstance(value, datetime):
        raise ValueError(f"{value.isoformat()} is a date-time; give a date (2026-12-24)")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f'{value!r} is not a date (write "2026-12-24")')


def check_holidays(name: str) -> str:
    """ "DE" or "DE-BY" if the `holidays` package knows it; ValueError with a did-you-mean
    otherwise."""
    country, _, subdivision = name.strip().partition("-")
    supported = _supported()
    if country not in supported:
        raise ValueError(
            f"unknown country {country!r} for holidays (an ISO 3166 code such as 'DE', "
            f"'US', 'FR'){_suggest(country, supported)}"
        )
    if subdivision and subdivision not in supported[country]:
        known = supported[country]
        listed = ", ".join(known[:40]) or "none"
        raise ValueError(
            f"{country} has no subdivision {subdivision!r} (its subdivisions: {listed})"
            f"{_suggest(subdivision, known)}"
        )
    return name.strip()


def _suggest(word: str, known) -> str:
    """Did-you-mean for codes: "de" -> 'DE'; else the closest spellings."""
    same_letters = [code for code in known if code.upper() == word.upper()]
    if same_letters:
        return did_you_mean(same_letters[0], same_letters)
    return did_you_mean(word, known)


@functools.cache
def _supported() -> dict[str, list[str]]:
    import holidays

    return holidays.list_supported_countries()


@functools.cache
def _calendar(name: str):
    import holidays

    country, _, subdivision = name.partition("-")
    return holidays.country_holidays(country, subdiv=subdivision or None)


def holiday_name(name: str | None, day: date) -> str | None:
    """The holiday's name on `day` in calendar `name` ("DE", "DE-BY"), or None."""
    if not name:
        return None
    return _calendar(name).get(day)


def excluded_reason(schedule, slot: datetime) -> str | None:
    """Why `slot` does not run (its date, in the schedule's zone, is excluded), or None."""
    if not schedule.exclude and not schedule.holidays:
        return None
    day = slot.astimezone(ZoneInfo(schedule.timezone)).date()
    if day in schedule.exclude:
        return f"excluded: {day.isoformat()} is in the schedule's exclude list"
    holiday = holiday_name(schedule.holidays, day)
    if holiday is not None:
        return f"excluded: {day.isoformat()} is a public holiday in {schedule.holidays} ({holiday})"
    return None


def included(schedule, slots: Iterable[datetime]) -> Iterable[datetime]:
    """The slots that are not excluded."""
    return (slot for slot in slots if excluded_reason(schedule, slot) is None)
