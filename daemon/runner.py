"""Slot -> run: ledger claim, misfire grace, overlap, concurrency, timeout, retries.

Every slot the scheduler fires ends as exactly one history row:

    fire(schedule, slot) -> late beyond misfire_grace?      -> `missed`
                         -> previous run still going?       -> overlap: skip -> `skipped`
                                                               queue -> wait; allow -> go
                         -> claim (schedule, slot) row `queued` (a slot already in the
                            history never runs again: restart, reload, DST fold)
                         -> jitter, global concurrency limit, lateness re-checked
                         -> `running` -> pipeline (async driver on the loop | sync driver
                            in the thread pool) -> `success | failed | timed_out | cancelled`

The terminal row is written even when the run is cancelled: History.finish queues it
first and waits for its commit before the cancellation continues.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import reprlib
import traceback
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from daemon import logs
from daemon.errors import HistoryError, PipelineError
from daemon.events import Listeners, RunEvent
from daemon.history import History, RunError
from daemon.pipeline import Attempts, PipelineManager, RunConfig
from daemon.schedule import Schedule

log = logging.getLogger(__name__)

_summary = reprlib.Repr()
_summary.maxstring = 60
_summary.maxother = 60
_summary.maxdict = 8
_summary.maxlist = 8


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


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a run carried out by the runner ended: its row id, and its result or error."""

    run_id: int
    result: dict | None = None
    error: Exception | None = None


CANCEL_WAIT_S = 5.0


class _TimedOut(Exception):
    pass


