"""Fires slots: the only module that drives APScheduler's AsyncIOScheduler.

APScheduler 3 decides *when*; it never decides whether a slot runs. Its defaults would
drop late slots silently (misfire_grace_time 1 s), coalesce them, refuse them at
max_instances, and cancel running coroutines on shutdown without waiting. So every job
is handed to `_SlotExecutor`, which passes each due slot time straight to the runner;
the runner applies misfire grace, overlap and concurrency and records every outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from daemon.schedule import Schedule
from daemon.schedule.firetimes import make_trigger

log = logging.getLogger("daemon.scheduler")  # its name before the move

OnSlot = Callable[[Schedule, datetime], None]


class _SlotExecutor(BaseExecutor):
    """Hands every due run time of a job to `on_slot` (on the event loop, immediately).
    APScheduler's own misfire / max_instances bookkeeping is bypassed on purpose."""

    def __init__(self, on_slot: Callable[[str, datetime], None]):
        super().__init__()
        self._on_slot = on_slot

    def submit_job(self, job, run_times: list[datetime]) -> None:
        for run_time in run_times:
            self._on_slot(job.id, run_time)

    def _do_submit_job(self, job, run_times) -> None:  # pragma: no cover - not used
        raise NotImplementedError


def _never_called() -> None:  # the job's callable: slots go through _SlotExecutor
    raise AssertionError("flowerd jobs are executed by the slot executor")


class Scheduler:
    """One APScheduler job per enabled schedule; fires `on_slot(schedule, slot_time)`."""

    def __init__(self, on_slot: OnSlot):
        self._on_slot = on_slot
        self._schedules: dict[str, Schedule] = {}
        self._after: dict[str, Schedule] = {}  # those with `after`: asked on every success
        self._aps = AsyncIOScheduler(
            executors={"default": _SlotExecutor(self._fire)},
            job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": None},
        )

    # -- lifecycle ------------------------------------------------------------------
    def start(
        self,
        schedules: Iterable[Schedule],
        *,
        paused: set[str] = frozenset(),
        since: datetime | None = None,
        first: dict[str, datetime] | None = None,
    ) -> None:
        """Start firing. With `since` (where catch-up stopped looking), the first slot of
        each job is the first one at or after it, so no slot falls between the two;
        `first` gives some schedules an earlier start (slots already due fire at once)."""
        first = first or {}
        for schedule in schedules:
            start = first.get(schedule.id, since)
            self.add(schedule, paused=schedule.id in paused, since=start)
        self._aps.start()

    def shutdown(self) -> None:
        """Stop firing. Runs in flight are the runner's to drain, not APScheduler's."""
        if self._aps.running:
            self._aps.shutdown(wait=False)

    # -- schedules ------------------------------------------------------------------
    def add(self, schedule: Schedule, *, paused: bool = False, since: datetime | None = None):
        self._schedules[schedule.id] = schedule
        if schedule.after:
            self._after[schedule.id] = schedule
        else:
            self._after.pop(schedule.id, None)
        # `after`: fired by daemon.orchestration.upstream; events by daemon.incoming
        if not schedule.enabled or not schedule.has_clock:
            return
        trigger = make_trigger(schedule)
        first = {}
        if paused:
            first = {"next_run_time": None}
        elif since is not None:
            first = {"next_run_time": trigger.get_next_fire_time(None, since)}
        self._aps.add_job(
            _never_called,
            trigger=trigger,
            id=schedule.id,
            name=schedule.id,
            replace_existing=True,
            **first,
        )

    def remove(self, schedule_id: str) -> None:
        self._schedules.pop(schedule_id, None)
        self._after.pop(schedule_id, None)
        try:
            self._aps.remove_job(schedule_id)
        except JobLookupError:
            pass

    def replace(self, schedule: Schedule, *, paused: bool = False) -> None:
        """A changed schedule restarts from now (its next slot after now)."""
        self.remove(schedule.id)
        self.add(schedule, paused=paused)

    def pause(self, schedule_id: str) -> None:
        if self._aps.get_job(schedule_id):
            self._aps.pause_job(schedule_id)

    def resume(self, schedule_id: str) -> None:
        if self._aps.get_job(schedule_id):
            self._aps.resume_job(schedule_id)

    # -- questions ------------------------------------------------------------------
    @property
    def schedules(self) -> dict[str, Schedule]:
        return dict(self._schedules)

    @property
    def downstream(self) -> dict[str, Schedule]:
        """The schedules with `after` (daemon.orchestration.upstream asks on every run's
        success: a copy of all of them each time was O(schedules) per run)."""
        return dict(self._after)

    def health(self) -> str:
        """ "ok" while APScheduler fires; a sentence when it does not."""
        return "ok" if self._aps.running else "stopped: no slots are being fired"

    def next_fire(self, schedule_id: str) -> datetime | None:
        job = self._aps.get_job(schedule_id)
        return job.next_run_time if job else None

    def _fire(self, job_id: str, run_time: datetime) -> None:
        schedule = self._schedules.get(job_id)
        if schedule is None:  # removed by a reload a moment ago
            return
        self._on_slot(schedule, run_time)
