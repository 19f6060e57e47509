"""Start-up of `flowerd serve`, in order: the locks, the schedules (validated), the history
(migrated; a dead daemon's runs reaped as `crashed`), the lease, the runner with its run
logs and notifications, catch-up (daemon.serve.catchup), the scheduler, the control socket and
HTTP. Daemon.start (daemon.serve.daemon) builds the parts in that order and registers each
one's cleanup on the one AsyncExitStack; the steps that need more than a line are here,
each given what it uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

from daemon.history import History
from daemon.http.address import parse_address
from daemon.http.metrics import Metrics
from daemon.pipeline import Pipelines, RunConfig
from daemon.runner.execute import utcnow
from daemon.runner.runner import Runner
from daemon.schedule import Schedule
from daemon.serve import systemd
from daemon.settings import Settings
from daemon.tell.notifications import Notifications, page_url_for
from daemon.tell.runlogs import RunLogs

log = logging.getLogger("daemon.app")  # a part of the daemon: its lines keep that name

HISTORY_CLOSE_S = 5.0
OUTAGE_CLOSE_S = 1.0  # at an exit because the history stayed unavailable


async def open_history(
    settings: Settings, instance_id: str, notifier: systemd.SystemdNotifier
) -> History:
    notifier.status(f"starting: opening the history {settings.db_url}")
    return await History.open(
        settings.db_url,
        instance_id=instance_id,
        outage_s=settings.history_outage_s,
        max_row_bytes=settings.max_row_bytes,
        state_dir=settings.state_dir,
    )


async def close_history(history: History, fail: Callable[[str], None]) -> None:
    """Write what is held; a database still unavailable gets HISTORY_CLOSE_S, then
    the rest goes to the spool (and the exit status says so)."""
    # past history_outage_s the database had its time: a short last try, then the spool
    wait_s = OUTAGE_CLOSE_S if history.gave_up else HISTORY_CLOSE_S
    await history.close(timeout_s=wait_s)
    if history.spooled or history.unwritten:
        fail(
            f"{history.spooled + history.unwritten} row write(s) could not be "
            "written before the stop"
        )


async def reap(history: History, lease_s: float) -> list:
    started = time.perf_counter()
    crashed = await history.reap_crashed(now=utcnow(), lease_s=lease_s)
    if crashed:
        log.warning(
            "%d run(s) left unfinished by a daemon that died are now 'crashed' (%.0f ms)",
            len(crashed),
            (time.perf_counter() - started) * 1000,
        )
    return crashed


async def tell(
    history: History, settings: Settings, runner: Runner, metrics: Metrics, stack: AsyncExitStack
) -> Notifications:
    """Each run's log, and notifications: both hang off the runner's run events."""
    keeper = RunLogs(history, max_bytes=settings.max_log_bytes, quiet_daemon_log=True)
    await keeper.start()
    stack.push_async_callback(keeper.close)
    notifications = Notifications(
        history,
        default_targets=settings.notify,
        tail=keeper.tail,
        page_url=page_url_for(settings.public_url),
    )
    stack.push_async_callback(notifications.close)
    notifications.sender.counts.on_result(metrics.count_notification)
    keeper.attach(runner.events)  # first: a notification quotes the run's log
    notifications.attach(runner.events)
    return notifications


async def warm_up(
    pm: Pipelines,
    runner: Runner,
    settings: Settings,
    notifier: systemd.SystemdNotifier,
    schedules: list[Schedule],
) -> None:
    """What a first run or the rest of start-up would otherwise do on the event loop
    once slots fire -- each schedule's driver, the runner's threads, the HTTP
    server's import -- done before the scheduler starts, so that a schedule's first
    slot starts as punctually as the rest."""
    notifier.status("starting: building the schedules' drivers")
    started = time.perf_counter()
    shapes = set()
    for schedule in schedules:
        if schedule.isolation != "process" and schedule.driver_shape() not in shapes:
            shapes.add(schedule.driver_shape())  # one driver per shape, not per schedule
            await _prepare(pm, schedule)  # (a worker process builds its own)
    runner.warm_threads(sum(not s.async_driver for s in schedules))
    if parse_address(settings.http) is not None:
        import daemon.http.server  # noqa: F401 - its import, not on a slot's time
    log.debug("warmed up in %.3f s", time.perf_counter() - started)


async def _prepare(pm: Pipelines, schedule: Schedule) -> None:
    try:
        await pm.prepare(schedule.pipeline, RunConfig(**schedule.run_config_kwargs()))
    except Exception as exc:  # noqa: BLE001 - validated already: its run will say it
        log.warning("schedule %s: its driver is built by its first run: %s", schedule.id, exc)
