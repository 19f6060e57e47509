"""The runs going now: what `flowerd status` lists, what overlap and deadlines ask
("is a run of this schedule going, or being claimed?"), and what the drain waits for.
Held by the Runner (daemon.runner.runner); its parts track a run when its row is claimed
and untrack it when its terminal row is written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from daemon.pipeline import Attempts
from daemon.schedule import Schedule


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class ActiveRun:
    """A run the daemon is carrying out now (for `flowerd status` and the drain)."""

    run_id: int
    schedule: str | None
    pipeline: str
    scheduled_at: datetime | None
    task: asyncio.Task
    trigger: str = "schedule"
    spec: Schedule | None = None  # the schedule record (None for `flowerd run`)
    started_at: datetime | None = None
    attempts: Attempts = field(default_factory=Attempts)
    release: Callable[[], None] | None = None  # frees its concurrency slot
    asked_at: datetime = field(default_factory=utcnow)  # a manual run's `scheduled_at` input
    background: bool = False  # a backfill's run: scheduled slots never wait or skip for it
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # its pipeline returned
    traceparent: str | None = None  # W3C, from whoever asked for it (a webhook)
    track: Any = None  # its tracking (execute.RunTrack, daemon.observe), if the runner has it

    def free_slot(self) -> None:
        """Give back the concurrency slot (once): history writes never hold one."""
        release, self.release = self.release, None
        if release is not None:
            release()

    def describe(self) -> dict:
        return {
            "id": self.run_id,
            "schedule": self.schedule,
            "pipeline": self.pipeline,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "attempts": self.attempts.count,
        }


_OF_SPEC = object()  # track: the schedule id is the spec's


class Ledger:
    """`active` by run id; per schedule, its runs going (backfill runs apart) and its
    slots being claimed. `on_change` is called when a run starts or ends."""

    def __init__(self, on_change: Callable[[], None] = lambda: None):
        self.active: dict[int, ActiveRun] = {}
        self._going: Counter[str] = Counter()  # per schedule: its active non-backfill runs
        self._claiming: dict[str, int] = defaultdict(int)
        self.changed = on_change

    def track(
        self,
        run_id,
        pipeline,
        schedule,
        scheduled_at,
        trigger,
        *,
        background=False,
        schedule_id=_OF_SPEC,
    ) -> ActiveRun:
        """`schedule_id`: the row's schedule where it is not `schedule`'s (a rerun of a
        schedule no longer in the files)."""
        if schedule_id is _OF_SPEC:
            schedule_id = schedule.id if schedule else None
        active = ActiveRun(
            run_id=run_id,
            schedule=schedule_id,
            pipeline=pipeline,
            scheduled_at=scheduled_at,
            task=asyncio.current_task(),
            trigger=trigger,
            spec=schedule,
            background=background,
        )
        self.active[run_id] = active
        if active.schedule is not None and not background:
            self._going[active.schedule] += 1
        self.changed()
        return active

    def untrack(self, active: ActiveRun) -> None:
        active.ended.set()
        if self.active.pop(active.run_id, None) is None:
            return
        if active.schedule is not None and not active.background:
            self._going[active.schedule] -= 1
            if not self._going[active.schedule]:
                del self._going[active.schedule]

    @contextlib.contextmanager
    def claiming_slot(self, schedule_id: str) -> Iterator[None]:
        """While a slot's claim is written: the schedule is busy from the first moment,
        before the first await."""
        self._claiming[schedule_id] += 1
        try:
            yield
        finally:
            self._claiming[schedule_id] -= 1

    def claiming(self, schedule_id: str) -> bool:
        """A slot of the schedule is being claimed (its row not yet written)."""
        return bool(self._claiming[schedule_id])

    def busy(self, schedule_id: str) -> bool:
        """A run of the schedule is going (backfill runs do not count: a scheduled slot
        neither waits nor skips for them)."""
        return bool(self._claiming[schedule_id] or self._going[schedule_id])

    def of_schedule(self, schedule_id: str) -> list[int]:
        return [r.run_id for r in self.active.values() if r.schedule == schedule_id]
