"""Durations and points in time as users write them: `30s`, `5m`, `2h`, `7d`, ISO-8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

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


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 with offset, in UTC (the history's JSON format)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()
