"""Carrying out one claimed run: the driver call (on the event loop, in the bounded thread
pool, or in a worker process), its timeout, its terminal row and its run events. A part of
the Runner (daemon.runner.runner): the slot policies (daemon.runner.policies) and the runs
asked for (daemon.runner.requested) hand their claimed runs to `Execution.execute`.

The terminal row is written even when the run is cancelled: History.finish queues it
first and waits for its commit before the cancellation continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import reprlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from daemon import logs
from daemon.errors import HistoryError, PipelineError
from daemon.history import History, RunError
from daemon.inputs import SLOT_INPUTS
from daemon.pipeline import Attempts, Pipelines, RunConfig
from daemon.revealed import reveal_inputs
from daemon.runner.events import Listeners, RunEvent
from daemon.runner.ledger import ActiveRun, Ledger, utcnow
from daemon.runner.workers import WorkerPool, error_fields

log = logging.getLogger("daemon.runner")  # a part of the runner: its lines keep that name

_summary = reprlib.Repr()
_summary.maxstring = 60
_summary.maxother = 60
_summary.maxdict = 8
_summary.maxlist = 8


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a run carried out by the runner ended: its row id, and its result or error."""

    run_id: int
    result: dict | None = None
    error: Exception | None = None


CANCEL_WAIT_S = 5.0
WARM_WAIT_S = 5.0  # warm_threads: how long a started thread waits for the others


class RunTrack(Protocol):
    """One run's tracking (daemon.observe.tracking.RunTrack): node timings and sinks."""

    async def started(self) -> None: ...
    def in_worker(self, describe: Callable[[], dict]) -> Callable[[tuple], None]: ...
    async def finish(self, status: str, error, finished_at: datetime) -> tuple[dict, bool]: ...


class Tracker(Protocol):
    """What the runner is handed to track runs (daemon.observe.tracking.Tracking)."""

    def begin(self, active: ActiveRun) -> RunTrack: ...


class _TimedOut(Exception):
    pass


