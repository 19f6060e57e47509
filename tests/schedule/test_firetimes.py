"""Fire times: crontab meaning, wall-clock slots across DST, epoch-aligned intervals, at."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from daemon.schedule import Schedule
from daemon.schedule.firetimes import make_trigger, next_fire_times, slots_between, wall_to_instant

NEW_YORK, BERLIN, SYDNEY = "America/New_York", "Europe/Berlin", "Australia/Sydney"
TUESDAY = datetime(2026, 11, 24, tzinfo=UTC)  # "today"
ONE_US = timedelta(microseconds=1)


def schedule(timezone: str = "UTC", **trigger) -> Schedule:
    return Schedule(id="s", file=Path("s.toml"), pipeline="p", timezone=timezone, **trigger)


def local(timezone: str, day: date, hh_mm: str = "00:00", fold: int = 0) -> datetime:
    hour, minute = map(int, hh_mm.split(":"))
    return datetime(
        day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(timezone), fold=fold
    )


def day_bounds(timezone: str, day: date) -> tuple[datetime, datetime]:
    """(local midnight, next local midnight): slots_between gives that day's slots."""
    return local(timezone, day), local(timezone, day + timedelta(days=1))


def hours_long(timezone: str, day: date) -> float:
    start, end = day_bounds(timezone, day)
    return (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() / 3600


def walls(slots: list[datetime]) -> list[str]:
    return [slot.strftime("%H:%M") for slot in slots]


def quarter_hours(first: str, last: str) -> list[str]:
    start = datetime.strptime(first, "%H:%M")
    stop = datetime.strptime(last, "%H:%M")
    steps = int((stop - start) / timedelta(minutes=15)) + 1
    return [(start + i * timedelta(minutes=15)).strftime("%H:%M") for i in range(steps)]


# (zone, the day a wall-clock hour repeats, a time in that hour, its first-pass offset)
FALL_BACK = [
    (NEW_YORK, date(2026, 11, 1), "01:30", "-04:00"),
    (NEW_YORK, date(2027, 11, 7), "01:30", "-04:00"),
    (BERLIN, date(2026, 10, 25), "02:30", "+02:00"),
    (BERLIN, date(2027, 10, 31), "02:30", "+02:00"),
    (SYDNEY, date(2026, 4, 5), "02:30", "+11:00"),
    (SYDNEY, date(2027, 4, 4), "02:30", "+11:00"),
]
# (zone, the day a wall-clock hour is skipped, a time in the gap, the first instant after it)
SPRING_FORWARD = [
    (NEW_YORK, date(2026, 3, 8), "02:30", "03:00:00-04:00"),
    (NEW_YORK, date(2027, 3, 14), "02:30", "03:00:00-04:00"),
    (BERLIN, date(2026, 3, 29), "02:30", "03:00:00+02:00"),
    (BERLIN, date(2027, 3, 28), "02:30", "03:00:00+02:00"),
    (SYDNEY, date(2026, 10, 4), "02:30", "03:00:00+11:00"),
    (SYDNEY, date(2027, 10, 3), "02:30", "03:00:00+11:00"),
]


# --------------------------------------------------------------------------- the tables


@pytest.mark.parametrize(("zone", "day", "wall", "offset"), FALL_BACK)
def test_fall_back_a_daily_slot_in_the_repeated_hour_fires_once_in_the_first_pass(
    zone, day, wall, offset
):
    assert hours_long(zone, day) == 25  # the table is right: this day repeats an hour
    minute, hour = wall.split(":")[1], wall.split(":")[0]
    daily = schedule(zone, cron=f"{minute} {hour} * * *")
    [slot] = slots_between(daily, *day_bounds(zone, day))
    assert slot.isoformat() == f"{day.isoformat()}T{wall}:00{offset}"
    after = local(zone, day - timedelta(days=1), "12:00")
    assert [s.date() for s in next_fire_times(daily, after, 3)] == [
        day,
        day + timedelta(days=1),
        day + timedelta(days=2),
    ]


@pytest.mark.parametrize(("zone", "day", "wall", "offset"), FALL_BACK)
def test_fall_back_quarter_hours_fire_in_both_passes(zone, day, wall, offset):
    """A wildcard job follows real time (cronie): the repeated hour fires twice."""
    repeated = wall.split(":")[0]
    every_15m = schedule(zone, cron="*/15 * * * *")
    slots = slots_between(every_15m, local(zone, day), local(zone, day, "04:00"))
    first_pass = quarter_hours("00:15", f"{repeated}:45")
    second_pass = quarter_hours(f"{repeated}:00", "04:00")
    assert walls(slots) == first_pass + second_pass
    utc = [slot.astimezone(UTC) for slot in slots]
    assert all(b - a == timedelta(minutes=15) for a, b in zip(utc, utc[1:], strict=False))


@pytest.mark.parametrize(("zone", "day", "wall", "after_gap"), SPRING_FORWARD)
def test_spring_forward_a_slot_in_the_gap_fires_once_at_the_first_instant_after_it(
    zone, day, wall, after_gap
):
    assert hours_long(zone, day) == 23
    minute, hour = wall.split(":")[1], wall.split(":")[0]
    daily = schedule(zone, cron=f"{minute} {hour} * * *")
    [slot] = slots_between(daily, *day_bounds(zone, day))
    assert slot.isoformat() == f"{day.isoformat()}T{after_gap}"
    [next_day] = slots_between(daily, *day_bounds(zone, day + timedelta(days=1)))
    assert next_day.strftime("%H:%M") == wall


@pytest.mark.parametrize(("zone", "day", "wall", "after_gap"), SPRING_FORWARD)
def test_spring_forward_gap_slots_and_the_slot_after_the_gap_are_one_fire(
    zone, day, wall, after_gap
):
    every_15m = schedule(zone, cron="*/15 * * * *")
    slots = slots_between(every_15m, local(zone, day), local(zone, day, "04:00"))
    assert walls(slots) == quarter_hours("00:15", "01:45") + quarter_hours("03:00", "04:00")


@pytest.mark.parametrize(
    ("zone", "day", "hourly_slots", "interval_slots"),
    [
        (NEW_YORK, date(2026, 11, 1), 25, 25),
        (NEW_YORK, date(2026, 3, 8), 23, 23),
        (BERLIN, date(2026, 10, 25), 25, 25),
        (BERLIN, date(2027, 3, 28), 23, 23),
        (SYDNEY, date(2027, 4, 4), 25, 25),
        (SYDNEY, date(2026, 10, 4), 23, 23),
        (BERLIN, date(2026, 11, 24), 24, 24),
    ],
)
def test_slots_between_across_a_dst_change(zone, day, hourly_slots, interval_slots):
    """Hourly cron follows real time, as cronie's: each hour that happens, the repeated
    one twice. Hourly interval: each elapsed hour."""
    hourly = slots_between(schedule(zone, cron="0 * * * *"), *day_bounds(zone, day))
    every_hour = slots_between(schedule(zone, interval_s=3600), *day_bounds(zone, day))
    assert (len(hourly), len(every_hour)) == (hourly_slots, interval_slots)
    assert len({s.astimezone(UTC) for s in hourly}) == hourly_slots  # distinct instants
    assert hourly[-1] == day_bounds(zone, day)[1]  # end is inclusive, start is not


@pytest.mark.parametrize(
    ("zone", "wall", "fold", "instant"),
    [
        (NEW_YORK, datetime(2026, 11, 1, 1, 30), 0, "2026-11-01T01:30:00-04:00"),
        (NEW_YORK, datetime(2026, 3, 8, 2, 0), 0, "2026-03-08T03:00:00-04:00"),
        (NEW_YORK, datetime(2026, 3, 8, 2, 59, 59), 0, "2026-03-08T03:00:00-04:00"),
        (BERLIN, datetime(2026, 3, 29, 2, 30), 0, "2026-03-29T03:00:00+02:00"),
        (SYDNEY, datetime(2026, 4, 5, 2, 30), 0, "2026-04-05T02:30:00+11:00"),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15), 0, "2026-10-04T02:30:00+11:00"),
        ("UTC", datetime(2026, 3, 29, 2, 30), 0, "2026-03-29T02:30:00+00:00"),
    ],
)
def test_wall_clock_time_to_instant(zone, wall, fold, instant):
    assert wall_to_instant(wall, ZoneInfo(zone)).isoformat() == instant


