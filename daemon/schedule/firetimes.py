"""Schedule -> fire times ("slots"), and the daylight-saving rules.

A slot is the *unjittered* instant a schedule fires at; the runner sleeps the jitter
and the history keys runs by `(schedule, slot)`. The rules:

cron -- a slot is a LOCAL WALL-CLOCK time in the schedule's timezone, as with cron:
  * 5 fields `minute hour day-of-month month day-of-week` (or 6, with a leading
    seconds field; or `@daily` & co.). Day of week as in crontab: 0 and 7 are Sunday,
    1 is Monday, names work (APScheduler 3's own numbering starts at Monday = 0, so
    `CronTrigger.from_crontab('0 9 * * 1')` fires on *Tuesdays*; we translate).
    When both day fields are restricted, a day matches if EITHER does (crontab's rule).
  * DST, as cronie (Debian cron) does it. A job whose minute or hour field starts with
    `*` (`@hourly`, `0 */2 * * *`, `*/15 * * * *`; cronie's MIN_STAR / HR_STAR
    "wildcard" jobs) follows REAL TIME: every instant whose local wall-clock time
    matches is a slot -- on a fall-back day it fires in both passes of the repeated
    hour (01:30 EDT and 01:30 EST are two instants, so two slots), and a wall-clock time
    in a skipped hour has no slot. A job with fixed minutes and hours fires once per
    wall-clock time:
  * fixed jobs, DST fall-back (a wall-clock hour happens twice): each wall-clock slot
    fires once, in the FIRST pass (fold=0). A daily `30 1 * * *` in America/New_York
    fires at 01:30 EDT and not at 01:30 EST.
  * fixed jobs, DST spring-forward (a wall-clock hour is skipped): a slot inside the
    gap fires once, at the first valid instant after the gap: `30 2 * * *` in
    Europe/Berlin on the last Sunday of March fires at 03:00 CEST. Several gap slots
    (`15,45 2 * * *`) and a slot at the gap's end (03:00) are all that one instant, so
    they fire once.
interval -- slots are aligned to the Unix epoch: `epoch + k * interval` (every 5m fires
  at :00, :05, ... UTC), so they are the same across restarts. They are elapsed time,
  so DST does not touch them (an interval of 1d fires at 00:00 UTC, not local midnight).
at -- one slot; none once it has passed.

What APScheduler 3.11.3's CronTrigger does instead (measured; pinned by
tests/schedule/test_firetimes.py): a daily 01:30 in America/New_York fires at 01:30 EDT *and* 01:30
EST on 2026-11-01 (same for 02:30 Berlin / Sydney on their fall-back days); `*/20` fires
in both passes; a gap slot 02:30 Berlin fires at 03:30 CEST (02:30 with the old
offset), not 03:00; `from_crontab('0 9 * * 1')` fires on Tuesdays. We step through
wall-clock times ourselves (daemon.schedule.wallclock: naive, no DST; 10x quicker than
its CronTrigger run in UTC, which we used to do, and pinned to its answers) and map each
wall-clock time to an instant ourselves.

Times: `make_trigger`'s trigger returns UTC datetimes, on purpose -- Python compares
two datetimes with the *same* tzinfo by wall clock and ignores `fold` (PEP 495), so an
01:30 EST slot would look earlier than 01:45 EDT. `next_fire_times` and `slots_between`
return times in the schedule's zone for display; compare them with that in mind (or
`.astimezone(UTC)` first).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from daemon.schedule import Schedule
from daemon.schedule.calendars import excluded_reason
from daemon.schedule.cron import CronSpec, parse_cron
from daemon.schedule.wallclock import WallClock

__all__ = ["SlotTrigger", "make_trigger", "next_fire_times", "slots_between", "wall_to_instant"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EXCLUDED_SKIPS = 100_000  # `--next` past excluded dates: an every-second schedule's day
ONE_US = timedelta(microseconds=1)
RECENT_ANSWERS = 16  # a cron rule's last answers, kept


class SlotRule(Protocol):
    def first_slot(self, after: datetime, *, inclusive: bool) -> datetime | None:
        """The first slot at/after `after` (a UTC datetime), as a UTC datetime."""


# --------------------------------------------------------------------------- public API


class SlotTrigger(BaseTrigger):
    """An APScheduler trigger that fires on a schedule's slots (see the module doc)."""

    __slots__ = ("description", "rule")

    def __init__(self, rule: SlotRule, description: str):
        self.rule = rule
        self.description = description

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None:
            return self.rule.first_slot(_utc(now), inclusive=True)
        return self.rule.first_slot(_utc(previous_fire_time), inclusive=False)

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"<SlotTrigger ({self.description})>"


