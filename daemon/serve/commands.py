"""What the control channel (and HTTP) asks of a running daemon: trigger, pause, resume,
reload (validated first, applied only if all of it is valid; passed on to the other
daemons on the same history), and the pauses and reloads those daemons pass on to this
one. Parts of the Daemon (daemon.serve.daemon): `Commands` acts through the `Commanded`
view of it; `Pauses` is which schedules are paused and why. `status` is daemon.serve.status's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from daemon.errors import FlowerdError, ScheduleError, did_you_mean
from daemon.history import History
from daemon.incoming.wiring import Incoming
from daemon.orchestration.wiring import Across
from daemon.pipeline import Pipelines
from daemon.revealed import given_literally
from daemon.runner.backfill import Jobs
from daemon.runner.runner import Runner
from daemon.runner.scheduler import Scheduler
from daemon.schedule import Schedule
from daemon.serve import systemd
from daemon.serve.lease import Lease
from daemon.serve.validate import load_and_validate
from daemon.settings import Settings

log = logging.getLogger("daemon.app")  # a part of the daemon: its lines keep that name


class Pauses:
    """The schedules paused now, and why each paused (None: by hand). Read from the
    history at start-up; changed by pause/resume here and by other daemons' (the lease)."""

    def __init__(self) -> None:
        self.paused: set[str] = set()
        self.reasons: dict[str, str | None] = {}

    def load(self, reasons: dict[str, str | None]) -> None:
        self.reasons = dict(reasons)
        self.paused = set(reasons)

    def add(self, schedule_id: str, reason: str | None) -> None:
        self.paused.add(schedule_id)
        self.reasons.setdefault(schedule_id, reason)

    def discard(self, schedule_id: str) -> None:
        self.paused.discard(schedule_id)
        self.reasons.pop(schedule_id, None)