# --------------------------------------------------------------------------- crontab meaning


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 9 * * 1", ["2026-11-30 09:00 Mon", "2026-12-07 09:00 Mon"]),
        ("0 9 * * 0", ["2026-11-29 09:00 Sun", "2026-12-06 09:00 Sun"]),
        ("0 9 * * 7", ["2026-11-29 09:00 Sun", "2026-12-06 09:00 Sun"]),
        ("0 9 * * sun", ["2026-11-29 09:00 Sun", "2026-12-06 09:00 Sun"]),
        ("0 9 * * 2", ["2026-11-24 09:00 Tue", "2026-12-01 09:00 Tue"]),
        ("0 9 * * 6", ["2026-11-28 09:00 Sat", "2026-12-05 09:00 Sat"]),
        ("0 9 * * mon-fri", ["2026-11-24 09:00 Tue", "2026-11-25 09:00 Wed"]),
        ("0 9 * * 5-7", ["2026-11-27 09:00 Fri", "2026-11-28 09:00 Sat"]),
        ("0 0 1 * mon", ["2026-11-30 00:00 Mon", "2026-12-01 00:00 Tue", "2026-12-07 00:00 Mon"]),
        ("0 0 */10 * mon", ["2026-12-21 00:00 Mon", "2027-01-11 00:00 Mon"]),
        ("30 2 29 2 *", ["2028-02-29 02:30 Tue", "2032-02-29 02:30 Sun"]),
        ("@daily", ["2026-11-24 00:00 Tue", "2026-11-25 00:00 Wed"]),
        ("@monthly", ["2026-12-01 00:00 Tue", "2027-01-01 00:00 Fri"]),
        (
            "15,45 8-9 * * *",
            ["2026-11-24 08:15 Tue", "2026-11-24 08:45 Tue", "2026-11-24 09:15 Tue"],
        ),
    ],
)
def test_cron_expressions_mean_what_crontab_means(cron, expected):
    after = TUESDAY - timedelta(microseconds=1)
    slots = next_fire_times(schedule(cron=cron), after, len(expected))
    assert [s.strftime("%Y-%m-%d %H:%M %a") for s in slots] == expected


