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

The Runner holds its parts as objects, each constructed with what it needs:
`Ledger` (daemon.runner.ledger: the runs going now), `SlotPolicies` (daemon.runner.policies:
a fired slot's policies, up to its claim), `Requested` (daemon.runner.requested: manual,
trigger, backfill and rerun entry points) and `Execution` (daemon.runner.execute: carrying
out one claimed run: driver call, timeout, terminal row). A scheduled run's path:

    Runner.fire -> SlotPolicies.run_slot -> Ledger.track -> Execution.execute
                -> Execution.finish -> Ledger.untrack

The terminal row is written even when the run is cancelled: History.finish queues it
first and waits for its commit before the cancellation continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from daemon import logs
from daemon.errors import PipelineError
from daemon.history import History
from daemon.pipeline import Pipelines
from daemon.runner.events import Listeners
from daemon.runner.execute import CANCEL_WAIT_S, Execution, Outcome, Tracker
from daemon.runner.ledger import ActiveRun, Ledger, utcnow
from daemon.runner.policies import SlotPolicies
from daemon.runner.pools import Pools
from daemon.runner.requested import Requested
from daemon.runner.workers import WorkerPool
from daemon.schedule import Schedule

log = logging.getLogger("daemon.runner")  # its name before the move


class Runner:
    """Turns fired slots into recorded runs. `pools`: the limits of the `pools` setting
    (none by default)."""

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
        pools: Pools | None = None,
    ):
        self.pm = pm
        self.history = history
        self.max_concurrent_runs = max_concurrent_runs
        self.events = events if events is not None else Listeners()
        self.pools = pools if pools is not None else Pools({})
        self.accepting = True
        self._tasks: set[asyncio.Task] = set()
        self.ledger = Ledger(on_change)
        self.active: dict[int, ActiveRun] = self.ledger.active
        limit = asyncio.Semaphore(max_concurrent_runs)
        self.execution = Execution(
            pm=pm, history=history, events=self.events, ledger=self.ledger, threads=threads,
            zone=ZoneInfo(timezone), max_log_bytes=max_log_bytes,
        )  # fmt: skip
        self.policies = SlotPolicies(
            history=history, events=self.events, ledger=self.ledger,
            execution=self.execution, limit=limit, pools=self.pools,
        )  # fmt: skip
        self.requested = Requested(
            history=history, ledger=self.ledger, execution=self.execution, limit=limit,
            max_concurrent_runs=max_concurrent_runs, spawn=self.spawn,
        )  # fmt: skip
        self.run_slot = self.policies.run_slot  # catch-up's slots, awaited in order
        self.run_manual = self.requested.run_manual
        self.backfill = self.requested.backfill
        self.run_again = self.requested.run_again
        self.trigger = self.requested.trigger
        self.busy = self.ledger.busy
        self.claiming = self.ledger.claiming

    # -- entry points -----------------------------------------------------------------
    def fire(self, schedule: Schedule, scheduled_at: datetime, trigger: str = "schedule") -> None:
        """Called on the event loop when a slot is due; never blocks."""
        if self.accepting:
            self.spawn(self.policies.run_slot(schedule, scheduled_at, trigger))

    def spawn(self, coro) -> asyncio.Task:
        """A background task the drain waits for (and cancels after the grace period)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- health and stopping -----------------------------------------------------------
    def health(self) -> str:
        """ "ok", or why sync-driver runs cannot start (daemon.runner.execute)."""
        return self.execution.health()

    @property
    def tracking(self) -> Tracker | None:
        """What each run reports (daemon.observe's Tracking, handed by the daemon)."""
        return self.execution.tracking

    @tracking.setter
    def tracking(self, tracking: Tracker | None) -> None:
        self.execution.tracking = tracking

    @property
    def threads_busy(self) -> int:
        return self.execution.threads_busy

    @property
    def _workers(self) -> WorkerPool | None:
        """The worker processes of `isolation = "process"` (None until the first such run)."""
        return self.execution.workers

    def warm_threads(self, wanted: int) -> None:
        self.execution.warm_threads(wanted)

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

    def close(self) -> None:
        self.execution.close()


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
