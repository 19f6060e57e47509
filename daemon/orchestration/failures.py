"""`pause_after_failures = N`: a schedule that keeps failing pauses itself.

After N runs of a schedule in a row ended `failed`, `timed_out` or `crashed`, the
schedule is paused as by `flowerd pause` (persisted, with a reason: `paused_reason` in
`flowerd schedules --json` and `flowerd status`), the daemon's log says why, and a
`paused` notification goes out. `flowerd resume` starts it again. "In a row" is counted
from the history (History.failures_in_a_row), so it is right across restarts.

A run-event listener: it looks only when a run of such a schedule ends in a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime

from daemon.history import History
from daemon.runner.events import RunEvent
from daemon.schedule import Schedule

log = logging.getLogger("daemon.failures")  # its name before the move

FAILURE_STATES = frozenset({"failed", "timed_out", "crashed"})


def pause_reason(count: int) -> str:
    return (
        f"paused itself: {count} runs in a row ended failed, timed_out or crashed "
        f"(pause_after_failures = {count}); `flowerd resume` starts it again"
    )


class FailurePolicy:
    """Attach to the runner's events. Given the callables it uses (as Upstream is):
    `paused()` and `schedules()` now, `pause(schedule, reason)` persisted, `notify_state`
    the notifier's, `spawn` the runner's; `history` counts the failures in a row."""

    def __init__(
        self,
        *,
        history: History,
        paused: Callable[[], set[str]],
        schedules: Callable[[], Mapping[str, Schedule]],
        pause: Callable[[Schedule, str], Awaitable[None]],
        notify_state: Callable[[Schedule, str, str], None],
        spawn: Callable[[Coroutine], asyncio.Task],
    ):
        self.history = history
        self._paused = paused
        self._schedules = schedules
        self._pause = pause
        self._notify_state = notify_state
        self._spawn = spawn
        self.resumed_at: dict[str, datetime] = {}  # a resume gives N fresh tries

    def resumed(self, schedule_id: str) -> None:
        self.resumed_at[schedule_id] = datetime.now(UTC)

    def on_event(self, event: RunEvent) -> None:
        schedule = event.schedule
        limit = getattr(schedule, "pause_after_failures", 0)
        if event.kind != "finished" or not limit or event.status not in FAILURE_STATES:
            return
        if schedule.id not in self._paused():
            self._spawn(self._check(schedule, limit))

    async def _check(self, schedule: Schedule, limit: int) -> None:
        since = self.resumed_at.get(schedule.id)
        streak = await self.history.failures_in_a_row(schedule.id, limit=limit, since=since)
        current = self._schedules().get(schedule.id)
        if streak < limit or current is None or schedule.id in self._paused():
            return
        reason = pause_reason(limit)
        await self._pause(current, reason)
        log.warning("schedule %s %s", schedule.id, reason)
        self._notify_state(current, "paused", reason)
