"""Across schedules: what joins the daemon for orchestration (DESIGN.md "Across
schedules") -- pools (daemon.runner.pools), deadlines (daemon.orchestration.deadlines), the failure
policy (daemon.orchestration.failures), `after` (daemon.orchestration.upstream) and a trigger's
inputs -- wired to the runner's events, the metrics and the notifier in one place, so
serve/daemon.py only calls in.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from daemon.errors import UsageError
from daemon.history import History
from daemon.inputs import check_not_reserved
from daemon.orchestration.deadlines import Deadlines
from daemon.orchestration.failures import FailurePolicy
from daemon.orchestration.upstream import SLOT_TRIGGERS, Upstream
from daemon.pipeline import Pipelines, RunConfig
from daemon.runner.pools import Pools
from daemon.runner.runner import Runner
from daemon.runner.scheduler import Scheduler
from daemon.schedule import Schedule

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge


class Counted(Protocol):
    """The metrics orchestration counts in (daemon.http.metrics.Metrics)."""

    pool_waiting: Gauge
    runs_late: Counter


class Told(Protocol):
    """The notifier of schedule states (daemon.tell.notifications.Notifications)."""

    def notify_state(self, schedule: Schedule, word: str, message: str) -> None: ...


class DaemonView(Protocol):
    """What Across uses of the daemon (daemon.serve.daemon), once its runner exists; the
    scheduler from the moment slots fire."""

    runner: Runner
    scheduler: Scheduler
    history: History
    pm: Pipelines
    metrics: Counted
    notifications: Told

    @property
    def paused(self) -> set[str]: ...

    async def pause_schedule(self, schedule: Schedule, reason: str | None = None) -> None: ...


def counted_pools(limits: dict[str, int], metrics: Counted) -> Pools:
    """The `pools` setting's limits for the Runner; the runs waiting for each pool are
    counted in `flowerd_pool_waiting{pool}`."""

    def waiting(pool: str, count: int) -> None:
        metrics.pool_waiting.labels(pool).set(count)

    return Pools(limits, on_waiting=waiting)


class Across:
    """Made by the Daemon once its runner exists; `start_upstream` once it fires."""

    def __init__(self, daemon: DaemonView, stack: AsyncExitStack):
        self.daemon = daemon
        runner = daemon.runner
        self.deadlines = Deadlines(waiting=self._slot_waiting, on_late=self._late)
        stack.callback(self.deadlines.close)
        self.failures = FailurePolicy(
            history=daemon.history,
            paused=lambda: daemon.paused,
            schedules=lambda: daemon.scheduler.schedules,
            pause=daemon.pause_schedule,
            notify_state=daemon.notifications.notify_state,
            spawn=runner.spawn,
        )
        self.upstream = Upstream(
            schedules=lambda: daemon.scheduler.downstream,  # only those with `after` count
            fire=self._on_upstream,
            paused=lambda: daemon.paused,
            refresh=self._newest_successes,
            spawn=runner.spawn,
        )
        for listener in (self.deadlines.on_event, self.failures.on_event, self.upstream.on_event):
            runner.events.add(listener)

    async def start_upstream(self) -> None:
        """`after` schedules: seeded from the history, then due ones fired (upstreams
        that succeeded while no daemon ran)."""
        history = self.daemon.history
        self.upstream.seed(
            await history.newest_slots(triggers=SLOT_TRIGGERS, status="success"),
            await history.newest_slots(triggers=("upstream",)),
        )
        self.upstream.evaluate()

    # -- the daemon calls in ------------------------------------------------------------
    def on_slot(self, schedule: Schedule, slot: datetime) -> None:
        """The scheduler's slots: a deadline timer, then the runner."""
        self.deadlines.arm(schedule, slot)
        self.daemon.runner.fire(schedule, slot)

    def resumed(self, schedule_id: str) -> None:
        self.failures.resumed(schedule_id)
        self.upstream.evaluate()

    def reloaded(self) -> None:
        self.upstream.evaluate()  # a new or changed `after` schedule may be due now

    async def trigger_inputs(self, schedule: Schedule, raw: dict) -> dict:
        """A trigger's inputs as a schedule file's are: reserved names refused, values
        converted to the types the DAG declares (a name it lacks is refused)."""
        if not raw:
            return {}
        try:
            check_not_reserved(raw)
        except ValueError as exc:
            raise UsageError(f"inputs: {exc}") from None
        cfg = RunConfig(**schedule.run_config_kwargs())
        return await asyncio.to_thread(
            self.daemon.pm.typed_inputs, schedule.pipeline, raw,
            async_driver=schedule.async_driver, run_config=cfg,
        )  # fmt: skip

    # -- hooks ------------------------------------------------------------------------
    async def _newest_successes(self, names: tuple[str, ...]) -> dict[str, datetime]:
        history = self.daemon.history
        return await history.newest_slots(triggers=SLOT_TRIGGERS, status="success", schedules=names)

    def _on_upstream(self, schedule: Schedule, slot: datetime) -> None:
        self.deadlines.arm(schedule, slot)
        self.daemon.runner.fire(schedule, slot, "upstream")

    def _slot_waiting(self, schedule_id: str, slot: datetime) -> bool:
        """The slot's run is still queued or running (or about to be claimed)."""
        runner = self.daemon.runner
        active = runner.active.values()
        mine = any(run.schedule == schedule_id and run.scheduled_at == slot for run in active)
        return mine or runner.claiming(schedule_id)

    def _late(self, schedule: Schedule, slot: datetime, message: str) -> None:
        self.daemon.metrics.runs_late.labels(schedule.id).inc()
        self.daemon.notifications.notify_state(schedule, "late", message)
