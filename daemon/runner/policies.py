"""A fired slot's policies, up to the moment its run is carried out (daemon.runner.execute):
calendar exclusions, the misfire grace, overlap (skip | queue | allow), the claim of
(schedule, slot) in the history (a slot already there never runs again: restart, reload,
DST fold), jitter, pools and the concurrency limit -- and the rows of the slots that do not
run (`missed`, `skipped`). A part of the Runner (daemon.runner.runner), whose docstring draws
the flow.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

from daemon.history import History, RunError
from daemon.pipeline import RunConfig
from daemon.runner.events import Listeners, RunEvent
from daemon.runner.execute import Execution, cancel_error
from daemon.runner.ledger import ActiveRun, Ledger, utcnow
from daemon.runner.pools import Pools
from daemon.schedule import Schedule
from daemon.schedule.calendars import EXCLUDED, excluded_reason

log = logging.getLogger("daemon.runner")  # a part of the runner: its lines keep that name


class SlotPolicies:
    """From a fired slot to a claimed run that may start, or to the row of a slot that
    does not run. Owns the per-schedule queues of `overlap = "queue"`."""

    def __init__(
        self,
        *,
        history: History,
        events: Listeners,
        ledger: Ledger,
        execution: Execution,
        limit: asyncio.Semaphore,
        pools: Pools,
    ):
        self.history = history
        self.events = events
        self.ledger = ledger
        self.execution = execution
        self.pools = pools
        self._limit = limit
        self._queues: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def run_slot(self, schedule: Schedule, scheduled_at: datetime, trigger: str) -> None:
        scheduled_at = scheduled_at.astimezone(UTC)
        try:
            await self._run_slot(schedule, scheduled_at, trigger)
        except asyncio.CancelledError:
            raise
        except Exception:  # the daemon lives on whatever one slot does
            log.exception("slot %s@%s could not be run", schedule.id, scheduled_at.isoformat())

    async def _run_slot(self, schedule: Schedule, scheduled_at: datetime, trigger: str) -> None:
        excluded = excluded_reason(schedule, scheduled_at)
        if excluded is not None:
            why = RunError(type=EXCLUDED, message=excluded)
            await self._record(schedule, scheduled_at, "skipped", why, trigger)
            return
        if trigger == "schedule" and self._too_late(schedule, scheduled_at):
            await self._record(
                schedule, scheduled_at, "missed", _late_error(schedule, scheduled_at)
            )
            return
        if self.ledger.busy(schedule.id) and schedule.overlap == "skip":
            await self._record(schedule, scheduled_at, "skipped", self._overlap_error(schedule))
            return
        with self.ledger.claiming_slot(schedule.id):  # busy from now on, before the first await
            run_id = await self._claim(schedule, scheduled_at, trigger)
            if run_id is not None:
                active = self.ledger.track(
                    run_id, schedule.pipeline, schedule, scheduled_at, trigger
                )
        if run_id is not None:
            await self._carry_out(active, schedule, trigger)

    async def _claim(self, schedule: Schedule, scheduled_at: datetime, trigger: str):
        run_id = await self.history.claim(
            schedule=schedule.id,
            pipeline=schedule.pipeline,
            trigger=trigger,
            scheduled_at=scheduled_at,
            async_driver=schedule.async_driver,
            final_vars=list(schedule.final_vars),
            inputs=dict(schedule.inputs),
        )
        if run_id is None:  # a restart, a reload -- or another daemon on this history won it
            log.debug(
                "slot %s@%s is already in the history; not run again",
                schedule.id,
                scheduled_at.isoformat(),
            )
        return run_id

    # -- policies ---------------------------------------------------------------------
    @staticmethod
    def _too_late(schedule: Schedule, scheduled_at: datetime) -> bool:
        return (utcnow() - scheduled_at).total_seconds() > schedule.misfire_grace_s

    def _overlap_error(self, schedule: Schedule) -> RunError:
        ids = [str(run_id) for run_id in self.ledger.of_schedule(schedule.id)]
        if ids or not self.ledger.claiming(schedule.id):
            previous = f"run {', '.join(ids)}" if ids else "the previous slot's run"
            why = f"{previous} of schedule {schedule.id!r} was still running"
        else:  # nothing ran: the previous slot's claim still waited on the history
            health = self.history.health()
            why = (
                f"the previous slot of schedule {schedule.id!r} was still waiting for its "
                "claim to be written to the history (nothing was running)"
                + (f"; the history is {health}" if health != "ok" else "")
            )
        return RunError(type="Overlap", message=f"skipped: {why} (overlap = 'skip')")

    async def _record(
        self, schedule: Schedule, scheduled_at: datetime, status: str, error, trigger="schedule"
    ):
        finished_at = utcnow()
        row = await self.history.record_slot(
            trigger="schedule" if trigger == "catchup" else trigger,
            schedule=schedule.id,
            pipeline=schedule.pipeline,
            scheduled_at=scheduled_at,
            status=status,
            async_driver=schedule.async_driver,
            error=error,
        )
        if row is not None:
            log.warning(
                "%s %s@%s: %s",
                status,
                schedule.id,
                scheduled_at.isoformat(),
                error.message if error else "",
            )
            if self.events:
                self.events.emit(
                    RunEvent(
                        kind="finished",
                        run_id=row,
                        schedule=schedule,
                        pipeline=schedule.pipeline,
                        trigger="schedule" if trigger == "catchup" else trigger,
                        status=status,
                        scheduled_at=scheduled_at,
                        finished_at=finished_at,
                        error=error,
                    )
                )

    # -- a claimed slot waits its turn ---------------------------------------------------
    async def _carry_out(self, active: ActiveRun, schedule: Schedule, trigger: str) -> None:
        try:
            if schedule.overlap == "queue":
                async with self._queues[schedule.id]:
                    await self._start_when_allowed(active, schedule, trigger)
            else:
                await self._start_when_allowed(active, schedule, trigger)
        except asyncio.CancelledError:
            if active.started_at is None:  # cancelled while queued
                await self.execution.finish(active, "cancelled", cancel_error("before it started"))
            raise

    async def _start_when_allowed(self, active: ActiveRun, schedule: Schedule, trigger) -> None:
        if schedule.jitter_s:
            await asyncio.sleep(random.uniform(0, schedule.jitter_s))
        release_pool = None
        if schedule.pool is not None:  # a queued row while it waits; fair across schedules
            release_pool = await self.pools.acquire(schedule.pool, active.scheduled_at)
        try:
            await self._limit.acquire()
        except BaseException:
            if release_pool is not None:
                release_pool()
            raise
        active.release = _both(self._limit.release, release_pool)
        try:
            if trigger == "schedule" and self._too_late(schedule, active.scheduled_at):
                await self.execution.finish(
                    active, "missed", _late_error(schedule, active.scheduled_at)
                )
                return
            cfg = RunConfig(**schedule.run_config_kwargs())
            await self.execution.execute(
                active, schedule.pipeline, cfg, timeout_s=schedule.timeout_s
            )
        finally:
            active.free_slot()


def _both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    if second is None:
        return first

    def release() -> None:
        first()
        second()

    return release


def _late_error(schedule: Schedule, scheduled_at: datetime) -> RunError:
    late_s = (utcnow() - scheduled_at).total_seconds()
    return RunError(
        type="Misfire",
        message=f"missed: the slot came {late_s:.1f} s late, beyond misfire_grace "
        f"({schedule.misfire_grace_s:g} s)",
    )