def test_a_leading_seconds_field():
    after = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    slots = next_fire_times(schedule(cron="*/20 * * * * *"), after, 4)
    assert [s.strftime("%H:%M:%S") for s in slots] == [
        "10:00:20",
        "10:00:40",
        "10:01:00",
        "10:01:20",
    ]


def test_cron_slots_are_in_the_schedule_timezone():
    [slot] = next_fire_times(schedule(BERLIN, cron="30 2 * * *"), TUESDAY, 1)
    assert slot.isoformat() == "2026-11-24T02:30:00+01:00"
    assert slot.astimezone(UTC) == datetime(2026, 11, 24, 1, 30, tzinfo=UTC)


# --------------------------------------------------------------------------- interval, at


@pytest.mark.parametrize(
    ("interval_s", "after", "expected"),
    [
        (300, "2026-11-24T10:02:03+00:00", ["10:05:00", "10:10:00", "10:15:00"]),
        (300, "2026-11-24T10:05:00+00:00", ["10:10:00", "10:15:00", "10:20:00"]),
        (300, "2026-11-24T11:02:03+01:00", ["10:05:00", "10:10:00", "10:15:00"]),
        (30, "2026-11-24T10:00:29.999+00:00", ["10:00:30", "10:01:00", "10:01:30"]),
        (3600, "2026-11-24T10:00:00.000001+00:00", ["11:00:00", "12:00:00", "13:00:00"]),
        (86400, "2026-11-24T10:00:00+00:00", ["00:00:00", "00:00:00", "00:00:00"]),
        (
            0.25,
            "2026-11-24T10:00:00.1+00:00",
            ["10:00:00.250000", "10:00:00.500000", "10:00:00.750000"],
        ),
    ],
)
def test_interval_slots_are_aligned_to_the_unix_epoch(interval_s, after, expected):
    slots = next_fire_times(schedule(interval_s=interval_s), datetime.fromisoformat(after), 3)
    fmt = "%H:%M:%S.%f" if interval_s < 1 else "%H:%M:%S"
    assert [s.astimezone(UTC).strftime(fmt) for s in slots] == expected


def test_interval_slots_are_the_same_whenever_the_daemon_starts():
    every_7s = schedule(interval_s=7)
    starts = [TUESDAY + timedelta(seconds=s) for s in (0.5, 3, 6.99, 100)]
    grids = [next_fire_times(every_7s, start, 30)[-1] for start in starts[:3]]
    assert all(slot.timestamp() % 7 == 0 for slot in grids)
    first = next_fire_times(every_7s, starts[0], 40)
    later = next_fire_times(every_7s, starts[3], 5)
    assert later == [slot for slot in first if slot > starts[3]][:5]