def make_trigger(schedule: Schedule) -> SlotTrigger:
    """The trigger `runner/scheduler.py` registers: the slots of `schedule`, as UTC datetimes."""
    return SlotTrigger(_rule(schedule), f"{schedule.describe_trigger()} in {schedule.timezone}")


def next_fire_times(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    """The next `n` slots strictly after `after`, in the schedule's zone ([] once an
    `at` has passed)."""
    if not schedule.has_clock:  # `after`: its upstreams' slots; events: none ahead
        return []
    rule, zone = _rule(schedule), ZoneInfo(schedule.timezone)
    slots: list[datetime] = []
    slot: datetime | None = _utc(after)
    skips = MAX_EXCLUDED_SKIPS  # excluded dates (daemon.schedule.calendars) are left out, bounded
    while len(slots) < n and slot is not None and skips:
        slot = rule.first_slot(slot, inclusive=False)
        if slot is None:
            break
        if excluded_reason(schedule, slot) is None:
            slots.append(slot.astimezone(zone))
        else:
            skips -= 1
    return slots


def slots_between(
    schedule: Schedule, start: datetime, end: datetime, *, limit: int | None = None
) -> list[datetime]:
    """The slots with `start < slot <= end`, oldest first, in the schedule's zone.

    With `limit`, only the NEWEST `limit` of them (still oldest first): catch-up after
    a long downtime needs the latest slot without walking a million older ones."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    if not schedule.has_clock:  # no slots of its own: catch-up has nothing to do for it
        return []
    rule, zone = _rule(schedule), ZoneInfo(schedule.timezone)
    start_utc, end_utc = _utc(start), _utc(end)
    if limit is None:
        slots = list(_slots(rule, start_utc, end_utc))
    else:
        slots = _newest_slots(rule, start_utc, end_utc, limit)
    return [slot.astimezone(zone) for slot in slots]


def count_slots(schedule: Schedule, start: datetime, end: datetime, *, cap: int) -> int | None:
    """How many slots lie in `start < slot <= end`: exact arithmetic for intervals, a walk
    of at most `cap` slots otherwise (None: more than `cap`)."""
    if not schedule.has_clock:
        return 0
    rule, start_utc, end_utc = _rule(schedule), _utc(start), _utc(end)
    if isinstance(rule, IntervalRule):
        return max(0, rule.index(end_utc) - rule.index(start_utc))
    count = sum(1 for _ in itertools.islice(_slots(rule, start_utc, end_utc), cap + 1))
    return None if count > cap else count


# --------------------------------------------------------------------------- slot rules


@functools.lru_cache(maxsize=4096)  # 10,000 schedules share their rules
def _cached_rule(kind: str, when: object, timezone: str) -> SlotRule:
    zone = ZoneInfo(timezone)
    if kind == "cron":
        return CronRule.of(parse_cron(str(when)), zone)
    if kind == "interval":
        return IntervalRule(step_us=max(1, round(float(when) * 1_000_000)))  # type: ignore[arg-type]
    return AtRule(at=_utc(when))  # type: ignore[arg-type]


def _rule(schedule: Schedule) -> SlotRule:
    when = {"cron": schedule.cron, "interval": schedule.interval_s, "at": schedule.at}
    kind = schedule.trigger_kind
    return _cached_rule(kind, when[kind], schedule.timezone)


@dataclass(frozen=True)
class AtRule:
    at: datetime  # UTC

    def first_slot(self, after: datetime, *, inclusive: bool) -> datetime | None:
        if self.at > after or (inclusive and self.at == after):
            return self.at
        return None


@dataclass(frozen=True)
class IntervalRule:
    step_us: int  # slots are EPOCH + k * step_us microseconds

    def index(self, moment: datetime) -> int:
        """k of the last slot at or before `moment`."""
        return ((moment - EPOCH) // ONE_US) // self.step_us

    def first_slot(self, after: datetime, *, inclusive: bool) -> datetime:
        since_us = (after - EPOCH) // ONE_US
        k = -(-since_us // self.step_us) if inclusive else since_us // self.step_us + 1
        return EPOCH + timedelta(microseconds=k * self.step_us)


@dataclass(frozen=True)
class CronRule:
    """Steps through wall-clock slots (daemon.schedule.wallclock: naive, no DST), then
    maps each wall-clock time to an instant in `zone` by our rules."""

    zone: ZoneInfo
    walls: WallClock  # its times are wall-clock times in `zone`
    real_time: bool = False  # cronie's wildcard job: every matching instant is a slot

    # schedules that share a rule ask it the same (`flowerd schedules`: 10,000 from now)
    _recent: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, spec: CronSpec, zone: ZoneInfo) -> CronRule:
        return cls(zone=zone, walls=WallClock.of(spec), real_time=follows_real_time(spec))

    def first_slot(self, after: datetime, *, inclusive: bool) -> datetime | None:
        key = (after, inclusive)
        try:
            return self._recent[key]
        except KeyError:
            pass
        found = self._first_slot(after, inclusive=inclusive)
        if len(self._recent) >= RECENT_ANSWERS:
            self._recent.clear()
        self._recent[key] = found
        return found

    def _first_slot(self, after: datetime, *, inclusive: bool) -> datetime | None:
        if self.real_time:
            return self._first_real(after, inclusive=inclusive)
        candidate = self._wall_slot(_wall(after, self.zone), inclusive=True)
        while candidate is not None:
            instant = wall_to_instant(candidate, self.zone).astimezone(UTC)
            if instant > after or (inclusive and instant == after):
                return instant
            if instant < after:  # `after` is in the second pass of a repeated hour
                fold_end = max(_fold_end_wall(after, self.zone), candidate + ONE_US)
                candidate = self._wall_slot(fold_end, inclusive=True)
            else:
                candidate = self._wall_slot(candidate, inclusive=False)
        return None

    def _first_real(self, after: datetime, *, inclusive: bool) -> datetime | None:
        """The first instant after `after` whose wall-clock time is a slot. Away from a
        DST change the wall clock is `after`'s shifted by one offset (the fast path);
        near one, every wall-clock slot within the change's reach is mapped to each of
        its instants (none in a gap, two in a fold) and the earliest wins."""
        offset = after.astimezone(self.zone).utcoffset()
        wall = self._wall_slot(_wall(after, self.zone), inclusive=inclusive)
        if wall is None:
            return None
        instant = (wall - offset).replace(tzinfo=UTC)
        if (
            instant - after <= _SAME_OFFSET_SPAN
            and instant.astimezone(self.zone).utcoffset() == offset
        ):
            return instant
        return self._first_real_near_change(after, inclusive=inclusive)

    def _first_real_near_change(self, after: datetime, *, inclusive: bool) -> datetime | None:
        best: datetime | None = None
        wall = self._wall_slot(_wall(after, self.zone) - _DST_REACH, inclusive=True)
        while wall is not None and (best is None or wall <= _wall(best, self.zone) + _DST_REACH):
            for fold in (0, 1):
                moment = wall.replace(tzinfo=self.zone, fold=fold)
                if _wall(moment, self.zone) != wall:
                    continue  # in a gap: this wall-clock time never happens
                moment = moment.astimezone(UTC)
                later = moment > after or (inclusive and moment == after)
                if later and (best is None or moment < best):
                    best = moment
            wall = self._wall_slot(wall, inclusive=False)
        return best

    def _wall_slot(self, wall: datetime, *, inclusive: bool) -> datetime | None:
        """The first wall-clock slot at/after the naive wall-clock time `wall`."""
        return self.walls.first_at_or_after(wall if inclusive else wall + ONE_US)


_SAME_OFFSET_SPAN = timedelta(hours=12)  # DST changes are months apart: same offset at both
# ends of a shorter span means none in between
_DST_REACH = timedelta(hours=3)  # no DST change moves the wall clock by more


def follows_real_time(spec: CronSpec) -> bool:
    """cronie's wildcard job: its minute or hour field starts with `*` (`@hourly` too)."""
    text = spec.expression.strip().lower()
    if text.startswith("@"):
        return text == "@hourly"
    minute, hour = text.split()[-5:][:2]
    return minute.startswith("*") or hour.startswith("*")


# --------------------------------------------------------------------------- wall clock


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in `zone` -> the instant it names, by our DST rules:
    a repeated time is its first occurrence (fold=0); a time in a spring-forward gap
    becomes the first instant after the gap."""
    first = wall.replace(tzinfo=zone, fold=0)
    if _wall(first, zone) == wall:
        return first
    before_gap = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)  # old offset: earlier
    return _first_with_offset_of(first.astimezone(UTC), before_gap, zone).astimezone(zone)


def _fold_end_wall(after: datetime, zone: ZoneInfo) -> datetime:
    """`after` is in the second pass of a repeated hour; the wall-clock time at which
    that hour stops repeating (02:00 for New York's 01:00-01:59 fold)."""
    first_pass = _wall(after, zone).replace(tzinfo=zone, fold=0).astimezone(UTC)
    transition = _first_with_offset_of(after, first_pass, zone)
    return _wall(transition - ONE_US, zone) + ONE_US


def _first_with_offset_of(later: datetime, earlier: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (earlier, later] whose UTC offset is that of `later`: the
    transition between them (binary search to the second; tzdata changes on seconds)."""
    offset = later.astimezone(zone).utcoffset()
    low_s, high_s = int((earlier - EPOCH).total_seconds()), int((later - EPOCH).total_seconds())
    while high_s - low_s > 1:
        middle_s = (low_s + high_s) // 2
        if (EPOCH + timedelta(seconds=middle_s)).astimezone(zone).utcoffset() == offset:
            high_s = middle_s
        else:
            low_s = middle_s
    return EPOCH + timedelta(seconds=high_s)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time of `moment` in `zone`. Through UTC: `astimezone` to a
    datetime's own tzinfo returns it unchanged, even a non-existent gap time."""
    return moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no timezone; give an aware datetime")
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- ranges


def _slots(rule: SlotRule, start: datetime, end: datetime) -> Iterator[datetime]:
    slot = rule.first_slot(start, inclusive=False)
    while slot is not None and slot <= end:
        yield slot
        slot = rule.first_slot(slot, inclusive=False)


def _newest_slots(rule: SlotRule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """The newest `limit` slots in (start, end]: look back from `end` in a window that
    grows until it holds `limit` slots or reaches `start`."""
    if limit == 0:
        return []
    first = rule.first_slot(start, inclusive=False)
    second = rule.first_slot(first, inclusive=False) if first is not None else None
    if first is None or second is None:
        return list(_slots(rule, start, end))[-limit:]
    window = (second - first) * limit
    while True:
        low = max(start, end - window)
        slots = list(_slots(rule, low, end))
        if len(slots) >= limit or low == start:
            return slots[-limit:]
        window *= 4
