"""The composition root of `flowerd serve`: builds, starts and drains everything.

    lock -> schedules (validated) -> history (migrated; dead daemon's runs -> crashed)
         -> runner -> catch-up -> scheduler -> control socket -> READY=1
         ... SIGHUP: reload | control: trigger / pause / resume / status ...
    SIGTERM -> STOPPING=1 -> stop firing -> drain (grace) -> cancel the rest -> exit 0

Every part registers its own cleanup on one AsyncExitStack, so a failure half-way
through start-up still closes what was opened. Daemon's parts, mixed in: daemon.serve.startup
(start-up, reaping), daemon.serve.catchup, daemon.serve.commands (the control channel's handlers)
and daemon.serve.status (status, health, loop lag); here: the stop, the signals and the serve
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
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
from daemon.http.metrics import Metrics
from daemon.observe.tracking import Tracking
from daemon.pipeline import Pipelines
from daemon.runner.execute import utcnow
from daemon.runner.runner import Runner, install_task_guard
from daemon.runner.scheduler import Scheduler
from daemon.serve import retention, systemd
from daemon.serve.catchup import CatchUp
from daemon.serve.commands import Commands
from daemon.serve.startup import StartUp
from daemon.serve.status import Status
from daemon.settings import Settings
from daemon.tell.notifications import THREAD_PREFIX as NOTIFY_THREAD_PREFIX

log = logging.getLogger("daemon.app")  # its name before the move

# The event loop shares the GIL with the sync-driver threads (and the history writer's).
# A thread running pure Python keeps the GIL for up to the switch interval while the loop
# waits to fire a slot; CPython's default of 5 ms is that much lateness per wait. 1 ms
# bounds it (a CPU-bound thread here: the loop's timer p50 6.7 -> 4.0 ms on this VM).
SWITCH_INTERVAL_S = 0.001
EXIT_JOIN_S = 1.0  # at a stop, how long an unavailable history is waited for


@dataclass
class _Stop:
    event: asyncio.Event
    signals: int = 0
    failure: str | None = None  # why the daemon stops by itself (exit non-zero)


class Daemon(StartUp, CatchUp, Commands, Status):
    """The running daemon: what the control channel and the signal handlers act on."""

    def __init__(self, settings: Settings, notifier: systemd.SystemdNotifier):
        self.settings = settings
        self.notifier = notifier
        self.instance_id = uuid.uuid4().hex[:12]
        self.started_monotonic = time.monotonic()
        self.started_at = utcnow()  # slots of schedules new to the history count from here
        self.loop_lag_s = 0.0
        self.paused: set[str] = set()
        self.paused_reasons: dict[str, str | None] = {}  # why each paused (None: by hand)
        self.history: History
        self.runner: Runner
        self.scheduler: Scheduler
        self._stop = _Stop(asyncio.Event())
        self._reload_lock = asyncio.Lock()
        self._status_due = False
        self.metrics = Metrics()
        # what each run reports (daemon.observe): node timings, and the configured sinks
        self.tracking = Tracking.from_settings(
            settings, count_error=self.metrics.count_tracking_error
        )
        self.pm = Pipelines(
            settings.base_dir, pipelines_dir=settings.pipelines_dir, node_hooks=self.tracking.hooks
        )
        self.http = None  # daemon.http.server.HttpServer while it listens
        self.http_health = "ok"  # or why it could not listen (health's "http")

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
        if self._stop.signals > 1 and hasattr(self, "runner"):
            log.warning("second stop signal: cancelling running runs now")
            self.runner.spawn(self.runner.cancel_all())

    def _on_reload_signal(self) -> None:
        if not hasattr(self, "scheduler"):  # still starting: it is reading the files now
            log.info("SIGHUP during start-up: the schedule files are being loaded already")
            return

        async def reload() -> None:
            with contextlib.suppress(ScheduleError):
                await self.reload()

        asyncio.get_running_loop().create_task(reload())

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
        if hasattr(self, "runner"):
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
        if not await daemon.start_or_stop(stack):
            log.info("stopped during start-up")
            return daemon.exit_code
        background = [
            asyncio.create_task(daemon.measure_lag(), name="flowerd:lag"),
            asyncio.create_task(notifier.watchdog_loop(), name="flowerd:watchdog"),
        ]
        if settings.retention:
            pruning = retention.prune_forever(daemon.history, settings.retention)
            background.append(asyncio.create_task(pruning, name="flowerd:retention"))
        for task in background:
            task.add_done_callback(daemon.watch_part)
        gc.freeze()  # start-up's objects (modules, drivers, graphs) leave the collector's walk
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