class Fingerprints:
    """Each loaded schedule's fingerprint, worked out once per Schedule (a reload hands back
    the very object for a table it did not change): 10,000 of them held the event loop
    ~70 ms at every `flowerd schedules`."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[Schedule, str]] = {}

    def of(self, schedules: dict[str, Schedule]) -> dict[str, str]:
        known = {}
        for schedule_id, schedule in schedules.items():
            seen = self._known.get(schedule_id)
            fresh = seen is not None and seen[0] is schedule
            known[schedule_id] = seen if fresh else (schedule, schedule.fingerprint())
        self._known = known
        return {schedule_id: digest for schedule_id, (_, digest) in known.items()}


class Commanded(Protocol):
    """What Commands acts on (and daemon.runner.backfill.Jobs reads): the daemon once its
    scheduler runs."""

    settings: Settings
    notifier: systemd.SystemdNotifier
    pm: Pipelines
    history: History
    runner: Runner
    scheduler: Scheduler
    across: Across
    incoming: Incoming
    lease: Lease
    pauses: Pauses
    refresh_status: Callable[[], None]
    status: Callable[..., Awaitable[dict]]


class Commands:
    """The control channel's handlers (and HTTP's trigger, pause, resume)."""

    def __init__(self, daemon: Commanded):
        self.daemon = daemon
        self._reload_lock = asyncio.Lock()
        self._fingerprints = Fingerprints()

    def handlers(self) -> dict:
        return {
            "status": self.daemon.status,
            "reload": self.reload,
            "trigger": self.trigger,
            "pause": self.pause,
            "resume": self.resume,
            "loaded": self.loaded,
            **Jobs(self.daemon).handlers(),  # backfill, rerun and their progress
        }

    def _schedule(self, request: dict) -> Schedule:
        schedule_id = request.get("schedule")
        schedules = self.daemon.scheduler.schedules
        if schedule_id not in schedules:
            hint = did_you_mean(str(schedule_id), schedules)
            raise FlowerdError(
                f"no schedule {schedule_id!r}{hint}; "
                f"schedules: {', '.join(sorted(schedules)) or '(none)'}"
            )
        return schedules[schedule_id]

    async def loaded(self, request: dict) -> dict:
        """What this daemon fires: each schedule's fingerprint, for `flowerd schedules` to
        compare with the files. And what `GET /api/schedules` says of their state: each
        paused schedule's reason, each event schedule's pending events (left out when the
        history cannot answer now) -- on SQLite, where this daemon is the only one, what
        the CLI would read from the history, without it importing SQLAlchemy (~0.15 s)."""
        schedules = self.daemon.scheduler.schedules
        answer: dict = {"schedules": self._fingerprints.of(schedules)}
        pauses = self.daemon.pauses
        answer["paused"] = {s_id: pauses.reasons.get(s_id) for s_id in sorted(pauses.paused)}
        try:
            answer["pending"] = await self.daemon.history.pending_events()
        except Exception as exc:  # noqa: BLE001 - the CLI reads the history itself, or warns
            log.debug("loaded: no pending events from the history: %s", exc)
        return answer

    async def trigger(self, request: dict) -> dict:
        schedule = self._schedule(request)
        given = given_literally(request.get("inputs") or {})  # never a secret reference
        inputs = await self.daemon.across.trigger_inputs(schedule, given)
        run_id = await self.daemon.runner.trigger(schedule, inputs)
        return {
            "message": f"triggered {schedule.id} (pipeline {schedule.pipeline}): run {run_id}",
            "run_id": run_id,
        }

    async def pause(self, request: dict) -> dict:
        schedule = self._schedule(request)
        if schedule.id in self.daemon.pauses.paused:
            return {"message": f"{schedule.id} was paused already"}
        log.info("paused %s: it fires no slots until `flowerd resume %s`", schedule.id, schedule.id)
        await self.pause_schedule(schedule)
        return {"message": f"paused {schedule.id}"}

    async def pause_schedule(self, schedule: Schedule, reason: str | None = None) -> None:
        """Persist the pause (with why, when it paused itself) and stop firing."""
        await self.daemon.history.set_paused(schedule.id, True, reason)
        self.daemon.pauses.add(schedule.id, reason)
        self.daemon.scheduler.pause(schedule.id)
        self.daemon.refresh_status()

    async def resume(self, request: dict) -> dict:
        schedule = self._schedule(request)
        if schedule.id not in self.daemon.pauses.paused:
            return {"message": f"{schedule.id} is not paused"}
        log.info("resumed %s: it fires again from its next slot", schedule.id)
        await self.daemon.history.set_paused(schedule.id, False)
        self.daemon.pauses.discard(schedule.id)
        self.daemon.across.resumed(schedule.id)
        self.daemon.incoming.release()  # its events held while paused run now
        self.daemon.scheduler.resume(schedule.id)
        self.daemon.refresh_status()
        return {"message": f"resumed {schedule.id}"}

    def paused_elsewhere(self, paused: frozenset[str]) -> None:
        """A pause or resume sent to another daemon on this history (read at renewal)."""
        pauses, scheduler = self.daemon.pauses, self.daemon.scheduler
        for schedule_id in sorted(paused ^ pauses.paused):
            if schedule_id not in scheduler.schedules:
                continue
            if schedule_id in paused:
                scheduler.pause(schedule_id)
            else:
                scheduler.resume(schedule_id)
            log.info(
                "%s %s (by another daemon)",
                "paused" if schedule_id in paused else "resumed",
                schedule_id,
            )
        if paused != pauses.paused:
            pauses.paused = set(paused)
            self.daemon.incoming.release()
            self.daemon.refresh_status()

    def reload_elsewhere(self) -> None:
        async def reload() -> None:
            with contextlib.suppress(ScheduleError):
                await self.reload(propagate=False)

        self.daemon.runner.spawn(reload())

    async def reload(self, request: dict | None = None, *, propagate: bool = True) -> dict:
        """Validate everything first; apply the difference only if all of it is valid.
        A reload asked of this daemon reaches the others on the same history too."""
        settings, notifier = self.daemon.settings, self.daemon.notifier
        async with self._reload_lock:
            notifier.reloading()
            try:
                schedules, warnings = await asyncio.to_thread(
                    load_and_validate,
                    settings,
                    Pipelines(settings.base_dir, pipelines_dir=settings.pipelines_dir),
                )
                summary = self._apply({s.id: s for s in schedules})
            except ScheduleError as exc:
                log.error("reload refused, keeping the current schedules:\n%s", exc)
                raise
            finally:
                notifier.ready()  # after the new schedules are in place (or refused)
            for warning in warnings:
                log.warning("%s", warning)
            log.info("reloaded: %s", summary)
            self.daemon.across.reloaded()
            self.daemon.refresh_status()
        if propagate:
            await self.daemon.lease.ask_others_to_reload()
        return {"message": f"reloaded: {summary}", "warnings": warnings}

    def _apply(self, new: dict[str, Schedule]) -> str:
        scheduler, paused = self.daemon.scheduler, self.daemon.pauses.paused
        old = scheduler.schedules
        added = [s for s in new if s not in old]
        removed = [s for s in old if s not in new]
        changed = [s for s in new if s in old and new[s] is not old[s] and new[s] != old[s]]
        for schedule_id in removed:
            scheduler.remove(schedule_id)
        for schedule_id in added + changed:
            scheduler.replace(new[schedule_id], paused=schedule_id in paused)
        self.daemon.incoming.reload(new.values())
        return (
            f"{_named(added, 'added')}, {_named(removed, 'removed')}, "
            f"{_named(changed, 'changed')}, {len(new) - len(added) - len(changed)} unchanged"
        )


def _named(ids: list[str], word: str, most: int = 10) -> str:
    """`1 changed (nightly)`, `0 added`, `12 removed (a, b, ... and 2 more)`."""
    if not ids:
        return f"0 {word}"
    shown = ", ".join(sorted(ids)[:most]) + (f" and {len(ids) - most} more" if ids[most:] else "")
    return f"{len(ids)} {word} ({shown})"
