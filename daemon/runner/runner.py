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

Its parts, mixed into Runner: daemon.runner.policies (a fired slot's policies, up to its claim),
daemon.runner.requested (manual, trigger, backfill and rerun entry points) and daemon.runner.execute
(carrying out one claimed run: driver call, timeout, terminal row). The terminal row is
written even when the run is cancelled: History.finish queues it first and waits for
its commit before the cancellation continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from daemon import logs
from daemon.errors import PipelineError
from daemon.history import History
from daemon.pipeline import Pipelines
from daemon.runner.events import Listeners
from daemon.runner.execute import CANCEL_WAIT_S, ActiveRun, Outcome, Running, utcnow
from daemon.runner.policies import SlotPolicies
from daemon.runner.pools import Pools
from daemon.runner.requested import OnDemand
from daemon.runner.workers import WorkerPool
from daemon.schedule import Schedule

log = logging.getLogger("daemon.runner")  # its name before the move
WARM_WAIT_S = 5.0  # warm_threads: how long a started thread waits for the others
_OF_SPEC = object()  # _track: the schedule id is the spec's


class Runner(OnDemand, SlotPolicies, Running):
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
        self.tracking = None  # the daemon hands its Tracker (daemon.observe): nodes, sinks
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

    # -- the runs going now ------------------------------------------------------------
    def _track(
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
        self._on_change()
        return active

    def _untrack(self, active: ActiveRun) -> None:
        active.ended.set()
        if self.active.pop(active.run_id, None) is None:
            return
        if active.schedule is not None and not active.background:
            self._going[active.schedule] -= 1
            if not self._going[active.schedule]:
                del self._going[active.schedule]

    # -- health and stopping -----------------------------------------------------------
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
        rows are written `cancelled`). While the history cannot take writes, only runs
        whose pipeline is executing get the grace: a slot whose claim was never written
        never started and never will -- its held row is spooled as it is, and the next
        start decides it -- so waiting for it would only keep the unit down."""
        self.accepting = False
        pending = {t for t in self._tasks if not t.done()}
        if pending and grace_s > 0:
            if self.history.health() == "ok":
                log.info("waiting up to %g s for %d run(s) to finish", grace_s, len(pending))
                _, pending = await asyncio.wait(pending, timeout=grace_s)
            else:
                await self._wait_executing(grace_s, len(pending))
        await self.cancel_all(pending)

    async def _wait_executing(self, grace_s: float, tasks: int) -> None:
        """Wait (at most `grace_s`) for the pipelines executing now to return."""
        executing = [run for run in self.active.values() if run.started_at is not None]
        log.info(
            "the history is unavailable: waiting up to %g s for %d executing run(s); "
            "%d other slot task(s) wait only on the history and are not waited for",
            grace_s,
            len(executing),
            tasks - len(executing),
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                for run in executing:
                    await run.ended.wait()

    async def cancel_all(self, tasks=None) -> None:
        tasks = {t for t in (tasks if tasks is not None else self._tasks) if not t.done()}
        for task in tasks:
            task.cancel()
        if tasks:  # a cancelled run waits (bounded) for its row before it ends
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)

    def warm_threads(self, wanted: int) -> None:
        """Start up to `wanted` of the pool's threads now (they start on demand, one per
        run that finds none idle): at start-up, not when the first burst of slots fires."""
        count = min(wanted, self._threads)
        if count < 1:
            return
        together = threading.Barrier(count)  # all busy at once: each its own thread
        for _ in range(count):
            self._pool.submit(_meet, together)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._workers is not None:
            self._workers.close()  # no worker (nor what it started) outlives the runner


def _meet(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=WARM_WAIT_S)


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


__all__ = ["ActiveRun", "Outcome", "Runner", "install_task_guard", "utcnow"]