def test_an_at_schedule_fires_once_and_never_after_it_passed():
    at = datetime(2026, 12, 1, 9, tzinfo=ZoneInfo(BERLIN))
    once = schedule(BERLIN, at=at)
    assert next_fire_times(once, TUESDAY, 3) == [at]
    assert next_fire_times(once, at, 3) == []
    assert next_fire_times(once, at + timedelta(days=1), 1) == []
    assert slots_between(once, TUESDAY, at) == [at]
    assert slots_between(once, at, at + timedelta(days=1)) == []


def test_an_at_given_in_another_zone_is_shown_in_the_schedule_zone():
    once = schedule(NEW_YORK, at=datetime(2026, 12, 1, 9, tzinfo=ZoneInfo(BERLIN)))
    [slot] = next_fire_times(once, TUESDAY, 1)
    assert slot.isoformat() == "2026-12-01T03:00:00-05:00"


# --------------------------------------------------------------------------- slots_between


def test_slots_between_a_limit_keeps_the_newest_oldest_first():
    every_5m = schedule(NEW_YORK, cron="*/5 * * * *")
    start, end = local(NEW_YORK, date(2026, 10, 31)), local(NEW_YORK, date(2026, 11, 2))
    everything = slots_between(every_5m, start, end)
    assert len(everything) == 2 * 24 * 12 + 12  # the repeated hour counts twice (cronie)
    for limit in (0, 1, 7, 100, len(everything), len(everything) + 5):
        assert (
            slots_between(every_5m, start, end, limit=limit)
            == everything[len(everything) - min(limit, len(everything)) :]
        )
    with pytest.raises(ValueError, match="limit"):
        slots_between(every_5m, start, end, limit=-1)


def test_slots_between_after_a_long_downtime_is_quick_with_a_limit():
    every_second = schedule(NEW_YORK, cron="* * * * * *")
    started = time.perf_counter()
    slots = slots_between(every_second, TUESDAY - timedelta(days=365), TUESDAY, limit=3)
    assert time.perf_counter() - started < 1
    assert [s.astimezone(UTC) for s in slots] == [TUESDAY - timedelta(seconds=s) for s in (2, 1, 0)]


def test_slots_between_an_empty_or_backwards_range_is_empty():
    every_minute = schedule(cron="* * * * *")
    assert slots_between(every_minute, TUESDAY, TUESDAY) == []
    assert slots_between(every_minute, TUESDAY, TUESDAY - timedelta(hours=1)) == []


# --------------------------------------------------------------------------- the trigger


def test_the_trigger_returns_utc_slots_including_now_first_then_strictly_after():
    trigger = make_trigger(schedule(BERLIN, cron="30 2 * * *"))
    slot = datetime(2026, 11, 25, 1, 30, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, slot) == slot
    assert trigger.get_next_fire_time(None, slot).tzinfo is UTC
    assert trigger.get_next_fire_time(None, slot + timedelta(microseconds=1)) == slot + timedelta(
        days=1
    )
    # given the previous fire time, missed slots up to `now` are enumerated, as APScheduler expects
    assert trigger.get_next_fire_time(slot, slot + timedelta(days=5)) == slot + timedelta(days=1)
    assert str(trigger) == "cron '30 2 * * *' in Europe/Berlin"


def test_an_at_trigger_that_passed_has_no_fire_time():
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    trigger = make_trigger(schedule(at=at))
    assert trigger.get_next_fire_time(None, TUESDAY) == at
    assert trigger.get_next_fire_time(at, at) is None
    assert trigger.get_next_fire_time(None, at + timedelta(seconds=1)) is None


@pytest.mark.parametrize(
    ("zone", "cron", "start"),
    [
        (NEW_YORK, "30 1 * * *", "2026-10-31T12:00:00-04:00"),
        (NEW_YORK, "*/20 * * * *", "2026-11-01T00:30:00-04:00"),
        (BERLIN, "30 2 * * *", "2026-03-28T12:00:00+01:00"),
        (SYDNEY, "*/20 * * * *", "2026-04-05T01:30:00+11:00"),
    ],
)
def test_the_trigger_driven_like_the_scheduler_drives_it_matches_next_fire_times(zone, cron, start):
    every = schedule(zone, cron=cron)
    trigger = make_trigger(every)
    now = datetime.fromisoformat(start)
    fired = [trigger.get_next_fire_time(None, now)]
    while len(fired) < 12:
        now = fired[-1] + timedelta(milliseconds=1)  # it fires a little late
        fired.append(trigger.get_next_fire_time(fired[-1], now))
    assert fired == [
        s.astimezone(UTC)
        for s in next_fire_times(every, datetime.fromisoformat(start) - ONE_US, 12)
    ]
    assert len(set(fired)) == 12 and fired == sorted(fired)


