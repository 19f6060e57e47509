"""Runs asked for rather than fired by the scheduler: `flowerd run`, `flowerd trigger` and
the recording Python API (trigger `manual`), a backfill's slots (`backfill`) and reruns
(`rerun`). A part of the Runner (daemon.runner.runner); each claimed run is carried out by
daemon.runner.execute like a scheduled one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime

from daemon.history import History
from daemon.pipeline import RunConfig
from daemon.runner.execute import CANCEL_WAIT_S, Execution, Outcome, cancel_error
from daemon.runner.ledger import Ledger, utcnow
from daemon.schedule import Schedule

log = logging.getLogger("daemon.runner")  # a part of the runner: its lines keep that name

SPARE_POLL_S = 0.05  # how often a backfill run looks for a spare concurrency slot
BACKFILL = "backfill"


class Requested:
    """The entry points of runs someone asked for."""

    def __init__(
        self,
        *,
        history: History,
        ledger: Ledger,
        execution: Execution,
        limit: asyncio.Semaphore,
        max_concurrent_runs: int,
        spawn: Callable[[Coroutine], asyncio.Task],
    ):
        self.history = history
        self.ledger = ledger
        self.execution = execution
        self.max_concurrent_runs = max_concurrent_runs
        self._limit = limit
        self._spawn = spawn

    async def run_manual(
        self,
        pipeline: str,
        cfg: RunConfig,
        *,
        schedule: Schedule | None = None,
        claimed: asyncio.Future | None = None,
        traceparent: str | None = None,
    ) -> Outcome:
        """`flowerd run`, `flowerd trigger`, the recording Python API: record and run now,
        trigger `manual`. `claimed` (if given) answers the run id once its row exists;
        `traceparent` (W3C, e.g. a webhook's header) makes the run's span its child."""
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
        active = self.ledger.track(run_id, pipeline, schedule, None, "manual")
        active.asked_at = asked_at
        active.traceparent = traceparent
        timeout_s = schedule.timeout_s if schedule else 0
        return await self.execution.execute(active, pipeline, cfg, timeout_s=timeout_s)

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
            active = self.ledger.track(
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
            return await self.execution.execute(
                active, values["pipeline"], cfg, timeout_s=timeout_s
            )
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
                error = cancel_error("before it started")
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
        task = self._spawn(
            self.run_manual(
                schedule.pipeline, RunConfig(**kwargs), schedule=schedule, claimed=claimed
            )
        )
        task.add_done_callback(lambda task: _answer_unclaimed(task, claimed))
        return await claimed

    async def _take_slot(self, background: bool) -> Callable[[], None]:
        """A slot of the concurrency limit (its release). A background run takes only one
        that leaves another free (limit above 1): scheduled slots never wait behind it."""
        while True:
            await self._limit.acquire()
            if not background or self.max_concurrent_runs == 1 or not self._limit.locked():
                return self._limit.release
            self._limit.release()  # it was the last free one (or others wait for it)
            await asyncio.sleep(SPARE_POLL_S)


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
