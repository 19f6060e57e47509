"""Start-up of `flowerd serve`, in order: the locks, the schedules (validated), the history
(migrated; a dead daemon's runs reaped as `crashed`), the lease, the runner with its run
logs and notifications, catch-up (daemon.serve.catchup), the scheduler, the control socket and
HTTP. Every part registers its own cleanup on the one AsyncExitStack. Mixed into Daemon
(daemon.serve.daemon).
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from datetime import datetime

from daemon.history import History
from daemon.http.address import parse_address
from daemon.http.metrics import Metrics
from daemon.orchestration.wiring import Across, counted_pools
from daemon.pipeline import Pipelines, RunConfig, cluster
from daemon.project import database_lock, project_lock
from daemon.runner.events import finished_event
from daemon.runner.execute import utcnow
from daemon.runner.runner import Runner
from daemon.runner.scheduler import Scheduler
from daemon.schedule import Schedule
from daemon.serve import systemd
from daemon.serve.control import ControlServer
from daemon.serve.lease import Lease
from daemon.serve.validate import load_and_validate
from daemon.settings import Settings
from daemon.tell.notifications import Notifications, page_url_for
from daemon.tell.runlogs import RunLogs

log = logging.getLogger("daemon.app")  # a part of the daemon: its lines keep that name

HISTORY_CLOSE_S = 5.0
OUTAGE_CLOSE_S = 1.0  # at an exit because the history stayed unavailable


class StartUp:
    """Mixed into Daemon: `start` builds every part; `_reap` and `_close_history` bracket
    the history's life."""

    settings: Settings
    notifier: systemd.SystemdNotifier
    history: History
    runner: Runner
    scheduler: Scheduler
    pm: Pipelines
    metrics: Metrics
    started_at: datetime
    paused: set[str]

    async def start(self, stack: AsyncExitStack) -> None:
        stack.enter_context(database_lock(self.settings.state_dir, self.settings.db_url))
        stack.enter_context(project_lock(self.settings.base_dir, self.settings.db_url))
        schedules, warnings = load_and_validate(self.settings, self.pm)
        for warning in warnings:
            log.warning("%s", warning)
        self.notifier.status(f"starting: opening the history {self.settings.db_url}")
        self.history = await History.open(
            self.settings.db_url,
            instance_id=self.instance_id,
            outage_s=self.settings.history_outage_s,
            max_row_bytes=self.settings.max_row_bytes,
            state_dir=self.settings.state_dir,
        )
        stack.push_async_callback(self._close_history)
        self.history.on_fault(state=self._history_state, outage=self.fail)
        self.lease = Lease(
            self.history,
            lease_s=self.settings.lease_s,
            on_paused=self._paused_elsewhere,
            on_reload=self._reload_elsewhere,
        )
        await self.lease.register()
        stack.push_async_callback(self.lease.close)
        crashed = await self._reap()
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
        await self._tell(stack)
        stack.callback(cluster.close_all)  # the Dask clients runs made (if any)
        stack.push_async_callback(self.runner.cancel_all)  # start-up failed half-way: record
        self.runner.events.add(self.metrics.on_run_event)
        by_id = {schedule.id: schedule for schedule in schedules}
        for record in crashed:
            self.runner.events.emit(finished_event(record, by_id.get(record.schedule)))
        self.paused_reasons = await self.history.paused_reasons()
        self.paused = set(self.paused_reasons)
        self.across = Across(self, stack)  # pools, deadlines, failures, `after`
        await self._warm_up(schedules)
        caught_up_to = utcnow()
        new = await self._catch_up(schedules, caught_up_to)
        self.scheduler = Scheduler(on_slot=self.across.on_slot)
        # a schedule the history has never seen fires its slots since this process
        # started too: start-up takes a moment, and no slot falls into it unrecorded
        first = {schedule_id: self.started_at for schedule_id in new}
        self.scheduler.start(schedules, paused=self.paused, since=caught_up_to, first=first)
        stack.callback(self.scheduler.shutdown)
        self.lease.start(self.watch_part)
        await self.across.start_upstream()
        control = ControlServer(self.settings.control_socket, self._handlers())
        await control.start()
        stack.push_async_callback(control.close)
        await self._start_http(stack, schedules)
        log.info(
            "flowerd serving %d schedule(s) from %s; history in %s",
            len(schedules),
            self.settings.schedules_dir,
            self.settings.db_url,
        )

    async def _warm_up(self, schedules: list[Schedule]) -> None:
        """What a first run or the rest of start-up would otherwise do on the event loop
        once slots fire -- each schedule's driver, the runner's threads, the HTTP
        server's import -- done before the scheduler starts, so that a schedule's first
        slot starts as punctually as the rest."""
        self.notifier.status("starting: building the schedules' drivers")
        started = time.perf_counter()
        for schedule in schedules:
            if schedule.isolation != "process":  # a worker builds its own
                await self._prepare(schedule)
        self.runner.warm_threads(sum(not s.async_driver for s in schedules))
        if parse_address(self.settings.http) is not None:
            import daemon.http.server  # noqa: F401 - its import, not on a slot's time
        log.debug("warmed up in %.3f s", time.perf_counter() - started)

    async def _prepare(self, schedule: Schedule) -> None:
        try:
            await self.pm.prepare(schedule.pipeline, RunConfig(**schedule.run_config_kwargs()))
        except Exception as exc:  # noqa: BLE001 - validated already: its run will say it
            log.warning("schedule %s: its driver is built by its first run: %s", schedule.id, exc)

    async def _start_http(self, stack: AsyncExitStack, schedules: list[Schedule]) -> None:
        self.metrics.bind(self)
        self.runner.spawn(self.metrics.seed(self.history, [s.id for s in schedules]))
        if parse_address(self.settings.http) is not None:
            from daemon.http import server

            self.http = await server.start(self, stack)

    async def _close_history(self) -> None:
        """Write what is held; a database still unavailable gets HISTORY_CLOSE_S, then
        the rest goes to the spool (and the exit status says so)."""
        # past history_outage_s the database had its time: a short last try, then the spool
        wait_s = OUTAGE_CLOSE_S if self.history.gave_up else HISTORY_CLOSE_S
        await self.history.close(timeout_s=wait_s)
        if self.history.spooled or self.history.unwritten:
            self.fail(
                f"{self.history.spooled + self.history.unwritten} row write(s) could not be "
                "written before the stop"
            )

    async def _tell(self, stack: AsyncExitStack) -> None:
        """Each run's log, and notifications: both hang off the runner's run events."""
        keeper = RunLogs(self.history, max_bytes=self.settings.max_log_bytes, quiet_daemon_log=True)
        await keeper.start()
        stack.push_async_callback(keeper.close)
        self.notifications = Notifications(
            self.history,
            default_targets=self.settings.notify,
            tail=keeper.tail,
            page_url=page_url_for(self.settings.public_url),
        )
        stack.push_async_callback(self.notifications.close)
        self.notifications.sender.counts.on_result(self.metrics.count_notification)
        keeper.attach(self.runner.events)  # first: a notification quotes the run's log
        self.notifications.attach(self.runner.events)

    async def _reap(self) -> list:
        started = time.perf_counter()
        crashed = await self.history.reap_crashed(now=utcnow(), lease_s=self.settings.lease_s)
        if crashed:
            log.warning(
                "%d run(s) left unfinished by a daemon that died are now 'crashed' (%.0f ms)",
                len(crashed),
                (time.perf_counter() - started) * 1000,
            )
        return crashed