class Runner:
    """Turns fired slots into recorded runs. Owns the thread pool for sync-driver runs."""

    def __init__(
        self,
        *,
        pm: PipelineManager,
        history: History,
        max_concurrent_runs: int,
        threads: int,
        on_change: Callable[[], None] = lambda: None,
        events: Listeners | None = None,
    ):
        self.pm = pm
        self.history = history
        self._limit = asyncio.Semaphore(max_concurrent_runs)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="flowerd-run")
        self._pool_busy = 0  # threads still running a pipeline, incl. abandoned ones
        self._threads = threads
        self._abandoned: set[asyncio.Future] = set()  # threads past their run's timeout
        self._queues: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()
        self.active: dict[int, ActiveRun] = {}
        self._claiming: dict[str, int] = defaultdict(int)
        self._on_change = on_change
        self.events = events if events is not None else Listeners()
        self.accepting = True

    # -- entry points -----------------------------------------------------------------
    def fire(self, schedule: Schedule, scheduled_at: datetime, trigger: str = "schedule") -> None:
        """Called on the event loop when a slot is due; never blocks."""
        if self.accepting:
            self.spawn(self.run_slot(schedule, scheduled_at, trigger))

    def spawn(self, coro) -> asyncio.Task:
        """A background task the drain waits for (and cancels after the grace period)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run_slot(self, schedule: Schedule, scheduled_at: datetime, trigger: str) -> None:
        scheduled_at = scheduled_at.astimezone(UTC)
        try:
            await self._run_slot(schedule, scheduled_at, trigger)
        except asyncio.CancelledError:
            raise
        except Exception:  # the daemon lives on whatever one slot does
            log.exception("slot %s@%s could not be run", schedule.id, scheduled_at.isoformat())

    async def _run_slot(self, schedule: Schedule, scheduled_at: datetime, trigger: str) -> None:
        if trigger == "schedule" and self._too_late(schedule, scheduled_at):
            await self._record(
                schedule, scheduled_at, "missed", _late_error(schedule, scheduled_at)
            )
            return
        if self._busy(schedule.id) and schedule.overlap == "skip":
            await self._record(schedule, scheduled_at, "skipped", self._overlap_error(schedule))
            return
        self._claiming[schedule.id] += 1  # busy from now on, before the first await
        try:
            run_id = await self._claim(schedule, scheduled_at, trigger)
            if run_id is not None:
                active = self._track(run_id, schedule.pipeline, schedule, scheduled_at, trigger)
        finally:
            self._claiming[schedule.id] -= 1
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

    async def run_manual(
        self, pipeline: str, cfg: RunConfig, *, schedule: Schedule | None = None
    ) -> Outcome:
        """`flowerd run`, `flowerd trigger`, the recording Python API: record and run now,
        trigger `manual`."""
        async_driver = cfg.async_driver is not False
        run_id = await self.history.claim(
            schedule=schedule.id if schedule else None,
            pipeline=pipeline,
            trigger="manual",
            scheduled_at=utcnow() if schedule else None,
            async_driver=async_driver,
            final_vars=list(cfg.final_vars or ()),
            inputs=dict(cfg.inputs or {}),
        )
        active = self._track(run_id, pipeline, schedule, None, "manual")
        timeout_s = schedule.timeout_s if schedule else 0
        return await self._execute(active, pipeline, cfg, timeout_s=timeout_s)

    def trigger(self, schedule: Schedule) -> asyncio.Task:
        """Run a schedule now (control channel), in the background."""
        cfg = RunConfig(**schedule.run_config_kwargs())
        return self.spawn(self.run_manual(schedule.pipeline, cfg, schedule=schedule))

    # -- policies ---------------------------------------------------------------------
    @staticmethod
    def _too_late(schedule: Schedule, scheduled_at: datetime) -> bool:
        return (utcnow() - scheduled_at).total_seconds() > schedule.misfire_grace_s

    def _busy(self, schedule_id: str) -> bool:
        if self._claiming[schedule_id]:
            return True
        return any(run.schedule == schedule_id for run in self.active.values())

    def _overlap_error(self, schedule: Schedule) -> RunError:
        ids = [str(r.run_id) for r in self.active.values() if r.schedule == schedule.id]
        previous = f"run {', '.join(ids)}" if ids else "the previous slot's run"
        return RunError(
            type="Overlap",
            message=f"skipped: {previous} of schedule {schedule.id!r} was still running "
            "(overlap = 'skip')",
        )

    async def _record(self, schedule: Schedule, scheduled_at: datetime, status: str, error):
        finished_at = utcnow()
        row = await self.history.record_slot(
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
                        trigger="schedule",
                        status=status,
                        scheduled_at=scheduled_at,
                        finished_at=finished_at,
                        error=error,
                    )
                )

    # -- carrying out a claimed run -----------------------------------------------------
    async def _carry_out(self, active: ActiveRun, schedule: Schedule, trigger: str) -> None:
        try:
            if schedule.overlap == "queue":
                async with self._queues[schedule.id]:
                    await self._start_when_allowed(active, schedule, trigger)
            else:
                await self._start_when_allowed(active, schedule, trigger)
        except asyncio.CancelledError:
            if active.started_at is None:  # cancelled while queued
                await self._finish(active, "cancelled", _cancel_error("before it started"))
            raise

    async def _start_when_allowed(self, active: ActiveRun, schedule: Schedule, trigger) -> None:
        if schedule.jitter_s:
            await asyncio.sleep(random.uniform(0, schedule.jitter_s))
        await self._limit.acquire()
        active.release = self._limit.release
        try:
            if trigger == "schedule" and self._too_late(schedule, active.scheduled_at):
                await self._finish(active, "missed", _late_error(schedule, active.scheduled_at))
                return
            cfg = RunConfig(**schedule.run_config_kwargs())
            await self._execute(active, schedule.pipeline, cfg, timeout_s=schedule.timeout_s)
        finally:
            active.free_slot()

    def _track(self, run_id, pipeline, schedule, scheduled_at, trigger) -> ActiveRun:
        active = ActiveRun(
            run_id=run_id,
            schedule=schedule.id if schedule else None,
            pipeline=pipeline,
            scheduled_at=scheduled_at,
            task=asyncio.current_task(),
            trigger=trigger,
            spec=schedule,
        )
        self.active[run_id] = active
        self._on_change()
        return active

    async def _execute(
        self, active: ActiveRun, pipeline: str, cfg: RunConfig, *, timeout_s: float
    ) -> Outcome:
        logs.run_id_var.set(active.run_id)
        active.started_at = utcnow()
        self.history.mark_running_nowait(active.run_id, started_at=active.started_at)
        log.info(
            "run %d started: pipeline %s%s (%s driver)",
            active.run_id,
            pipeline,
            f" for schedule {active.schedule}" if active.schedule else "",
            "sync" if cfg.async_driver is False else "async",
        )
        if self.events:
            self.events.emit(self._event(active, "started", "running"))
        try:
            result = await self._call(active, pipeline, cfg, timeout_s)
        except asyncio.CancelledError:
            await self._finish(active, "cancelled", _cancel_error("while running"))
            raise
        except _TimedOut:
            exc = TimeoutError(f"the run exceeded its timeout of {timeout_s:g} s")
            await self._finish(active, "timed_out", RunError(type="TimeoutError", message=str(exc)))
            return Outcome(run_id=active.run_id, error=exc)
        except Exception as exc:
            await self._finish(active, "failed", _error_of(exc))
            return Outcome(run_id=active.run_id, error=exc)
        summary = _summary.repr(result)
        if active.attempts.where:  # say where it ran: the Dask cluster and its dashboard
            summary = f"{summary} (ran on {active.attempts.where})"
        await self._finish(active, "success", None, summary, result=result)
        return Outcome(run_id=active.run_id, result=result)

    async def _call(self, active: ActiveRun, pipeline: str, cfg: RunConfig, timeout_s: float):
        if cfg.async_driver is False:
            call = self._in_thread(active, pipeline, cfg)
        else:
            call = self.pm.execute_async(pipeline, cfg, active.attempts)
        if not timeout_s:
            return await call
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except TimeoutError:
            raise _TimedOut() from None

    async def _in_thread(self, active: ActiveRun, pipeline: str, cfg: RunConfig):
        """The sync driver in the bounded pool. A thread cannot be killed: on timeout or
        cancel its result is discarded, and its pool slot stays busy until it returns."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        self._pool_busy += 1
        future = loop.run_in_executor(
            self._pool, context.run, _sync_call, self.pm, pipeline, cfg, active.attempts
        )
        future.add_done_callback(self._thread_done)
        try:
            return await asyncio.shield(future)
        except (asyncio.CancelledError, TimeoutError):
            if not future.done():
                self._abandoned.add(future)
                future.add_done_callback(self._abandoned.discard)
                log.warning(
                    "run %d: its thread cannot be stopped; the result will be "
                    "discarded and one pool thread stays busy until it returns",
                    active.run_id,
                )
            raise

    def _thread_done(self, _future) -> None:
        self._pool_busy -= 1

    def _event(self, active: ActiveRun, kind: str, status: str, **more) -> RunEvent:
        return RunEvent(
            kind=kind,
            run_id=active.run_id,
            schedule=active.spec,
            pipeline=active.pipeline,
            trigger=active.trigger,
            status=status,
            scheduled_at=active.scheduled_at,
            started_at=active.started_at,
            attempts=active.attempts.count,
            **more,
        )

    async def _finish(
        self, active: ActiveRun, status: str, error, summary=None, *, result=None
    ) -> None:
        """Write the terminal row; only once it is written is the run logged as finished
        (a row that cannot be written is said so, never logged as a finish)."""
        finished_at = utcnow()
        active.free_slot()
        self.active.pop(active.run_id, None)
        self._on_change()
        try:
            # History.finish queues the write before its first await and, if this task
            # is cancelled meanwhile, waits for the commit before re-raising: the shielded
            # terminal write of the house rules, done where the write happens.
            await self.history.finish(
                active.run_id,
                status=status,
                started_at=active.started_at,
                finished_at=finished_at,
                attempts=active.attempts.count,
                error=error,
                result_summary=summary,
                result=result,
            )
        except HistoryError as exc:
            after = "" if "spool" in str(exc) else "; the next start records it 'crashed'"
            log.error(
                "run %d ended %s, but its row could not be written: %s%s",
                active.run_id,
                status,
                exc,
                after,
            )
        else:
            _log_finish(active, status, finished_at, error)
        finally:
            if self.events:
                self.events.emit(
                    self._event(
                        active,
                        "finished",
                        status,
                        finished_at=finished_at,
                        error=error,
                        result=result,
                    )
                )

    # -- stopping ---------------------------------------------------------------------
    @property
    def threads_busy(self) -> int:
        return self._pool_busy

    def health(self) -> str:
        """"ok", or why sync-driver runs cannot start: every pool thread is held by a run
        that ignored its timeout (use isolation = "process" for such pipelines)."""
        stuck = len(self._abandoned)
        if stuck and stuck >= self._threads:
            return (
                f"degraded: all {self._threads} sync-driver threads are held by runs that "
                "ignored their timeout; sync runs wait until they return"
            )
        return "ok"

    async def drain(self, grace_s: float) -> None:
        """Stop accepting slots; let runs finish within `grace_s`; cancel the rest (their
        rows are written `cancelled`)."""
        self.accepting = False
        pending = {t for t in self._tasks if not t.done()}
        if pending and grace_s > 0:
            log.info("waiting up to %g s for %d run(s) to finish", grace_s, len(pending))
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        await self.cancel_all(pending)

    async def cancel_all(self, tasks=None) -> None:
        tasks = {t for t in (tasks if tasks is not None else self._tasks) if not t.done()}
        for task in tasks:
            task.cancel()
        if tasks:  # a cancelled run waits (bounded) for its row before it ends
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _log_finish(active: ActiveRun, status: str, finished_at: datetime, error) -> None:
    took = (finished_at - active.started_at).total_seconds() if active.started_at else 0
    log.log(
        logging.INFO if status == "success" else logging.WARNING,
        "run %d finished: %s in %.3f s after %d attempt(s)%s",
        active.run_id,
        status,
        took,
        active.attempts.count,
        f": {error.type}: {error.message}" if error else "",
    )


