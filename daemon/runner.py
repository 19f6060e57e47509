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
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from daemon import logs
from daemon.calendars import EXCLUDED, excluded_reason
from daemon.errors import HistoryError, PipelineError
from daemon.events import Listeners, RunEvent
from daemon.history import History, RunError
from daemon.pipeline import Attempts, Pipelines, RunConfig
from daemon.pools import Pools
from daemon.schedule import SLOT_INPUTS, Schedule
from daemon.workers import WorkerPool, error_fields

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
    asked_at: datetime = field(default_factory=utcnow)  # a manual run's `scheduled_at` input
    background: bool = False  # a backfill's run: scheduled slots never wait or skip for it

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
SPARE_POLL_S = 0.05  # how often a backfill run looks for a spare concurrency slot
BACKFILL = "backfill"


class _TimedOut(Exception):
    pass


class Runner:
    """Turns fired slots into recorded runs. Owns the thread pool for sync-driver runs."""

    def __init__(
        self,
        *,
        pm: Pipelines,
        history: History,
        max_concurrent_runs: int,
        threads: int,
        on_change: Callable[[], None] = lambda: None,
        events: Listeners | None = None,
        timezone: str = "UTC",
        max_log_bytes: int = 1024 * 1024,
    ):
        self.pm = pm
        self.history = history
        self.max_concurrent_runs = max_concurrent_runs
        self._zone = ZoneInfo(timezone)  # of a run without a schedule (its scheduled_at)
        self._limit = asyncio.Semaphore(max_concurrent_runs)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="flowerd-run")
        self._pool_busy = 0  # threads still running a pipeline, incl. abandoned ones
        self._threads = threads
        self._abandoned: set[asyncio.Future] = set()  # threads past their run's timeout
        self._queues: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()
        self.active: dict[int, ActiveRun] = {}
        self._going: Counter[str] = Counter()  # per schedule: its active non-backfill runs
        self._claiming: dict[str, int] = defaultdict(int)
        self._on_change = on_change
        self.events = events if events is not None else Listeners()
        self.accepting = True
        self._max_log_bytes = max_log_bytes
        self._workers: WorkerPool | None = None  # isolation = "process": made on first use
        self.pools = Pools({})  # the app sets the `pools` setting's limits

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
        self,
        pipeline: str,
        cfg: RunConfig,
        *,
        schedule: Schedule | None = None,
        claimed: asyncio.Future | None = None,
    ) -> Outcome:
        """`flowerd run`, `flowerd trigger`, the recording Python API: record and run now,
        trigger `manual`. `claimed` (if given) answers the run id once its row exists."""
        async_driver = cfg.async_driver is not False
        asked_at = utcnow()
        run_id = await self.history.claim(
            schedule=schedule.id if schedule else None,
            pipeline=pipeline,
            trigger="manual",
            scheduled_at=asked_at if schedule else None,
            async_driver=async_driver,
            final_vars=list(cfg.final_vars or ()),
            inputs=dict(cfg.inputs or {}),
        )
        if claimed is not None and not claimed.done():
            claimed.set_result(run_id)
        active = self._track(run_id, pipeline, schedule, None, "manual")
        active.asked_at = asked_at
        timeout_s = schedule.timeout_s if schedule else 0
        return await self._execute(active, pipeline, cfg, timeout_s=timeout_s)

    async def backfill(
        self, schedule: Schedule, scheduled_at: datetime, *, started=None
    ) -> Outcome | None:
        """One slot of a backfill (trigger `backfill`): None if the slot is already in the
        history. See `_started`: a run cancelled before it starts leaves no row."""
        values = {"schedule": schedule.id, "pipeline": schedule.pipeline, "trigger": BACKFILL}
        values["scheduled_at"] = scheduled_at.astimezone(UTC)
        cfg = RunConfig(**schedule.run_config_kwargs())
        return await self._started(values, cfg, schedule, background=True, started=started)

    async def run_again(
        self, record, cfg: RunConfig, *, schedule: Schedule | None = None, **how
    ) -> Outcome:
        """`flowerd rerun` / `backfill --rerun`: run `record` (a RunRecord) again as a new
        row, trigger `rerun`, with its schedule and slot, and `rerun_of` = its id."""
        values = {"schedule": record.schedule, "pipeline": record.pipeline, "trigger": "rerun"}
        values.update(scheduled_at=record.scheduled_at, rerun_of=record.id)
        return await self._started(values, cfg, schedule, **how)

    async def _started(
        self, values: dict, cfg: RunConfig, schedule, *, background=False, started=None
    ):
        """Claim and run, the concurrency slot taken FIRST: a run cancelled while it waits
        leaves no row. `background` (a backfill's runs): see `_take_slot`. `started(id)`
        is called once the row is claimed."""
        release = await self._take_slot(background)
        try:
            run_id = await self._claim_shielded(values, cfg)
            if run_id is None:
                return None
            active = self._track(
                run_id,
                values["pipeline"],
                schedule,
                values["scheduled_at"],
                values["trigger"],
                background=background,
                schedule_id=values["schedule"],
            )
            active.release, release = release, None
            if started is not None:
                started(run_id)
            timeout_s = schedule.timeout_s if schedule else 0
            return await self._execute(active, values["pipeline"], cfg, timeout_s=timeout_s)
        finally:
            if release is not None:
                release()

    async def _claim_shielded(self, values: dict, cfg: RunConfig) -> int | None:
        """The claim; a cancel while it is being written waits for it, and a row that
        landed is finished `cancelled` before the cancellation goes on."""
        what = {"final_vars": list(cfg.final_vars or ()), "inputs": dict(cfg.inputs or {})}
        what["async_driver"] = cfg.async_driver is not False
        claim = asyncio.ensure_future(self.history.claim(**values, **what))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            await asyncio.wait({claim}, timeout=CANCEL_WAIT_S)
            ok = claim.done() and not claim.cancelled() and claim.exception() is None
            if ok and claim.result() is not None:
                error = _cancel_error("before it started")
                await self.history.finish(
                    claim.result(),
                    status="cancelled",
                    finished_at=utcnow(),
                    attempts=0,
                    error=error,
                )
            raise

    async def trigger(self, schedule: Schedule, inputs: dict | None = None) -> int:
        """Run a schedule now (control channel, HTTP) in the background, `inputs` over
        the schedule's own; returns the run's id once its row is claimed."""
        kwargs = schedule.run_config_kwargs()
        kwargs["inputs"] = {**(kwargs.get("inputs") or {}), **(inputs or {})}
        claimed = asyncio.get_running_loop().create_future()
        task = self.spawn(
            self.run_manual(
                schedule.pipeline, RunConfig(**kwargs), schedule=schedule, claimed=claimed
            )
        )
        task.add_done_callback(lambda task: _answer_unclaimed(task, claimed))
        return await claimed

    # -- policies ---------------------------------------------------------------------
    @staticmethod
    def _too_late(schedule: Schedule, scheduled_at: datetime) -> bool:
        return (utcnow() - scheduled_at).total_seconds() > schedule.misfire_grace_s

    def busy(self, schedule_id: str) -> bool:
        return self._busy(schedule_id)

    def claiming(self, schedule_id: str) -> bool:
        """A slot of the schedule is being claimed (its row not yet written)."""
        return bool(self._claiming[schedule_id])

    def _busy(self, schedule_id: str) -> bool:
        """A run of the schedule is going (backfill runs do not count: a scheduled slot
        neither waits nor skips for them)."""
        return bool(self._claiming[schedule_id] or self._going[schedule_id])

    def _overlap_error(self, schedule: Schedule) -> RunError:
        ids = [str(r.run_id) for r in self.active.values() if r.schedule == schedule.id]
        previous = f"run {', '.join(ids)}" if ids else "the previous slot's run"
        return RunError(
            type="Overlap",
            message=f"skipped: {previous} of schedule {schedule.id!r} was still running "
            "(overlap = 'skip')",
        )

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
                await self._finish(active, "missed", _late_error(schedule, active.scheduled_at))
                return
            cfg = RunConfig(**schedule.run_config_kwargs())
            await self._execute(active, schedule.pipeline, cfg, timeout_s=schedule.timeout_s)
        finally:
            active.free_slot()

    async def _take_slot(self, background: bool) -> Callable[[], None]:
        """A slot of the concurrency limit (its release). A background run takes only one
        that leaves another free (limit above 1): scheduled slots never wait behind it."""
        while True:
            await self._limit.acquire()
            if not background or self.max_concurrent_runs == 1 or not self._limit.locked():
                return self._limit.release
            self._limit.release()  # it was the last free one (or others wait for it)
            await asyncio.sleep(SPARE_POLL_S)

    def _track(
        self, run_id, pipeline, schedule, scheduled_at, trigger, *, background=False, **named
    ) -> ActiveRun:
        """`schedule_id` (named) overrides the schedule's id (a rerun of a removed one)."""
        active = ActiveRun(
            run_id=run_id,
            schedule=named.get("schedule_id", schedule.id if schedule else None),
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
        self._on_change()
        return active

    def _untrack(self, active: ActiveRun) -> None:
        if self.active.pop(active.run_id, None) is None:
            return
        if active.schedule is not None and not active.background:
            self._going[active.schedule] -= 1
            if not self._going[active.schedule]:
                del self._going[active.schedule]

    async def _execute(
        self, active: ActiveRun, pipeline: str, cfg: RunConfig, *, timeout_s: float
    ) -> Outcome:
        logs.run_id_var.set(active.run_id)
        active.started_at = utcnow()
        self.history.mark_running_nowait(active.run_id, started_at=active.started_at)
        if self.events:  # first: the run's log (daemon/runlogs.py) holds the next line
            self.events.emit(self._event(active, "started", "running"))
        log.info(
            "run %d started: pipeline %s%s (%s driver)",
            active.run_id,
            pipeline,
            f" for schedule {active.schedule}" if active.schedule else "",
            "sync" if cfg.async_driver is False else "async",
        )
        try:
            # Let the other runs due now start (and be stamped) before this one's code
            # takes the loop: an async pipeline runs on the loop until its first await.
            await asyncio.sleep(0)
            cfg = self._with_slot_inputs(active, pipeline, cfg)
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

    def _with_slot_inputs(self, active: ActiveRun, pipeline: str, cfg: RunConfig) -> RunConfig:
        """`scheduled_at` (the slot, aware, in the schedule's timezone; a manual run: when
        it was asked for) and `run_id`, for a DAG that declares them as inputs."""
        wanted = self.pm.declared_inputs(pipeline, cfg, SLOT_INPUTS)
        if not wanted:
            return cfg
        zone = active.spec.zone if active.spec is not None else self._zone
        slot = (active.scheduled_at or active.asked_at).astimezone(zone)
        values = {"scheduled_at": slot, "run_id": active.run_id}
        given = dict(cfg.inputs or {})  # the Python API may pass its own
        return cfg.merged({"inputs": {**{k: values[k] for k in wanted}, **given}})

    async def _call(self, active: ActiveRun, pipeline: str, cfg: RunConfig, timeout_s: float):
        if active.spec is not None and active.spec.isolation == "process":
            return await self._in_worker(active, pipeline, cfg, timeout_s)
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

    async def _in_worker(self, active: ActiveRun, pipeline: str, cfg: RunConfig, timeout_s):
        """Either driver in a worker process (daemon.workers): a timeout or cancel kills
        its process group; its death fails only this run (WorkerDied)."""
        if self._workers is None:
            self._workers = WorkerPool(
                base_dir=self.pm.base_dir,
                pipelines_dir=self.pm.pipelines_dir,
                max_output_bytes=self._max_log_bytes,
            )
        memory_limit = active.spec.memory_limit_bytes if active.spec else None
        try:
            return await self._workers.run(
                pipeline, cfg, active.attempts, memory_limit_bytes=memory_limit, timeout_s=timeout_s
            )
        except TimeoutError:
            raise _TimedOut() from None

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
        self._untrack(active)
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
                attempt_errors=active.attempts.errors,
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
        """ "ok", or why sync-driver runs cannot start: every pool thread is held by a run
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
        if self._workers is not None:
            self._workers.close()  # no worker (nor what it started) outlives the runner


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


def _both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    if second is None:
        return first

    def release() -> None:
        first()
        second()

    return release


def _answer_unclaimed(task: asyncio.Task, claimed: asyncio.Future) -> None:
    """A trigger whose run ended before its row was claimed (history error, stop)."""
    error = None if task.cancelled() else task.exception()  # retrieved: answered or logged
    if claimed.done():
        if error is not None:
            log.error("triggered run failed outside its pipeline", exc_info=error)
    elif error is None:
        claimed.cancel()
    else:
        claimed.set_exception(error)


def _sync_call(pm: Pipelines, pipeline: str, cfg: RunConfig, attempts: Attempts):
    try:
        return pm.execute_sync(pipeline, cfg, attempts)
    except (KeyboardInterrupt, SystemExit) as exc:  # pipeline code, not a signal to us
        raise PipelineError(f"pipeline {pipeline!r} raised {type(exc).__name__}") from exc


def _error_of(exc: BaseException) -> RunError:
    return RunError(**error_fields(exc))  # a worker's error comes as the worker saw it


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
