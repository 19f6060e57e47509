"""`deadline = "45m"`: a slot not finished this long after its time is told once as `late`.

When a slot fires, a timer is set for slot + deadline (`loop.call_at`: no polling). If the
slot's run is still queued or running when it goes off, the schedule is told `late` once
(a notification when its `notify_on` holds `late`; `flowerd_runs_late_total{schedule}`; a
log line). The run goes on -- `timeout` is what stops runs. A run that finishes first
cancels its timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from daemon.runner.events import RunEvent

log = logging.getLogger("daemon.deadlines")  # its name before the move

Key = tuple[str, datetime]


class Deadlines:
    """`arm(schedule, slot)` as slots fire; attach `on_event` to the runner's events.
    `waiting(schedule_id, slot)` says whether the slot's run is still queued or running;
    `on_late(schedule, slot, message)` is called once per slot past its deadline."""

    def __init__(
        self,
        *,
        waiting: Callable[[str, datetime], bool],
        on_late: Callable[[Any, datetime, str], None],
    ):
        self._waiting = waiting
        self._on_late = on_late
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def arm(self, schedule: Any, slot: datetime) -> None:
        deadline_s = getattr(schedule, "deadline_s", 0)
        if not deadline_s:
            return
        key = (schedule.id, slot.astimezone(UTC))
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, slot.timestamp() + deadline_s - time.time())
        self._timers[key] = loop.call_at(loop.time() + delay_s, self._due, schedule, key)

    def on_event(self, event: RunEvent) -> None:
        if event.kind != "finished" or event.scheduled_at is None or event.schedule is None:
            return
        handle = self._timers.pop((event.schedule_id, event.scheduled_at.astimezone(UTC)), None)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _due(self, schedule: Any, key: Key) -> None:
        self._timers.pop(key, None)
        schedule_id, slot = key
        if not self._waiting(schedule_id, slot):
            return
        message = (
            f"the slot {slot.isoformat()} is not finished {schedule.deadline_s:g} s after its "
            "time (deadline); it goes on running"
        )
        log.warning("schedule %s is late: %s", schedule_id, message)
        self._on_late(schedule, slot, message)
