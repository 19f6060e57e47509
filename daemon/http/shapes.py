"""JSON shapes shared by the CLI's `--json` and the HTTP API, so both print the same.

A run's JSON is `RunRecord.to_json()` (daemon.history); a schedule's is built here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def schedule_json(
    schedule: Any,
    paused: bool,
    after: datetime,
    next_n: int,
    paused_reason: str | None = None,
    *,
    loaded: bool,
    pending: int = 0,
) -> dict:
    """`flowerd schedules --json` (and `GET /api/schedules`): one schedule, its state and
    its next `next_n` fire times after `after` (none while paused or disabled). `loaded`:
    the running daemon fires this very schedule (false when the files say otherwise, or
    no daemon runs it yet). An event schedule: `on_file` (what it watches) or `on_webhook`
    (where to POST; the secret as ***), and `pending`
    (its events recorded, not started yet)."""
    from daemon.schedule.firetimes import next_fire_times

    fires = schedule.enabled and not paused
    return {
        "id": schedule.id,
        "pipeline": schedule.pipeline,
        "file": str(schedule.file),
        "trigger": schedule.describe_trigger(),
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "paused": paused,
        "paused_reason": paused_reason if paused else None,
        "pool": schedule.pool,
        "after": list(schedule.after),
        "async_driver": schedule.async_driver,
        "next": [t.isoformat() for t in next_fire_times(schedule, after, next_n)] if fires else [],
        "loaded": loaded,
        "on_file": schedule.on_file.to_json() if schedule.on_file is not None else None,
        "on_webhook": schedule.on_webhook.to_json(schedule.id) if schedule.on_webhook else None,
        "pending": pending if schedule.event_triggers else None,
    }


def run_detail_json(record: Any, reruns: list[int]) -> dict:
    """`flowerd runs show ID --json` (and `GET /api/runs/{id}`): the run's contract JSON
    and the ids of the runs that repeat it."""
    return {**record.to_json(), "reruns": reruns}
