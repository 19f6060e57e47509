"""The composition root of `flowerd serve`: builds, starts and drains everything.

    lock -> schedules (validated) -> history (migrated; dead daemon's runs -> crashed)
         -> runner -> catch-up -> scheduler -> control socket -> READY=1
         ... SIGHUP: reload | control: trigger / pause / resume / status ...
    SIGTERM -> STOPPING=1 -> stop firing -> drain (grace) -> cancel the rest -> exit 0

Every part registers its own cleanup on one AsyncExitStack, so a failure half-way
through start-up still closes what was opened. `start` builds the parts in that order
(its longer steps are daemon.serve.startup's) and `stage` says how far it got. The Daemon
holds them as objects: CatchUp (daemon.serve.catchup), Commands and Pauses (daemon.serve.
commands: the control channel's handlers), Status and LoopLag (daemon.serve.status); here:
start-up, the stop, the signals and the serve loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass

from daemon import logs
from daemon.errors import ScheduleError
from daemon.history import History
from daemon.http.address import parse_address
from daemon.http.metrics import Metrics
from daemon.incoming.journal import Journal
from daemon.incoming.wiring import Incoming, start_incoming
from daemon.observe.tracking import Tracking
from daemon.orchestration.wiring import Across, counted_pools
from daemon.pipeline import Pipelines, cluster
from daemon.project import database_lock, project_lock
from daemon.runner.events import finished_event
from daemon.runner.execute import utcnow
from daemon.runner.runner import Runner, install_task_guard
from daemon.runner.scheduler import Scheduler
from daemon.schedule import Schedule
from daemon.serve import collector, retention, startup, systemd
from daemon.serve.audit import Audit
from daemon.serve.catchup import CatchUp
from daemon.serve.commands import Commands, Pauses
from daemon.serve.control import ControlServer
from daemon.serve.lease import Lease
from daemon.serve.status import LoopLag, Status
from daemon.serve.validate import load_and_validate
from daemon.settings import Settings
from daemon.tell.delivery import THREAD_PREFIX as NOTIFY_THREAD_PREFIX
from daemon.tell.notifications import Notifications

log = logging.getLogger("daemon.app")  # its name before the move

# The event loop shares the GIL with the sync-driver threads (and the history writer's).
# A thread running pure Python keeps the GIL for up to the switch interval while the loop
# waits to fire a slot; CPython's default of 5 ms is that much lateness per wait. 1 ms
# bounds it (a CPU-bound thread here: the loop's timer p50 6.7 -> 4.0 ms on this VM).
SWITCH_INTERVAL_S = 0.001
EXIT_JOIN_S = 1.0  # at a stop, how long an unavailable history is waited for

# How far start-up got: each stage's part exists from then on (Daemon.reached).
STAGES = ("locks", "history", "runner", "notifications", "scheduler", "serving")


@dataclass
class _Stop:
    event: asyncio.Event
    signals: int = 0
    failure: str | None = None  # why the daemon stops by itself (exit non-zero)


class Daemon:
    """The running daemon: what the control channel and the signal handlers act on."""

    def __init__(self, settings: Settings, notifier: systemd.SystemdNotifier):
        self.settings = settings
        self.notifier = notifier
        self.instance_id = uuid.uuid4().hex[:12]
        self.started_monotonic = time.monotonic()
        self.started_at = utcnow()  # slots of schedules new to the history count from here
        self.stage = STAGES[0]
        # the parts start builds, in STAGES' order (each exists once its stage is reached)
        self.history: History
        self.lease: Lease
        self.runner: Runner
        self.notifications: Notifications
        self.across: Across
        self.incoming: Incoming  # files and webhooks: their journal (daemon.incoming)
        self.journal: Journal
        self.scheduler: Scheduler
        self._stop = _Stop(asyncio.Event())
        self.metrics = Metrics()
        # what each run reports (daemon.observe): node timings, and the configured sinks
        self.tracking = Tracking.from_settings(
            settings, count_error=self.metrics.count_tracking_error
        )
        self.pm = Pipelines(
            settings.base_dir, pipelines_dir=settings.pipelines_dir, node_hooks=self.tracking.hooks
        )
        self.http = None  # daemon.http.server.HttpServer while it listens
        self.audit: Audit  # made with the control socket (daemon.serve.audit)
        self.http_health = "ok"  # or why it could not listen (health's "http")
        self.pauses = Pauses()
        self.lag = LoopLag()
        self.measure_lag = self.lag.measure_lag
        # the parts that answer for the daemon; their entry points are the daemon's own
        self.report = Status(self)
        self.status, self.health = self.report.status, self.report.health
        self.status_line, self.refresh_status = self.report.status_line, self.report.refresh
        self.commands = Commands(self)
        self.trigger, self.reload = self.commands.trigger, self.commands.reload
        self.pause, self.resume = self.commands.pause, self.commands.resume
        self.pause_schedule = self.commands.pause_schedule

    @property
    def paused(self) -> set[str]:
        return self.pauses.paused

    @property
    def paused_reasons(self) -> dict[str, str | None]:
        return self.pauses.reasons

    @property
    def loop_lag_s(self) -> float:
        return self.lag.loop_lag_s

    def reached(self, stage: str) -> bool:
        """Start-up built `stage`'s part (STAGES) -- and every one before it."""
        return STAGES.index(self.stage) >= STAGES.index(stage)

    def stopping(self) -> bool:
        return self._stop.event.is_set()

    # -- start-up ---------------------------------------------------------------------
    async def start(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        stack.enter_context(database_lock(settings.state_dir, settings.db_url))
        stack.enter_context(project_lock(settings.base_dir, settings.db_url))
        schedules, warnings = load_and_validate(settings, self.pm)
        for warning in warnings:
            log.warning("%s", warning)
        self.history = await startup.open_history(settings, self.instance_id, self.notifier)
        stack.push_async_callback(startup.close_history, self.history, self.fail)
        self.history.on_fault(state=self.report.history_state, outage=self.fail)
        self.stage = "history"
        self.lease = Lease(
            self.history,
            lease_s=settings.lease_s,
            on_paused=self.commands.paused_elsewhere,
            on_reload=self.commands.reload_elsewhere,
        )
        await self.lease.register()
        stack.push_async_callback(self.lease.close)
        crashed = await startup.reap(self.history, settings.lease_s)
        await self._start_runner(stack, {s.id: s for s in schedules}, crashed)
        await self._start_firing(stack, schedules)
        log.info(
            "flowerd serving %d schedule(s) from %s; history in %s",
            len(schedules),
            settings.schedules_dir,
            settings.db_url,
        )

    async def _start_runner(
        self, stack: AsyncExitStack, by_id: dict[str, Schedule], crashed: list
    ) -> None:
        """The runner, its run logs and notifications; the reaped runs told."""
        self.runner = Runner(
            pm=self.pm,
            history=self.history,
            max_concurrent_runs=self.settings.max_concurrent_runs,
            threads=self.settings.threads,
            on_change=self.refresh_status,
            timezone=self.settings.timezone,
            max_log_bytes=self.settings.max_log_bytes,
            pools=counted_pools(self.settings.pools, self.metrics),
        )
        stack.callback(self.runner.close)
        self.runner.tracking = self.tracking
        stack.push_async_callback(self.tracking.close)
        self.stage = "runner"
        self.notifications = await startup.tell(
            self.history, self.settings, self.runner, self.metrics, stack
        )
        self.stage = "notifications"
        stack.callback(cluster.close_all)  # the Dask clients runs made (if any)
        stack.push_async_callback(self.runner.cancel_all)  # start-up failed half-way: record
        self.runner.events.add(self.metrics.on_run_event)
        for record in crashed:
            self.runner.events.emit(finished_event(record, by_id.get(record.schedule)))

    async def _start_firing(self, stack: AsyncExitStack, schedules: list[Schedule]) -> None:
        """Catch-up, then the scheduler, `after`, the control socket and HTTP."""
        self.pauses.load(await self.history.paused_reasons())
        self.across = Across(self, stack)  # deadlines, failures, `after`
        await startup.warm_up(self.pm, self.runner, self.settings, self.notifier, schedules)
        caught_up_to = utcnow()
        catchup = CatchUp(self.history, self.runner, self.lease, lambda: self.pauses.paused)
        new = await catchup.run(schedules, caught_up_to)
        self.incoming = await start_incoming(
            self,
            stack,
            schedules,
            base_dir=self.settings.base_dir,
            lease_s=self.settings.lease_s,
            on_event=self.metrics.count_event,
        )
        self.journal = self.incoming.journal
        self.scheduler = Scheduler(on_slot=self.across.on_slot)
        # a schedule the history has never seen fires its slots since this process
        # started too: start-up takes a moment, and no slot falls into it unrecorded
        first = {schedule_id: self.started_at for schedule_id in new}
        self.scheduler.start(schedules, paused=self.paused, since=caught_up_to, first=first)
        stack.callback(self.scheduler.shutdown)
        self.stage = "scheduler"
        self.lease.start(self.watch_part)
        await self.across.start_upstream()
        handlers = {**self.commands.handlers(), "stop": self.stop_asked}
        self.audit = Audit(self.history, lambda: self.scheduler.schedules, handlers)
        control = ControlServer(self.settings.control_socket, handlers, self.audit.from_cli)
        await control.start()
        stack.push_async_callback(control.close)
        await self._start_http(stack, schedules)
        self.stage = "serving"

    async def _start_http(self, stack: AsyncExitStack, schedules: list[Schedule]) -> None:
        self.metrics.bind(self)
        self.runner.spawn(self.metrics.seed(self.history, [s.id for s in schedules]))
        if parse_address(self.settings.http) is not None:
            from daemon.http import server

            self.http = await server.start(self, stack)

    # -- stopping ---------------------------------------------------------------------
    def fail(self, why: str) -> None:
        """A part cannot do its job: stop, and exit non-zero so systemd restarts us."""
        if self._stop.failure is None:
            self._stop.failure = why
            log.critical("flowerd stops: %s", why)
        self._stop.event.set()

    @property
    def exit_code(self) -> int:
        return 1 if self._stop.failure else 0

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self) -> None:
        self._stop.signals += 1
        self._stop.event.set()
        if self._stop.signals > 1 and self.reached("runner"):
            log.warning("second stop signal: cancelling running runs now")
            self.runner.spawn(self.runner.cancel_all())

    def _on_reload_signal(self) -> None:
        if not self.reached("scheduler"):  # still starting: it is reading the files now
            log.info("SIGHUP during start-up: the schedule files are being loaded already")
            return

        async def reload() -> None:
            with contextlib.suppress(ScheduleError):
                await self.reload()

        asyncio.get_running_loop().create_task(reload())

    async def stop_asked(self, request: dict) -> dict:
        """`flowerd stop` / POST /api/stop: as SIGTERM (a second one cancels runs)."""
        self._on_stop_signal()
        return {"message": f"stopping: running runs get up to {self.settings.shutdown_grace:g} s"}

    async def wait_for_stop(self) -> None:
        await self._stop.event.wait()

    @property
    def failure(self) -> str | None:
        return self._stop.failure

    async def start_or_stop(self, stack: AsyncExitStack) -> bool:
        """Start-up, ended early by a stop signal (or a failing part): True once started.
        What start-up opened is closed by the stack, bounded, recording what it can."""
        start = asyncio.create_task(self.start(stack), name="flowerd:start")
        stop = asyncio.create_task(self._stop.event.wait(), name="flowerd:start-stop")
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if start.done():
            start.result()  # a start-up error is the CLI's to print
            return True
        start.cancel()
        await asyncio.wait({start}, timeout=self.settings.shutdown_grace)
        if self.reached("runner"):
            await self.runner.drain(0)
        return False

    def watch_part(self, task: asyncio.Task) -> None:
        """A background part that ends with an error ends the daemon: never half-alive."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.fail(f"{task.get_name()} failed: {type(exc).__name__}: {exc}")

    async def drain(self) -> None:
        grace_s = self.settings.shutdown_grace
        self.scheduler.shutdown()
        self.notifier.stopping(f"draining {len(self.runner.active)} run(s)")
        self.notifier.extend_timeout(grace_s + 15)
        await self.runner.drain(0 if self._stop.signals > 1 else grace_s)


async def serve(settings: Settings) -> int:
    """`flowerd serve`: run until SIGTERM/SIGINT; exit code 0 after a clean drain, 1 when
    the daemon stopped because a part of it could not do its job (or rows were not
    written)."""
    install_task_guard(asyncio.get_running_loop())
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    notifier = systemd.SystemdNotifier.from_env()
    daemon = Daemon(settings, notifier)
    async with AsyncExitStack() as stack:
        stack.callback(notifier.close)
        daemon.install_signals()  # a stop during start-up ends start-up (see start_or_stop)
        # start-up's objects (modules, schedules, jobs, drivers) all live on: no collector
        # walks while they are built, then frozen out of its walks (daemon.serve.collector)
        with collector.paused(keep=True):
            started = await daemon.start_or_stop(stack)
        if not started:
            log.info("stopped during start-up")
            return daemon.exit_code
        background = [
            asyncio.create_task(daemon.measure_lag(), name="flowerd:lag"),
            asyncio.create_task(notifier.watchdog_loop(), name="flowerd:watchdog"),
        ]
        if settings.retention:
            pruning = retention.prune_forever(
                daemon.history, settings.retention, keep_failures=settings.retention_keep_failures
            )
            background.append(asyncio.create_task(pruning, name="flowerd:retention"))
        for task in background:
            task.add_done_callback(daemon.watch_part)
        notifier.ready(daemon.status_line())
        await daemon.wait_for_stop()
        log.info(
            "stopping: no new slots; waiting up to %g s for running runs", settings.shutdown_grace
        )
        await daemon.drain()
        for task in background:
            task.remove_done_callback(daemon.watch_part)
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    if daemon.exit_code:
        log.error("flowerd stopped: %s", daemon.failure)
    else:
        log.info("flowerd stopped")
    return daemon.exit_code


def exit_past_stuck_threads(code: int) -> None:
    """After the drain every row is written (or spooled) and the database closed. A sync
    pipeline that ignores its timeout still holds a pool thread, and a database driver
    thread may still wait out a lock; Python joins such threads at exit -- so they would
    hold up the stop until systemd kills us. Exit without them."""
    deadline = time.monotonic() + EXIT_JOIN_S
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in others:  # idle workers leave at once after the pool's shutdown
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = [t for t in others if t.is_alive()]
    # a delivery given up at the stop was said so by the notifier (daemon.tell.notifications): its
    # thread, still waiting on the target, is no surprise and no fault
    stuck = [t.name for t in alive if not t.name.startswith(NOTIFY_THREAD_PREFIX)]
    if stuck:
        log.warning(
            "exiting past %d thread(s) that did not return: %s", len(stuck), ", ".join(stuck)
        )
    if alive:
        logs.stop_background()
        logging.shutdown()
        os._exit(code)
