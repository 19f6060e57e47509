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
from datetime import UTC, datetime

from daemon import cluster, logs, retention, systemd
from daemon.across import Across
from daemon.backfill import Jobs
from daemon.calendars import EXCLUDED, excluded_reason
from daemon.control import ControlServer
from daemon.errors import FlowerdError, ScheduleError, did_you_mean
from daemon.events import RunEvent, finished_event
from daemon.history import History, RunError
from daemon.http.address import parse_address
from daemon.http.metrics import Metrics
from daemon.lease import Lease
from daemon.notify import Notifier, page_url_for
from daemon.pipeline import Pipelines
from daemon.project import database_lock, project_lock
from daemon.runlogs import RunLogs
from daemon.runner import Runner, install_task_guard, utcnow
from daemon.schedule import Schedule
from daemon.scheduler import Scheduler
from daemon.settings import Settings
from daemon.trigger import count_slots, slots_between
from daemon.validate import load_and_validate

log = logging.getLogger(__name__)

MAX_MISSED_ROWS = 100  # per schedule and outage; the rest are counted in one summary row
LAG_PROBE_S = 0.5
STATUS_EVERY_S = 0.1
HISTORY_CLOSE_S = 5.0
# The event loop shares the GIL with the sync-driver threads (and the history writer's).
# A thread running pure Python keeps the GIL for up to the switch interval while the loop
# waits to fire a slot; CPython's default of 5 ms is that much lateness per wait. 1 ms
# bounds it (a CPU-bound thread here: the loop's timer p50 6.7 -> 4.0 ms on this VM).
SWITCH_INTERVAL_S = 0.001
EXIT_JOIN_S = 1.0  # at a stop, how long an unavailable history is waited for
MAX_COUNTED_SLOTS = 10_000  # cron slots are walked to count them (~30 us each): bounded


# --------------------------------------------------------------------------- the lock


# --------------------------------------------------------------------------- the daemon


@dataclass
class _Stop:
    event: asyncio.Event
    signals: int = 0
    failure: str | None = None  # why the daemon stops by itself (exit non-zero)


