"""Cron across DST exactly as cronie (Debian cron) runs it, in five zones.

A job whose minute or hour field starts with `*` (cronie's MIN_STAR / HR_STAR "wildcard"
jobs: `@hourly`, `0 */2 * * *`, `*/15 * * * *`) follows real time: on a fall-back day it
fires in both passes of the repeated hour, and a skipped hour has no slot. A job with fixed
minutes and hours fires once per wall-clock time: the first pass on a fall-back day, the
first instant after the gap on a spring-forward day.

Three references: explicit tables; a minute-by-minute model of cronie's main loop (every
zone, Lord Howe's 30-minute change included); and cronsim, which implements cronie's rules
-- for the zones whose change is an hour (cronsim steps hours of 3600 s, so on Lord Howe it
skips instants that happen, e.g. 02:00+10:30 on 2026-04-05: the model is the reference
there).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.schedule import Schedule, parse_cron
from daemon.schedule.firetimes import follows_real_time, slots_between

NEW_YORK, BERLIN, LONDON = "America/New_York", "Europe/Berlin", "Europe/London"
SYDNEY, LORD_HOWE = "Australia/Sydney", "Australia/Lord_Howe"

# (zone, spring-forward day, fall-back day) in 2026
DST_DAYS = [
    (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
    (BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
    (LONDON, date(2026, 3, 29), date(2026, 10, 25)),
    (SYDNEY, date(2026, 10, 4), date(2026, 4, 5)),
    (LORD_HOWE, date(2026, 10, 4), date(2026, 4, 5)),
]
EXPRESSIONS = [
    "0 * * * *",
    "@hourly",
    "0 */2 * * *",
    "*/15 * * * *",
    "30 * * * *",
    "10 */3 * * *",
    "* 2 * * *",
    "*/30 1 * * *",
    "0 0 * * *",
    "30 1 * * *",
    "45 1 * * *",
    "0 2 * * *",
    "30 2 * * *",
    "15,45 2 * * *",
    "0 3 * * *",
]


def _schedule(zone: str, cron: str) -> Schedule:
    return Schedule(id="s", file=Path("s.toml"), pipeline="p", cron=cron, timezone=zone)


def _window(zone: str, day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)) - timedelta(hours=6)
    return start, start + timedelta(hours=36)


def _ours(zone: str, cron: str, day: date) -> list[datetime]:
    return [s.astimezone(UTC) for s in slots_between(_schedule(zone, cron), *_window(zone, day))]


def _cronie(zone: str, cron: str, day: date) -> list[datetime]:
    """cronie's main loop, minute by minute in real time: wildcard jobs run when the
    current local minute matches; fixed jobs run once per wall-clock minute -- not again
    when the clock falls back over minutes already seen, and for every minute the clock
    jumped over at the first minute after the jump."""
    spec, zone_info = parse_cron(cron), ZoneInfo(zone)
    start, end = (t.astimezone(UTC) for t in _window(zone, day))
    wild = follows_real_time(spec)
    fired: list[datetime] = []
    moment = start + timedelta(minutes=1)
    last_wall = start.astimezone(zone_info).replace(tzinfo=None)
    while moment <= end:
        wall = moment.astimezone(zone_info).replace(tzinfo=None)
        if wild:
            walls = [wall]
        elif wall <= last_wall:
            walls = []  # fallen back: fixed jobs already ran for these minutes
        else:
            walls = [last_wall + timedelta(minutes=i + 1) for i in _minutes(last_wall, wall)]
        if any(_matches(spec, w) for w in walls):
            fired.append(moment)
        last_wall = max(last_wall, wall)
        moment += timedelta(minutes=1)
    return fired


def _minutes(since: datetime, until: datetime) -> range:
    return range(int((until - since) / timedelta(minutes=1)))


def _matches(spec, wall: datetime) -> bool:
    weekday = (wall.weekday() + 1) % 7
    day_ok = (
        (wall.day in spec.days or weekday in spec.weekdays)
        if spec.days_or_weekdays
        else (wall.day in spec.days and weekday in spec.weekdays)
    )
    return (
        wall.minute in spec.minutes and wall.hour in spec.hours
        and wall.month in spec.months and day_ok
    )  # fmt: skip


@pytest.mark.parametrize(("zone", "spring", "fall"), DST_DAYS)
@pytest.mark.parametrize("cron", EXPRESSIONS)
def test_every_zone_and_job_matches_cronies_main_loop(zone, spring, fall, cron):
    for day in (spring, fall):
        assert _ours(zone, cron, day) == _cronie(zone, cron, day), (zone, day, cron)


@pytest.mark.parametrize(("zone", "spring", "fall"), [d for d in DST_DAYS if d[0] != LORD_HOWE])
@pytest.mark.parametrize("cron", EXPRESSIONS)
def test_hour_long_changes_match_cronsim(zone, spring, fall, cron):
    from cronsim import CronSim

    for day in (spring, fall):
        start, end = _window(zone, day)
        found, it = set(), CronSim(cron.replace("@hourly", "0 * * * *"), start)
        while (moment := next(it).astimezone(UTC)) <= end.astimezone(UTC):
            found.add(moment)  # cronsim repeats a fixed job's gap slots: one instant
        assert _ours(zone, cron, day) == sorted(found), (zone, day, cron)


def _local(zone: str, day: date, slots: list[datetime], hours: tuple[int, ...]) -> list[str]:
    """The slots on `day` whose local hour is in `hours`, as local ISO times."""
    shown = [s.astimezone(ZoneInfo(zone)) for s in slots]
    return [s.isoformat(timespec="minutes") for s in shown if s.date() == day and s.hour in hours]


# (zone, day, cron, local hours shown, the slots in those hours)
TABLE = [
    # fall-back: wildcard jobs fire in both passes, fixed jobs in the first only
    (NEW_YORK, date(2026, 11, 1), "@hourly", (1, 2),
     ["2026-11-01T01:00-04:00", "2026-11-01T01:00-05:00", "2026-11-01T02:00-05:00"]),
    (NEW_YORK, date(2026, 11, 1), "30 1 * * *", (1,), ["2026-11-01T01:30-04:00"]),
    (BERLIN, date(2026, 10, 25), "0 */2 * * *", (2,),
     ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00"]),
    (BERLIN, date(2026, 10, 25), "30 2 * * *", (2,), ["2026-10-25T02:30+02:00"]),
    (LONDON, date(2026, 10, 25), "30 * * * *", (1,),
     ["2026-10-25T01:30+01:00", "2026-10-25T01:30+00:00"]),
    (LONDON, date(2026, 10, 25), "30 1 * * *", (1,), ["2026-10-25T01:30+01:00"]),
    (SYDNEY, date(2026, 4, 5), "@hourly", (2,),
     ["2026-04-05T02:00+11:00", "2026-04-05T02:00+10:00"]),
    (SYDNEY, date(2026, 4, 5), "0 2 * * *", (2,), ["2026-04-05T02:00+11:00"]),
    (LORD_HOWE, date(2026, 4, 5), "30 * * * *", (1,),
     ["2026-04-05T01:30+11:00", "2026-04-05T01:30+10:30"]),
    (LORD_HOWE, date(2026, 4, 5), "0 */2 * * *", (0, 2), ["2026-04-05T00:00+11:00",
     "2026-04-05T02:00+10:30"]),
    (LORD_HOWE, date(2026, 4, 5), "45 1 * * *", (1,), ["2026-04-05T01:45+11:00"]),
    # spring-forward: wildcard jobs have no slot in the gap; fixed ones fire after it
    (NEW_YORK, date(2026, 3, 8), "@hourly", (1, 2, 3),
     ["2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00"]),
    (NEW_YORK, date(2026, 3, 8), "30 2 * * *", (2, 3), ["2026-03-08T03:00-04:00"]),
    (BERLIN, date(2026, 3, 29), "*/30 * * * *", (1, 2, 3),
     ["2026-03-29T01:00+01:00", "2026-03-29T01:30+01:00", "2026-03-29T03:00+02:00",
      "2026-03-29T03:30+02:00"]),
    (BERLIN, date(2026, 3, 29), "15,45 2 * * *", (2, 3), ["2026-03-29T03:00+02:00"]),
    (LONDON, date(2026, 3, 29), "0 */2 * * *", (0, 1, 2),
     ["2026-03-29T00:00+00:00", "2026-03-29T02:00+01:00"]),
    (LONDON, date(2026, 3, 29), "30 1 * * *", (1, 2), ["2026-03-29T02:00+01:00"]),
    (SYDNEY, date(2026, 10, 4), "@hourly", (1, 2, 3),
     ["2026-10-04T01:00+10:00", "2026-10-04T03:00+11:00"]),
    (SYDNEY, date(2026, 10, 4), "30 2 * * *", (2, 3), ["2026-10-04T03:00+11:00"]),
    (LORD_HOWE, date(2026, 10, 4), "*/15 * * * *", (2,),
     ["2026-10-04T02:30+11:00", "2026-10-04T02:45+11:00"]),
    (LORD_HOWE, date(2026, 10, 4), "15 2 * * *", (2,), ["2026-10-04T02:30+11:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "day", "cron", "hours", "expected"), TABLE)
def test_dst_table(zone, day, cron, hours, expected):
    assert _local(zone, day, _ours(zone, cron, day), hours) == expected


def test_the_two_passes_of_a_repeated_slot_are_two_slot_keys():
    slots = slots_between(_schedule(NEW_YORK, "30 * * * *"), *_window(NEW_YORK, date(2026, 11, 1)))
    repeated = [s for s in slots if s.strftime("%Y-%m-%d %H:%M") == "2026-11-01 01:30"]
    assert len(repeated) == 2 and len({s.astimezone(UTC) for s in repeated}) == 2


@pytest.mark.parametrize(
    ("cron", "wild"),
    [("@hourly", True), ("0 */2 * * *", True), ("*/5 3 * * *", True), ("* * * * *", True),
     ("@daily", False), ("30 2 * * *", False), ("0 1,13 * * *", False), ("0 0 2 * * *", False),
     ("0 * 2 * * *", True)],
)  # fmt: skip
def test_which_jobs_follow_real_time(cron, wild):
    assert follows_real_time(parse_cron(cron)) is wild


# The three cases where cronsim differs (issue 22): on Lord Howe's 30-minute change cronsim
# steps whole hours of 3,600 s from the instant before the change and so jumps over a
# slot that happens. cronie's main loop (src/cron.c) reads the local minute each minute:
# a jump forward of 31 minutes is its "medium" wake-up (wildcard jobs for the current
# minute, fixed jobs for each minute jumped over), a jump back of 29 its "negative" one
# (wildcard jobs only, until the clock passes the minutes already seen) -- the same rule
# as for an hour, so `0 */3` fires at 03:00 local on both change days.
HALF_HOUR_CASES = [
    ("0 */3 * * *", "2026-04-04T12:00:00+00:00",
     ["2026-04-05T00:00:00+11:00", "2026-04-05T03:00:00+10:30", "2026-04-05T06:00:00+10:30"]),
    ("0 */2 * * *", "2026-04-04T12:00:00+00:00",
     ["2026-04-05T00:00:00+11:00", "2026-04-05T02:00:00+10:30", "2026-04-05T04:00:00+10:30"]),
    ("0 */3 * * *", "2026-10-03T12:00:00+00:00",
     ["2026-10-04T00:00:00+10:30", "2026-10-04T03:00:00+11:00", "2026-10-04T06:00:00+11:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("cron", "start", "expected"), HALF_HOUR_CASES)
def test_lord_howes_half_hour_change_follows_cronies_main_loop(cron, start, expected):
    since = datetime.fromisoformat(start)
    ours = slots_between(_schedule(LORD_HOWE, cron), since, since + timedelta(hours=20))
    assert [s.isoformat() for s in ours[:3]] == expected
    day = datetime.fromisoformat(expected[1]).date()
    model = [s for s in _cronie(LORD_HOWE, cron, day) if s > since]
    assert [s.astimezone(UTC) for s in ours[:3]] == model[:3]