def _sync_call(pm: PipelineManager, pipeline: str, cfg: RunConfig, attempts: Attempts):
    try:
        return pm.execute_sync(pipeline, cfg, attempts)
    except (KeyboardInterrupt, SystemExit) as exc:  # pipeline code, not a signal to us
        raise PipelineError(f"pipeline {pipeline!r} raised {type(exc).__name__}") from exc


def _error_of(exc: BaseException) -> RunError:
    cause = exc.__cause__ if isinstance(exc, PipelineError) and exc.__cause__ else None
    shown = cause if isinstance(cause, KeyboardInterrupt | SystemExit) else exc
    return RunError(
        type=type(shown).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def _late_error(schedule: Schedule, scheduled_at: datetime) -> RunError:
    late_s = (utcnow() - scheduled_at).total_seconds()
    return RunError(
        type="Misfire",
        message=f"missed: the slot came {late_s:.1f} s late, beyond misfire_grace "
        f"({schedule.misfire_grace_s:g} s)",
    )


def _cancel_error(when: str) -> RunError:
    return RunError(type="Cancelled", message=f"the daemon stopped; run cancelled {when}")


def install_task_guard(loop: asyncio.AbstractEventLoop) -> None:
    """Pipeline code that raises SystemExit / KeyboardInterrupt inside an `async def` node
    would end asyncio's loop (Task re-raises them). Tasks created during a run (the run id
    contextvar is set) are wrapped so such an exception fails only that run."""

    def factory(loop, coro, **kwargs):
        if logs.run_id_var.get() is not None:
            coro = _guarded(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)


async def _guarded(coro):
    try:
        return await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        raise PipelineError(f"pipeline code raised {type(exc).__name__}") from exc