def test_the_trigger_started_in_the_second_pass_of_a_repeated_hour():
    """A fixed job's wall-clock times in the repeated hour fired in the first pass; a
    wildcard job fires on in the second pass."""
    second_pass = datetime(2026, 11, 1, 1, 10, tzinfo=ZoneInfo(NEW_YORK), fold=1)
    for cron, expected in (
        ("15,45 1 * * *", "2026-11-02T01:15:00-05:00"),
        ("*/15 2 * * *", "2026-11-01T02:00:00-05:00"),
        ("*/15 * * * *", "2026-11-01T01:15:00-05:00"),
        ("* * * * * *", "2026-11-01T01:10:00-05:00"),
    ):
        fired = make_trigger(schedule(NEW_YORK, cron=cron)).get_next_fire_time(None, second_pass)
        assert fired.astimezone(ZoneInfo(NEW_YORK)).isoformat() == expected, cron


async def test_apscheduler_accepts_the_trigger():
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(timezone=ZoneInfo(BERLIN))
    scheduler.start(paused=True)
    try:
        job = scheduler.add_job(print, make_trigger(schedule(interval_s=3600)), id="s")
        expected = next_fire_times(schedule(interval_s=3600), datetime.now(UTC), 1)[0]
        assert job.next_run_time in (expected, expected - timedelta(hours=1))
    finally:
        scheduler.shutdown(wait=False)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="no timezone"):
        next_fire_times(schedule(cron="* * * * *"), datetime(2026, 11, 24), 1)


# --------------------------------------------------------------------------- why we wrap it


def test_apscheduler_3_cron_trigger_differs_from_cron_which_is_why_we_map_wall_clock_ourselves():
    """Measured on APScheduler 3.11.3. If this starts failing, APScheduler changed:
    re-check DESIGN.md's DST facts (our own rules are tested above either way)."""

    def aps_fires(cron: str, zone: str, start: datetime, n: int) -> list[str]:
        trigger = CronTrigger.from_crontab(cron, timezone=ZoneInfo(zone))
        fired, now = [], start
        for _ in range(n):
            fired.append(trigger.get_next_fire_time(fired[-1] if fired else None, now))
            now = (fired[-1].astimezone(UTC) + timedelta(milliseconds=1)).astimezone(ZoneInfo(zone))
        return [f.isoformat() for f in fired]

    # a daily 01:30 fires twice on the fall-back day: EDT and EST
    assert aps_fires("30 1 * * *", NEW_YORK, local(NEW_YORK, date(2026, 10, 31), "12:00"), 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    ]
    # a gap slot 02:30 fires at 02:30+01:00 = 03:30 CEST, not at 03:00
    [gap] = aps_fires("30 2 * * *", BERLIN, local(BERLIN, date(2026, 3, 28), "12:00"), 1)
    assert datetime.fromisoformat(gap).astimezone(ZoneInfo(BERLIN)).strftime("%H:%M") == "03:30"
    # crontab's 1 (Monday) is APScheduler 3's Tuesday
    [monday] = aps_fires("0 9 * * 1", "UTC", TUESDAY, 1)
    assert datetime.fromisoformat(monday).strftime("%a") == "Tue"


@pytest.mark.parametrize(
    ("fields", "days"),
    [
        ({"interval_s": 7.0}, 3),
        ({"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}, 2),
        ({"cron": "30 2 * * *", "timezone": "America/New_York"}, 400),
    ],
)
def test_count_slots_agrees_with_listing_them(fields, days):
    from daemon.schedule.firetimes import count_slots

    schedule = Schedule(id="c", file=Path("c.toml"), pipeline="p", **fields)
    end = datetime(2026, 11, 2, 12, tzinfo=UTC)  # spans New York's fall-back
    start = end - timedelta(days=days)
    listed = slots_between(schedule, start, end)
    assert count_slots(schedule, start, end, cap=10**6) == len(listed)
    assert count_slots(schedule, start, end, cap=len(listed) - 1) in (None, len(listed))
