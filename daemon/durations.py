"""Durations, points in time and sizes as users write them: `30s`, `5m`, ISO-8601, `2GiB`."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_duration_s(text: str | int | float) -> float:
    """`30`, `30s`, `5m`, `1.5h`, `7d`, `2w` -> seconds. ValueError on anything else."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(
                f"{text!r} is not a duration; write seconds or <n>s, <n>m, <n>h, <n>d, <n>w"
            )
        seconds = float(match[1]) * _UNITS_S[(match[2] or "s").lower()]
    if seconds < 0:
        raise ValueError(f"{text!r}: a duration cannot be negative")
    return seconds


def format_seconds(seconds: float) -> str:
    """90 -> '90s', 300 -> '5m', 7200 -> '2h', 86400 -> '1d', 0.5 -> '0.5s'."""
    for unit, size_s in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size_s and seconds % size_s == 0:
            return f"{int(seconds // size_s)}{unit}"
    return f"{seconds:g}s"


_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int) -> int:
    """`2GiB`, `512MiB`, `1.5GB`, `4096B` or an integer number of bytes -> bytes.
    ValueError names the text and the units."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE.match(str(text))
        unit = _SIZE_UNITS.get(match[2].lower()) if match else None
        if unit is None:
            raise ValueError(
                f"{text!r} is not a size; write a number and a unit: B, KiB, MiB, GiB, TiB "
                "(powers of 1024) or KB, MB, GB, TB (powers of 1000), e.g. '2GiB'"
            )
        size = int(float(match[1]) * unit)
    if size <= 0:
        raise ValueError(f"{text!r}: a size must be more than 0 bytes")
    return size


def format_bytes(size: int) -> str:
    """2147483648 -> '2GiB', 1500000 -> '1.43MiB', 100 -> '100B'."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        step = _SIZE_UNITS[unit.lower()]
        if size >= step:
            return f"{size / step:.3g}{unit}"
    return f"{size}B"


def parse_instant(text: str, *, now: datetime | None = None, zone: tzinfo = UTC) -> datetime:
    """A point in time: ISO-8601 (naive means `zone`, UTC by default) or a duration
    meaning 'that long ago'."""
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_duration_s(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO-8601 (2026-11-24T02:30:00+01:00) "
            "nor a duration ago (30m, 2h, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def parse_until(text: str, *, now: datetime | None = None, zone: tzinfo = UTC) -> datetime:
    """The end of a range, exclusive: a bare date (`2026-12-04`) means that whole day in
    `zone`, so its end is the next day's midnight there; anything else as parse_instant."""
    day = _bare_date(text)
    if day is None:
        return parse_instant(text, now=now, zone=zone)
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)


def parse_last(text: str, *, now: datetime | None = None, zone: tzinfo = UTC) -> datetime:
    """The end of a range, inclusive (`backfill --to`): a bare date is the last moment of
    that day in `zone`; a time is the bound itself."""
    if _bare_date(text) is None:
        return parse_instant(text, now=now, zone=zone)
    return parse_until(text, now=now, zone=zone) - timedelta(microseconds=1)


def _bare_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


def shown_iso(moment: datetime, zone: tzinfo, timespec: str = "auto") -> str:
    """A time for people (README, "What you see"): ISO-8601 in `zone` -- the schedule's
    timezone, else the `timezone` setting -- with its offset shown."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).isoformat(timespec=timespec)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 with offset, in UTC (the history's JSON format)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago`, `in 4m` -- relative times for tables."""
    if moment is None:
        return "-"
    delta_s = ((now or datetime.now(UTC)) - moment).total_seconds()
    future, delta_s = delta_s < 0, abs(delta_s)
    for unit, size_s in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta_s >= size_s:
            amount = f"{int(delta_s // size_s)}{unit}"
            break
    else:
        amount = f"{int(delta_s)}s"
    return f"in {amount}" if future else f"{amount} ago"