class Execution:
    """A claimed run from `running` to its terminal row. Owns the thread pool of sync-driver
    runs and (made on first use) the worker processes of `isolation = "process"`."""

    def __init__(
        self,
        *,
        pm: Pipelines,
        history: History,
        events: Listeners,
        ledger: Ledger,
        threads: int,
        zone: ZoneInfo,
        max_log_bytes: int,
    ):
        self.pm = pm
        self.history = history
        self.events = events
        self.ledger = ledger
        self.threads = threads
        self._zone = zone  # of a run without a schedule (its scheduled_at)
        self._max_log_bytes = max_log_bytes
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="flowerd-run")
        self._pool_busy = 0  # threads still running a pipeline, incl. abandoned ones
        self._abandoned: set[asyncio.Future] = set()  # threads past their run's timeout
        self.workers: WorkerPool | None = None  # isolation = "process": made on first use
        self.tracking: Tracker | None = None  # handed by the daemon (daemon.observe)

    async def execute(
        self, active: ActiveRun, pipeline: str, cfg: RunConfig, *, timeout_s: float
    ) -> Outcome:
        logs.run_id_var.set(active.run_id)
        active.started_at = utcnow()
        self.history.mark_running_nowait(active.run_id, started_at=active.started_at)
        if self.events:  # first: the run's log (daemon/tell/runlogs.py) holds the next line
            self.events.emit(self._event(active, "started", "running"))
        if self.tracking is not None:  # its nodes recorded from here; its trace_id logged
            active.track = self.tracking.begin(active)
        log.info(
            "run %d started: pipeline %s%s (%s driver)%s",
            active.run_id,
            pipeline,
            f" for schedule {active.schedule}" if active.schedule else "",
            "sync" if cfg.async_driver is False else "async",
            f", trace_id {logs.trace_id_var.get()}" if logs.trace_id_var.get() else "",
        )
        try:
            if active.track is not None:
                await active.track.started()
            # Let the other runs due now start (and be stamped) before this one's code
            # takes the loop: an async pipeline runs on the loop until its first await.
            await asyncio.sleep(0)
            cfg = self._with_slot_inputs(active, pipeline, cfg)
            result = await self._call(active, pipeline, cfg, timeout_s)
        except asyncio.CancelledError:
            await self.finish(active, "cancelled", cancel_error("while running"))
            raise
        except _TimedOut:
            exc = TimeoutError(f"the run exceeded its timeout of {timeout_s:g} s")
            await self.finish(active, "timed_out", RunError(type="TimeoutError", message=str(exc)))
            return Outcome(run_id=active.run_id, error=exc)
        except Exception as exc:
            await self.finish(active, "failed", _error_of(exc))
            return Outcome(run_id=active.run_id, error=exc)
        summary = _summary.repr(result)
        if active.attempts.where:  # say where it ran: the Dask cluster and its dashboard
            summary = f"{summary} (ran on {active.attempts.where})"
        await self.finish(active, "success", None, summary, result=result)
        return Outcome(run_id=active.run_id, result=result)

    def _with_slot_inputs(self, active: ActiveRun, pipeline: str, cfg: RunConfig) -> RunConfig:
        """`scheduled_at` (the slot, aware, in the schedule's timezone; a manual run: when
        it was asked for) and `run_id`, for a DAG that declares them as inputs; an event's
        run also `trigger_path` (a file's) or `payload` (a webhook's)."""
        wanted = self.pm.declared_inputs(pipeline, cfg, SLOT_INPUTS)
        if not wanted:
            return cfg
        zone = active.spec.zone if active.spec is not None else self._zone
        slot = (active.scheduled_at or active.asked_at).astimezone(zone)
        values = {"scheduled_at": slot, "run_id": active.run_id, **(active.event_inputs or {})}
        given = dict(cfg.inputs or {})  # the Python API may pass its own
        return cfg.merged({"inputs": {**{k: values[k] for k in wanted if k in values}, **given}})

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
        """Either driver in a worker process (daemon.runner.workers): a timeout or cancel kills
        its process group; its death fails only this run (WorkerDied)."""
        if self.workers is None:
            self.workers = WorkerPool(
                base_dir=self.pm.base_dir,
                pipelines_dir=self.pm.pipelines_dir,
                max_output_bytes=self._max_log_bytes,
                node_hooks=self.pm.node_hooks,
            )
        memory_limit = active.spec.memory_limit_bytes if active.spec else None
        reveal_inputs(cfg.inputs or {})  # the worker reads them; its lines are masked here
        on_node = None
        if active.track is not None:  # its graph as built here (the inputs unread: no secret)
            on_node = active.track.in_worker(
                lambda: {"graph": self.pm.graph(pipeline, cfg), "inputs": dict(cfg.inputs or {})}
            )
        try:
            return await self.workers.run(
                pipeline, cfg, active.attempts, memory_limit_bytes=memory_limit,
                timeout_s=timeout_s, on_node=on_node,
            )  # fmt: skip
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

    async def finish(
        self, active: ActiveRun, status: str, error, summary=None, *, result=None
    ) -> None:
        """Write the terminal row; only once it is written is the run logged as finished
        (a row that cannot be written is said so, never logged as a finish)."""
        finished_at = utcnow()
        active.free_slot()
        self.ledger.untrack(active)
        self.ledger.changed()
        tracked, cancelled = {}, False  # every sink told (bounded) before the row is final
        if active.track is not None:
            tracked, cancelled = await active.track.finish(status, error, finished_at)
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
                **tracked,
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
            if cancelled:  # cancelled while the sinks were told: the row first, then this
                raise asyncio.CancelledError()
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

    @property
    def threads_busy(self) -> int:
        return self._pool_busy

    def health(self) -> str:
        """ "ok", or why sync-driver runs cannot start: every pool thread is held by a run
        that ignored its timeout (use isolation = "process" for such pipelines)."""
        stuck = len(self._abandoned)
        if stuck and stuck >= self.threads:
            return (
                f"degraded: all {self.threads} sync-driver threads are held by runs that "
                "ignored their timeout; sync runs wait until they return"
            )
        return "ok"

    def warm_threads(self, wanted: int) -> None:
        """Start up to `wanted` of the pool's threads now (they start on demand, one per
        run that finds none idle): at start-up, not when the first burst of slots fires."""
        count = min(wanted, self.threads)
        if count < 1:
            return
        together = threading.Barrier(count)  # all busy at once: each its own thread
        for _ in range(count):
            self._pool.submit(_meet, together)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.workers is not None:
            self.workers.close()  # no worker (nor what it started) outlives the runner


def _meet(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=WARM_WAIT_S)


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


def _sync_call(pm: Pipelines, pipeline: str, cfg: RunConfig, attempts: Attempts):
    try:
        return pm.execute_sync(pipeline, cfg, attempts)
    except (KeyboardInterrupt, SystemExit) as exc:  # pipeline code, not a signal to us
        raise PipelineError(f"pipeline {pipeline!r} raised {type(exc).__name__}") from exc


def _error_of(exc: BaseException) -> RunError:
    return RunError(**error_fields(exc))  # a worker's error comes as the worker saw it


def cancel_error(when: str) -> RunError:
    return RunError(type="Cancelled", message=f"the daemon stopped; run cancelled {when}")
