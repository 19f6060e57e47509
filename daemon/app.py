"""The composition root of `flowerd serve`: builds, starts and drains everything.

    lock -> schedules (validated) -> history (migrated; dead daemon's runs -> crashed)
         -> runner -> catch-up -> scheduler -> control socket -> READY=1
         ... SIGHUP: reload | control: trigger / pause / resume / status ...
    SIGTERM -> STOPPING=1 -> stop firing -> drain (grace) -> cancel the rest -> exit 0

Every part registers its own cleanup on one AsyncExitStack, so a failure half-way
through start-up still closes what was opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daemon import systemd
from daemon.control import ControlServer
from daemon.errors import DaemonAlreadyRunning, FlowerdError, ScheduleError, did_you_mean
from daemon.history import History, RunError
from daemon.http.address import parse_address
from daemon.http.metrics import Metrics
from daemon.pipeline import PipelineManager, RunConfig
from daemon.runner import Runner, install_task_guard, utcnow
from daemon.schedule import Schedule, load_schedules
from daemon.scheduler import Scheduler
from daemon.settings import Settings
from daemon.trigger import count_slots, slots_between

log = logging.getLogger(__name__)

MAX_MISSED_ROWS = 100  # per schedule and outage; the rest are counted in one summary row
LAG_PROBE_S = 0.5
MAX_COUNTED_SLOTS = 10_000  # cron slots are walked to count them (~30 us each): bounded


# --------------------------------------------------------------------------- validation


def load_and_validate(settings: Settings, pm: PipelineManager) -> tuple[list[Schedule], list[str]]:
    """Every schedule file parsed, and every schedule's pipeline built with its own
    options. Returns (schedules, warnings); raises ScheduleError listing every problem."""
    schedules = load_schedules(
        settings.schedules_dir,
        default_timezone=settings.timezone,
        pipelines_dir=settings.pipelines_dir,
    )
    problems, warnings = [], []
    for schedule in schedules:
        where = f"{_display(schedule.file, settings.base_dir)}: [{schedule.id}]"
        try:
            found = pm.validate(schedule.pipeline, RunConfig(**schedule.run_config_kwargs()))
        except (FlowerdError, ImportError, ValueError, TypeError) as exc:
            problems.append(f"{where} pipeline {schedule.pipeline!r}: {exc}")
            continue
        warnings.extend(f"{where} {w}" for w in found)
    if problems:
        raise ScheduleError(problems)
    return schedules, warnings


def _display(path: Path, base: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(base))
    return str(path)


# --------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def exclusive_lock(state_dir: Path, database: str):
    """One daemon per database: a second `flowerd serve` refuses to start."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "flowerd.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise DaemonAlreadyRunning(
                f"another flowerd daemon ({holder}) is already serving {database}; "
                f"stop it first (lock: {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the daemon


@dataclass
class _Stop:
    event: asyncio.Event
    signals: int = 0


class Daemon:
    """The running daemon: what the control channel and the signal handlers act on."""

    def __init__(self, settings: Settings, notifier: systemd.Notifier):
        self.settings = settings
        self.notifier = notifier
        self.instance_id = uuid.uuid4().hex[:12]
        self.pm = PipelineManager(settings.base_dir, pipelines_dir=settings.pipelines_dir)
        self.started_monotonic = time.monotonic()
        self.loop_lag_s = 0.0
        self.paused: set[str] = set()
        self.history: History
        self.runner: Runner
        self.scheduler: Scheduler
        self._stop = _Stop(asyncio.Event())
        self._reload_lock = asyncio.Lock()
        self.metrics = Metrics()
        self.http = None  # daemon.http.server.HttpServer while it listens

    # -- start-up ---------------------------------------------------------------------
    async def start(self, stack: AsyncExitStack) -> None:
        stack.enter_context(exclusive_lock(self.settings.state_dir, self.settings.db_url))
        schedules, warnings = load_and_validate(self.settings, self.pm)
        for warning in warnings:
            log.warning("%s", warning)
        self.history = await History.open(self.settings.db_url, instance_id=self.instance_id)
        stack.push_async_callback(self.history.close)
        await self._reap()
        self.runner = Runner(
            pm=self.pm,
            history=self.history,
            max_concurrent_runs=self.settings.max_concurrent_runs,
            threads=self.settings.threads,
            on_change=self.refresh_status,
        )
        stack.callback(self.runner.close)
        stack.push_async_callback(self.runner.cancel_all)  # start-up failed half-way: record
        self.runner.events.add(self.metrics.on_run_event)
        self.paused = await self.history.paused()
        caught_up_to = utcnow()
        await self._catch_up(schedules, caught_up_to)
        self.scheduler = Scheduler(on_slot=self.runner.fire)
        self.scheduler.start(schedules, paused=self.paused, since=caught_up_to)
        stack.callback(self.scheduler.shutdown)
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

    async def _start_http(self, stack: AsyncExitStack, schedules: list[Schedule]) -> None:
        self.metrics.bind(self)
        self.runner.spawn(self.metrics.seed(self.history, [s.id for s in schedules]))
        if parse_address(self.settings.http) is not None:
            from daemon.http import server

            self.http = await server.start(self, stack)

    async def _reap(self) -> None:
        started = time.perf_counter()
        crashed = await self.history.reap_crashed(now=utcnow())
        if crashed:
            log.warning(
                "%d run(s) left unfinished by a daemon that died are now 'crashed' (%.0f ms)",
                len(crashed),
                (time.perf_counter() - started) * 1000,
            )

    # -- catch-up ---------------------------------------------------------------------
    async def _catch_up(self, schedules: list[Schedule], now: datetime) -> None:
        last_slots = await self.history.last_slots()
        for schedule in schedules:
            last = last_slots.get(schedule.id)
            if last is None or not schedule.enabled or schedule.id in self.paused:
                continue
            slots = slots_between(schedule, last, now, limit=MAX_MISSED_ROWS + 1)
            slots = [slot.astimezone(UTC) for slot in slots]
            if slots:
                await self._catch_up_schedule(schedule, slots, last)

    async def _catch_up_schedule(
        self, schedule: Schedule, slots: list[datetime], last: datetime
    ) -> None:
        """`slots` holds at most MAX_MISSED_ROWS + 1 of the newest slots of the outage; if
        it is full, its oldest row stands for, and counts, every earlier slot too."""
        if len(slots) > MAX_MISSED_ROWS:
            await self._missed_row(schedule, slots[0], _outage_summary(schedule, last, slots))
            slots = slots[1:]
        if schedule.catchup == "none":
            to_run, missed = [], slots
        elif schedule.catchup == "latest":
            to_run, missed = slots[-1:], slots[:-1]
        else:
            to_run, missed = slots, []
        why = RunError(
            type="Downtime",
            message=f"the slot passed while no daemon ran (catchup = {schedule.catchup!r})",
        )
        for slot in missed:
            await self._missed_row(schedule, slot, why)
        if missed:
            log.warning("%d slot(s) of %s missed while no daemon ran", len(missed), schedule.id)
        if to_run:
            log.info(
                "catching up %d slot(s) of %s (catchup = %r)",
                len(to_run),
                schedule.id,
                schedule.catchup,
            )
            self.runner.spawn(self._run_in_order(schedule, to_run))

    async def _run_in_order(self, schedule: Schedule, slots: list[datetime]) -> None:
        for slot in slots:
            await self.runner.run_slot(schedule, slot, "catchup")

    async def _missed_row(self, schedule: Schedule, slot: datetime, error: RunError) -> None:
        await self.history.record_slot(
            schedule=schedule.id,
            pipeline=schedule.pipeline,
            scheduled_at=slot,
            status="missed",
            trigger="catchup",
            async_driver=schedule.async_driver,
            error=error,
        )

    # -- control commands -------------------------------------------------------------
    def _handlers(self):
        return {
            "status": self.status,
            "reload": self.reload,
            "trigger": self.trigger,
            "pause": self.pause,
            "resume": self.resume,
        }

    def _schedule(self, request: dict) -> Schedule:
        schedule_id = request.get("schedule")
        schedules = self.scheduler.schedules
        if schedule_id not in schedules:
            hint = did_you_mean(str(schedule_id), schedules)
            raise FlowerdError(
                f"no schedule {schedule_id!r}{hint}; "
                f"schedules: {', '.join(sorted(schedules)) or '(none)'}"
            )
        return schedules[schedule_id]

    async def trigger(self, request: dict) -> dict:
        schedule = self._schedule(request)
        run_id = await self.runner.trigger(schedule, request.get("inputs"))
        return {
            "message": f"triggered {schedule.id} (pipeline {schedule.pipeline}): run {run_id}",
            "run_id": run_id,
        }

    async def pause(self, request: dict) -> dict:
        schedule = self._schedule(request)
        await self.history.set_paused(schedule.id, True)
        self.paused.add(schedule.id)
        self.scheduler.pause(schedule.id)
        self.refresh_status()
        return {"message": f"paused {schedule.id}"}

    async def resume(self, request: dict) -> dict:
        schedule = self._schedule(request)
        await self.history.set_paused(schedule.id, False)
        self.paused.discard(schedule.id)
        self.scheduler.resume(schedule.id)
        self.refresh_status()
        return {"message": f"resumed {schedule.id}"}

    async def status(self, request: dict | None = None) -> dict:
        schedules = []
        for schedule in self.scheduler.schedules.values():
            nxt = self.scheduler.next_fire(schedule.id)
            schedules.append(
                {
                    "id": schedule.id,
                    "pipeline": schedule.pipeline,
                    "trigger": schedule.describe_trigger(),
                    "enabled": schedule.enabled,
                    "paused": schedule.id in self.paused,
                    "next": nxt.astimezone(UTC).isoformat() if nxt else None,
                }
            )
        return {
            "pid": os.getpid(),
            "instance_id": self.instance_id,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "loop_lag_ms": round(self.loop_lag_s * 1000, 3),
            "threads_busy": self.runner.threads_busy,
            "running": [run.describe() for run in self.runner.active.values()],
            "schedules": schedules,
            "database": self.settings.db_url,
            "daemon": self.instance_id,
            "health": self.health(),
            "http": self.http.url if self.http else None,
        }

    def health(self) -> dict[str, str]:
        """One entry per part: "ok", or a sentence saying what is wrong and since when
        (`status --json`'s `health`, `/healthz`, systemd's STATUS=)."""
        return {
            "scheduler": self.scheduler.health(),
            "runner": "ok",
            "history": self.history.health(),
        }

    async def reload(self, request: dict | None = None) -> dict:
        """Validate everything first; apply the difference only if all of it is valid."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                schedules, warnings = await asyncio.to_thread(
                    load_and_validate,
                    self.settings,
                    PipelineManager(
                        self.settings.base_dir, pipelines_dir=self.settings.pipelines_dir
                    ),
                )
                summary = self._apply({s.id: s for s in schedules})
            except ScheduleError as exc:
                log.error("reload refused, keeping the current schedules:\n%s", exc)
                raise
            finally:
                self.notifier.ready()  # after the new schedules are in place (or refused)
            for warning in warnings:
                log.warning("%s", warning)
            log.info("reloaded: %s", summary)
            self.refresh_status()
            return {"message": f"reloaded: {summary}", "warnings": warnings}

    def _apply(self, new: dict[str, Schedule]) -> str:
        old = self.scheduler.schedules
        added = [s for s in new if s not in old]
        removed = [s for s in old if s not in new]
        changed = [s for s in new if s in old and new[s] != old[s]]
        for schedule_id in removed:
            self.scheduler.remove(schedule_id)
        for schedule_id in added + changed:
            self.scheduler.replace(new[schedule_id], paused=schedule_id in self.paused)
        return (
            f"{len(added)} added, {len(removed)} removed, {len(changed)} changed, "
            f"{len(new) - len(added) - len(changed)} unchanged"
        )

    # -- status, lag, signals ---------------------------------------------------------
    def status_line(self) -> str:
        if self._stop.event.is_set():
            return f"stopping: {len(self.runner.active)} run(s) still running"
        schedules = self.scheduler.schedules
        times = [t for t in (self.scheduler.next_fire(s) for s in schedules) if t]
        nxt = min(times).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if times else "none"
        return f"{len(schedules)} schedule(s), {len(self.runner.active)} running, next fire {nxt}"

    def refresh_status(self) -> None:
        if hasattr(self, "scheduler"):
            self.notifier.status(self.status_line())

    async def measure_lag(self) -> None:
        """Event-loop lag: how late a timer fires. A sync node on the loop shows up here."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.loop_lag_s = max(0.0, loop.time() - expected)
            if self.loop_lag_s > 1.0:
                log.warning(
                    "the event loop was blocked for %.1f s (a sync node on the async driver?)",
                    self.loop_lag_s,
                )

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

    async def drain(self) -> None:
        grace_s = self.settings.shutdown_grace
        self.scheduler.shutdown()
        self.notifier.stopping(f"draining {len(self.runner.active)} run(s)")
        self.notifier.extend_timeout(grace_s + 15)
        await self.runner.drain(0 if self._stop.signals > 1 else grace_s)


async def serve(settings: Settings) -> int:
    """`flowerd serve`: run until SIGTERM/SIGINT; exit code 0 after a clean drain."""
    install_task_guard(asyncio.get_running_loop())
    notifier = systemd.Notifier.from_env()
    daemon = Daemon(settings, notifier)
    async with AsyncExitStack() as stack:
        stack.callback(notifier.close)
        daemon.install_signals()  # a stop during start-up still ends in a clean drain
        await daemon.start(stack)
        background = [
            asyncio.create_task(daemon.measure_lag(), name="flowerd:lag"),
            asyncio.create_task(notifier.watchdog_loop(), name="flowerd:watchdog"),
        ]
        notifier.ready(daemon.status_line())
        await daemon.wait_for_stop()
        log.info(
            "stopping: no new slots; waiting up to %g s for running runs", settings.shutdown_grace
        )
        await daemon.drain()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    log.info("flowerd stopped")
    return 0


def _outage_summary(schedule: Schedule, last: datetime, slots: list[datetime]) -> RunError:
    counted = count_slots(schedule, last, slots[0], cap=MAX_COUNTED_SLOTS)
    how_many = f"{counted:,}" if counted is not None else f"more than {MAX_COUNTED_SLOTS:,}"
    return RunError(
        type="MissedSlots",
        message=f"{how_many} slots from after {last.isoformat()} up to this one "
        f"({slots[0].isoformat()}) passed while no daemon ran; this row counts them, and the "
        f"newest {len(slots) - 1} are recorded one by one",
    )


def exit_past_stuck_threads(code: int) -> None:
    """After a clean drain every row is written and the database closed. A sync pipeline
    that ignores its timeout still holds a pool thread, and Python joins pool threads at
    exit -- so it would hold up the stop until systemd kills us. Exit without them."""
    pool = [t for t in threading.enumerate() if t.name.startswith("flowerd-run")]
    for thread in pool:  # idle workers leave at once after the pool's shutdown
        thread.join(timeout=0.2)
    stuck = [t.name for t in pool if t.is_alive()]
    if stuck:
        log.warning(
            "exiting past %d pipeline thread(s) that did not return: %s",
            len(stuck),
            ", ".join(stuck),
        )
        logging.shutdown()
        os._exit(code)
