"""What several commands share: reading the history, times, next fires."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from daemon.errors import FlowerdError, HistoryError, UsageError
from daemon.settings import Settings

STATUS_STYLES = {
    "success": "green",
    "failed": "red",
    "timed_out": "red",
    "crashed": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
    "missed": "magenta",
    "running": "cyan",
    "queued": "blue",
}


async def _read_history(url: str, query):
    from daemon.history import SCHEMA_REVISION, History

    async with History.open(url, readonly=True) as history:
        if history.schema_revision not in (None, SCHEMA_REVISION):
            raise HistoryError(
                f"{history.label}: the history is at schema revision "
                f"{history.schema_revision}, older than this flowerd's {SCHEMA_REVISION}; "
                "run `flowerd db upgrade` (a restarted daemon upgrades it too)"
            )
        return await query(history)


def _instant(
    flag: str, text: str | None, *, zone: tzinfo = UTC, until: bool = False
) -> datetime | None:
    """A time a flag gives, naive in `zone`; as `until` (an exclusive end) a bare date
    includes that whole day."""
    from daemon.durations import parse_instant, parse_until

    if text is None:
        return None
    try:
        return (parse_until if until else parse_instant)(text, zone=zone)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _iso(moment: datetime | None) -> str | None:
    from daemon.durations import iso

    return iso(moment)


def _with_next_fires(rows: list[dict], settings: Settings, paused: set[str]) -> list[dict]:
    """Add `next_fire` to each schedule's row, and rows for schedules with no runs yet.
    Blank (None) when the schedule files are invalid or the schedule does not fire."""
    configured = _configured_schedules(settings)
    known = {row["schedule"] for row in rows}
    for schedule_id, schedule in configured.items():
        if schedule_id not in known:
            rows.append(_no_runs_row(schedule_id, schedule.pipeline))
    now = datetime.now(UTC)
    for row in rows:
        schedule = configured.get(row["schedule"])
        row["next_fire"] = _next_fire(schedule, now, row["schedule"] in paused)
        row["paused"] = row["schedule"] in paused
    return sorted(rows, key=lambda row: row["schedule"])


def project_schedules(settings: Settings) -> list:
    """The schedules of the project's files, with the settings' timezone, isolation and
    [defaults] where a schedule sets none (ScheduleError lists every problem)."""
    from daemon.schedule import load_schedules

    return load_schedules(
        settings.schedules_dir,
        default_timezone=settings.timezone,
        default_isolation=settings.isolation,
        defaults=settings.defaults,
    )


def _configured_schedules(settings: Settings) -> dict:
    defaults = json.dumps(settings.defaults, sort_keys=True, default=str)  # hashable
    return _schedules_in(settings.schedules_dir, settings.timezone, settings.isolation, defaults)


@functools.cache  # `stats` asks twice (next fires, then the zones of its table)
def _schedules_in(directory: Path, timezone: str, isolation: str, defaults: str) -> dict:
    if not directory.is_dir():
        return {}  # no schedules: the schedule layer (pydantic models, cron) stays unloaded
    from daemon.schedule import load_schedules

    try:
        found = load_schedules(
            directory,
            default_timezone=timezone,
            default_isolation=isolation,
            defaults=json.loads(defaults),
        )
    except (FlowerdError, OSError):
        return {}  # stats still answer from the history alone
    return {schedule.id: schedule for schedule in found}


def _next_fire(schedule, now: datetime, paused: bool) -> str | None:  # noqa: ANN001
    if schedule is None or paused or not schedule.enabled:
        return None
    from daemon.schedule.firetimes import next_fire_times

    fires = next_fire_times(schedule, now, 1)
    return _iso(fires[0]) if fires else None


def _no_runs_row(schedule_id: str, pipeline: str) -> dict:
    return {
        "kind": "schedule",
        "name": schedule_id,
        "schedule": schedule_id,
        "pipeline": pipeline,
        "runs": 0,
        "successes": 0,
        "failures": 0,
        "cancelled": 0,
        "skipped": 0,
        "missed": 0,
        "success_rate": None,
        "p50_s": None,
        "p95_s": None,
        "last_status": None,
        "last_at": None,
    }
