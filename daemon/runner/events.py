"""The runner's edges: what notifications, metrics and run logs hang off.

The runner emits one `RunEvent` when a run starts and one when any row of it reaches a
terminal state (a run that finished, or a slot recorded `missed` / `skipped` / `cancelled`
without running). Listeners are plain callables, called on the event loop in the order
they were added; they must be quick (schedule their own async work) -- a listener that
raises is logged with its traceback and never fails the run or the other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.history import RunError

log = logging.getLogger("daemon.events")  # its name before the move


@dataclass(frozen=True, kw_only=True, slots=True)
class RunEvent:
    """`kind` is 'started' or 'finished'. `run_id` is None for a slot whose row was not
    written (already in the history). `schedule` is the Schedule record or None."""

    kind: str
    run_id: int | None
    schedule: Any
    pipeline: str
    trigger: str
    status: str
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: RunError | None = None
    result: Any = None

    @property
    def schedule_id(self) -> str | None:
        return getattr(self.schedule, "id", None)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Listeners:
    """A fan-out of RunEvents to the callables added."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[RunEvent], None]] = []

    def add(self, listener: Callable[[RunEvent], None]) -> None:
        self._listeners.append(listener)

    def remove(self, listener: Callable[[RunEvent], None]) -> None:
        self._listeners.remove(listener)

    def emit(self, event: RunEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a run-event listener (%r) failed on run %s", listener, event.run_id)

    def __bool__(self) -> bool:
        return bool(self._listeners)


def finished_event(record: Any, schedule: Any = None) -> RunEvent:
    """The 'finished' event of a row written without the runner (a run found `crashed`
    at start-up, a slot recorded `missed` by catch-up)."""
    return RunEvent(
        kind="finished",
        run_id=record.id,
        schedule=schedule,
        pipeline=record.pipeline,
        trigger=record.trigger,
        status=record.status,
        scheduled_at=record.scheduled_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempts=record.attempts,
        error=record.error,
    )
