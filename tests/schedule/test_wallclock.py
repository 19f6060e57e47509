"""daemon.schedule.wallclock: the next wall-clock time of a cron spec, the same as
APScheduler's CronTrigger run in UTC (no DST) -- what firetimes stepped with before."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger

from daemon.schedule.cron import CronSpec, parse_cron
from daemon.schedule.wallclock import WallClock


def _listed(values: tuple[int, ...], size: int) -> str:
    return "*" if len(values) == size else ",".join(map(str, values))


def aps_next(spec: CronSpec, wall: datetime) -> datetime | None:
    """APScheduler's answer: one CronTrigger per day rule (cron's OR: two), in UTC."""
    if spec.days_or_weekdays:
        pairs = [(spec.days, tuple(range(7))), (tuple(range(1, 32)), spec.weekdays)]
    else:
        pairs = [(spec.days, spec.weekdays)]
    found = []
    for days, weekdays in pairs:
        trigger = CronTrigger(
            month=_listed(spec.months, 12),
            day=_listed(days, 31),
            day_of_week=_listed(tuple(sorted((d - 1) % 7 for d in weekdays)), 7),
            hour=_listed(spec.hours, 24),
            minute=_listed(spec.minutes, 60),
            second=_listed(spec.seconds, 60),
            timezone=UTC,
        )
        found.append(trigger.get_next_fire_time(None, wall.replace(tzinfo=UTC)))
    times = [t for t in found if t is not None]
    return min(times).replace(tzinfo=None) if times else None


def _field(rng: random.Random, low: int, high: int) -> str:
    roll = rng.random()
    if roll < 0.3:
        return "*"
    if roll < 0.45:
        return f"*/{rng.randint(1, high - low)}"
    if roll < 0.6:
        first = rng.randint(low, high)
        return f"{first}-{rng.randint(first, high)}"
    return ",".join(str(rng.randint(low, high)) for _ in range(rng.randint(1, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_random_specs_step_as_apscheduler_does(seed: int) -> None:
    rng = random.Random(seed)
    checked = 0
    while checked < 150:
        fields = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
        expression = " ".join(_field(rng, low, high) for low, high in fields)
        try:
            spec = parse_cron(expression)
        except ValueError:
            continue
        offset = timedelta(seconds=rng.randint(0, 10 * 365 * 86400))
        wall = datetime(2020, 1, 1) + offset + timedelta(microseconds=rng.choice([0, 1, 999_999]))
        assert WallClock.of(spec).first_at_or_after(wall) == aps_next(spec, wall), expression
        checked += 1


@pytest.mark.parametrize(
    ("expression", "wall", "expected"),
    [
        ("0 0 29 2 *", datetime(2025, 3, 1), datetime(2028, 2, 29)),  # the next leap day
        ("0 0 1 * mon", datetime(2026, 12, 2), datetime(2026, 12, 7)),  # cron's day OR weekday
        ("0 0 */28 9 4", datetime(2022, 10, 19), datetime(2033, 9, 1)),  # 11 years on
        ("30 2 * * *", datetime(2026, 12, 7, 2, 30), datetime(2026, 12, 7, 2, 30)),  # at: itself
        ("30 2 * * *", datetime(2026, 12, 7, 2, 30, 0, 1), datetime(2026, 12, 8, 2, 30)),
        ("59 23 31 12 *", datetime(2026, 12, 31, 23, 59, 1), datetime(2027, 12, 31, 23, 59)),
    ],
)
def test_known_steps(expression: str, wall: datetime, expected: datetime) -> None:
    spec = parse_cron(expression)
    assert WallClock.of(spec).first_at_or_after(wall) == expected == aps_next(spec, wall)