class Daemon:
    """The running daemon: what the control channel and the signal handlers act on."""

    def __init__(self, settings: Settings, notifier: systemd.Notifier):
        self.settings = settings
        self.notifier = notifier
        self.instance_id = uuid.uuid4().hex[:12]
        self.pm = Pipelines(settings.base_dir, pipelines_dir=settings.pipelines_dir)
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
        self.http = None  # daemon.http.server.HttpServer while it listens

    # -- start-up ---------------------------------------------------------------------
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
        )
        stack.callback(self.runner.close)
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

    async def _start_http(self, stack: AsyncExitStack, schedules: list[Schedule]) -> None:
        self.metrics.bind(self)
        self.runner.spawn(self.metrics.seed(self.history, [s.id for s in schedules]))
        if parse_address(self.settings.http) is not None:
            from daemon.http import server

            self.http = await server.start(self, stack)
            if self.http is not None:  # port 0 is known only now
                base = self.http.url
                self.notifications.page_url = lambda run_id: f"{base}/runs/{run_id}"

    async def _close_history(self) -> None:
        """Write what is held; a database still unavailable gets HISTORY_CLOSE_S, then
        the rest goes to the spool (and the exit status says so)."""
        await self.history.close(timeout_s=HISTORY_CLOSE_S)
        if self.history.spooled or self.history.unwritten:
            self.fail(
                f"{self.history.spooled + self.history.unwritten} row write(s) could not be "
                "written before the stop"
            )

    def _history_state(self) -> None:
        health = self.history.health()
        if hasattr(self, "notifications"):
            self.notifications.history_health(health)
        if health != "ok":
            self.notifier.status(f"history {health}")
        else:
            self.refresh_status()

    def fail(self, why: str) -> None:
        """A part cannot do its job: stop, and exit non-zero so systemd restarts us."""
        if self._stop.failure is None:
            self._stop.failure = why
            log.critical("flowerd stops: %s", why)
        self._stop.event.set()

    @property
    def exit_code(self) -> int:
        return 1 if self._stop.failure else 0

    async def _tell(self, stack: AsyncExitStack) -> None:
        """Each run's log, and notifications: both hang off the runner's run events."""
        keeper = RunLogs(self.history, max_bytes=self.settings.max_log_bytes, quiet_daemon_log=True)
        await keeper.start()
        stack.push_async_callback(keeper.close)
        self.notifications = Notifier(
            self.history,
            default_targets=self.settings.notify,
            tail=keeper.tail,
            page_url=page_url_for(self.settings.http),
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

    # -- catch-up ---------------------------------------------------------------------
    async def _catch_up(self, schedules: list[Schedule], now: datetime) -> set[str]:
        """Missed rows of every schedule are queued together and share the writer's
        batches: a restart after a long downtime costs a commit per batch, not per slot."""
        others = await self.lease.others_alive()
        if others:  # their slots are theirs: they fired (and recorded) them all along
            log.info(
                "%d other daemon(s) hold a live lease on this history: no catch-up", len(others)
            )
            return set()
        last_slots = await self.history.last_slots()
        writes, new = [], set()
        for schedule in schedules:
            last = last_slots.get(schedule.id)
            if last is None:
                new.add(schedule.id)
            if last is None or not schedule.enabled or schedule.id in self.paused:
                continue
            slots = slots_between(schedule, last, now, limit=MAX_MISSED_ROWS + 1)
            slots = [slot.astimezone(UTC) for slot in slots]
            if slots:
                writes.extend(self._catch_up_schedule(schedule, slots, last))
        await asyncio.gather(*writes)
        return new

    def _catch_up_schedule(self, schedule: Schedule, slots: list[datetime], last: datetime):
        """`slots` holds at most MAX_MISSED_ROWS + 1 of the newest slots of the outage; if
        it is full, its oldest row stands for, and counts, every earlier slot too."""
        writes = []
        if len(slots) > MAX_MISSED_ROWS:
            writes.append(
                self._missed_row(schedule, slots[0], _outage_summary(schedule, last, slots))
            )
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
        writes.extend(self._missed_row(schedule, slot, why) for slot in missed)
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
        return writes

    async def _run_in_order(self, schedule: Schedule, slots: list[datetime]) -> None:
        for slot in slots:
            await self.runner.run_slot(schedule, slot, "catchup")

    async def _missed_row(self, schedule: Schedule, slot: datetime, error: RunError):
        status, excluded = "missed", excluded_reason(schedule, slot)
        if excluded is not None:  # it would not have run anyway (daemon.calendars)
            status, error = "skipped", RunError(type=EXCLUDED, message=excluded)
        row = await self.history.slot_write(
            schedule=schedule.id,
            pipeline=schedule.pipeline,
            scheduled_at=slot,
            status=status,
            trigger="catchup",
            async_driver=schedule.async_driver,
            error=error,
        )
        if row is not None:  # told like the runner's rows (notifications coalesce them)
            self.runner.events.emit(
                RunEvent(kind="finished", run_id=row, schedule=schedule,
                         pipeline=schedule.pipeline, trigger="catchup", status=status,
                         scheduled_at=slot, finished_at=utcnow(), error=error)
            )  # fmt: skip
        return row

    # -- control commands -------------------------------------------------------------
    def _handlers(self):
        return {
            "status": self.status,
            "reload": self.reload,
            "trigger": self.trigger,
            "pause": self.pause,
            "resume": self.resume,
            **Jobs(self).handlers(),  # backfill, rerun and their progress
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
        inputs = await self.across.trigger_inputs(schedule, request.get("inputs") or {})
        run_id = await self.runner.trigger(schedule, inputs)
        return {
            "message": f"triggered {schedule.id} (pipeline {schedule.pipeline}): run {run_id}",
            "run_id": run_id,
        }

    async def pause(self, request: dict) -> dict:
        schedule = self._schedule(request)
        if schedule.id in self.paused:
            return {"message": f"{schedule.id} was paused already"}
        log.info("paused %s: it fires no slots until `flowerd resume %s`", schedule.id, schedule.id)
        await self.pause_schedule(schedule)
        return {"message": f"paused {schedule.id}"}

    async def pause_schedule(self, schedule: Schedule, reason: str | None = None) -> None:
        """Persist the pause (with why, when it paused itself) and stop firing."""
        await self.history.set_paused(schedule.id, True, reason)
        self.paused.add(schedule.id)
        self.paused_reasons.setdefault(schedule.id, reason)
        self.scheduler.pause(schedule.id)
        self.refresh_status()

    async def resume(self, request: dict) -> dict:
        schedule = self._schedule(request)
        if schedule.id not in self.paused:
            return {"message": f"{schedule.id} is not paused"}
        log.info("resumed %s: it fires again from its next slot", schedule.id)
        await self.history.set_paused(schedule.id, False)
        self.paused.discard(schedule.id)
        self.paused_reasons.pop(schedule.id, None)
        self.across.resumed(schedule.id)
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
                    "timezone": schedule.timezone,
                    "paused_reason": self.paused_reasons.get(schedule.id),
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
            "daemons": await self.lease.listing(),
            "health": self.health(),
            "http": self.http.url if self.http else None,
        }

    def health(self) -> dict[str, str]:
        """One entry per part: "ok", or a sentence saying what is wrong and since when
        (`status --json`'s `health`, `/healthz`, systemd's STATUS=)."""
        return {
            "scheduler": self.scheduler.health(),
            "runner": self.runner.health(),
            "history": self.history.health(),
        }

    def _paused_elsewhere(self, paused: frozenset[str]) -> None:
        """A pause or resume sent to another daemon on this history (read at renewal)."""
        for schedule_id in sorted(paused ^ self.paused):
            if schedule_id not in self.scheduler.schedules:
                continue
            if schedule_id in paused:
                self.scheduler.pause(schedule_id)
            else:
                self.scheduler.resume(schedule_id)
            log.info(
                "%s %s (by another daemon)",
                "paused" if schedule_id in paused else "resumed",
                schedule_id,
            )
        if paused != self.paused:
            self.paused = set(paused)
            self.refresh_status()

    def _reload_elsewhere(self) -> None:
        async def reload() -> None:
            with contextlib.suppress(ScheduleError):
                await self.reload(propagate=False)

        self.runner.spawn(reload())

    async def reload(self, request: dict | None = None, *, propagate: bool = True) -> dict:
        """Validate everything first; apply the difference only if all of it is valid.
        A reload asked of this daemon reaches the others on the same history too."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                schedules, warnings = await asyncio.to_thread(
                    load_and_validate,
                    self.settings,
                    Pipelines(self.settings.base_dir, pipelines_dir=self.settings.pipelines_dir),
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
            self.across.reloaded()
            self.refresh_status()
        if propagate:
            await self.lease.ask_others_to_reload()
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
        wrong = [f"{part} {state}" for part, state in self.health().items() if state != "ok"]
        if wrong:
            return "; ".join(wrong)
        schedules = self.scheduler.schedules
        times = [t for t in (self.scheduler.next_fire(s) for s in schedules) if t]
        nxt = min(times).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if times else "none"
        return f"{len(schedules)} schedule(s), {len(self.runner.active)} running, next fire {nxt}"

    def refresh_status(self) -> None:
        """STATUS= for systemd, computed only when someone listens, and at most once per
        STATUS_EVERY_S however many runs start and end (it looks at every schedule)."""
        if not self.notifier.enabled or self._status_due or not hasattr(self, "scheduler"):
            return
        self._status_due = True
        asyncio.get_running_loop().call_later(STATUS_EVERY_S, self._send_status)

    def _send_status(self) -> None:
        self._status_due = False
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
    notifier = systemd.Notifier.from_env()
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
    """After the drain every row is written (or spooled) and the database closed. A sync
    pipeline that ignores its timeout still holds a pool thread, and a database driver
    thread may still wait out a lock; Python joins such threads at exit -- so they would
    hold up the stop until systemd kills us. Exit without them."""
    deadline = time.monotonic() + EXIT_JOIN_S
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in others:  # idle workers leave at once after the pool's shutdown
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in others if t.is_alive()]
    if stuck:
        log.warning(
            "exiting past %d thread(s) that did not return: %s", len(stuck), ", ".join(stuck)
        )
        logs.stop_background()
        logging.shutdown()
        os._exit(code)
