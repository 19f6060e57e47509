"""The journal: every event is a history row before its run starts.

    seen (a settled file, an accepted webhook) -> record(): one row, slot key
        (schedule, event key) -- `queued` (trigger file | webhook), or `skipped` (Overflow:
        a paused / disabled schedule already holds max_pending events; Overlap: overlap
        = "skip" and a run is going) -- durable when record() returns
    -> the runner carries the queued row out as a claimed slot (overlap, pools, limits)

A kill -9 between "seen" and "started" loses nothing (the row is there: the next start, or
another daemon once this one's lease expired, adopts it and runs it) and doubles nothing
(the same event again finds its row: `fresh` False). A paused or disabled schedule's events
wait as `queued` rows, held here, and start on resume (or a reload that enables it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from daemon.durations import iso
from daemon.errors import FlowerdError
from daemon.history import History, RunError, RunRecord
from daemon.runner.events import Listeners, RunEvent
from daemon.schedule import Schedule

log = logging.getLogger("daemon.incoming")

KINDS = ("file", "webhook")


@dataclass(frozen=True)
class Recorded:
    """What record() answers: the event's run id (the first row's when the event was
    seen before: `fresh` False), and the run JSON's `event` object."""

    run_id: int
    event: dict
    fresh: bool


@dataclass(frozen=True, kw_only=True)
class _Held:
    """An event's `queued` row this daemon holds until its schedule may run."""

    run_id: int
    schedule: str
    trigger: str
    received_at: datetime
    inputs: dict


class Starter(Protocol):
    """What the journal needs of the runner (daemon.runner.runner.Runner)."""

    accepting: bool
    events: Listeners

    def busy(self, schedule_id: str) -> bool: ...

    def start_claimed(
        self, schedule: Schedule, run_id: int, scheduled_at: datetime, trigger: str, inputs: dict
    ) -> bool: ...


class UnknownSchedule(FlowerdError):
    """record() for a schedule this daemon does not have."""


class Journal:
    """Records events and starts their runs. `start()` once the runner exists."""

    def __init__(
        self,
        *,
        history: History,
        runner: Starter,
        is_paused: Callable[[str], bool],
        lease_s: float,
    ):
        self.history = history
        self.runner = runner
        self._is_paused = is_paused
        self._every_s = lease_s / 3
        self._schedules: dict[str, Schedule] = {}
        self._held: dict[str, dict[int, _Held]] = defaultdict(dict)
        self._reserved: dict[str, int] = defaultdict(int)  # held events being written
        self._listeners: list[Callable[[str, str], None]] = []
        self._task: asyncio.Task | None = None

    # -- wiring -----------------------------------------------------------------------
    def on_event(self, listener: Callable[[str, str], None]) -> None:
        """`listener(schedule, kind)` for each fresh event (flowerd_events_total)."""
        self._listeners.append(listener)

    def set_schedules(self, schedules: Iterable[Schedule]) -> None:
        """The schedules now in force (start-up, reload); held events of a schedule that
        may run now start."""
        self._schedules = {schedule.id: schedule for schedule in schedules}
        self.release()

    def schedule(self, schedule_id: str) -> Schedule | None:
        return self._schedules.get(schedule_id)

    def pending(self, schedule_id: str) -> int:
        """Events of the schedule waiting for it to be resumed (or enabled)."""
        return len(self._held.get(schedule_id, ()))

    async def start(self, on_done: Callable[[asyncio.Task], None] | None = None) -> None:
        """Adopt the queued event rows a dead daemon left; then keep adopting (another
        daemon on this history may die) every lease_s / 3."""
        await self.adopt()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="flowerd:journal")
        if on_done is not None:
            self._task.add_done_callback(on_done)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self.adopt()
            except FlowerdError as exc:  # the history is down: the next round tries again
                log.warning("queued events of dead daemons could not be adopted: %s", exc)

    # -- recording --------------------------------------------------------------------
    async def record(
        self,
        schedule_id: str,
        kind: str,
        key: str,
        *,
        path: str | None = None,
        payload: dict | None = None,
        received_at: datetime | None = None,
        traceparent: str | None = None,
    ) -> Recorded:
        """One event: its row is durable when this returns; a fresh queued row's run is
        started (or held while the schedule is paused / disabled)."""
        schedule = self._schedules.get(schedule_id)
        if schedule is None:
            raise UnknownSchedule(f"no schedule {schedule_id!r}")
        if kind not in KINDS:
            raise ValueError(f"event kind {kind!r}: one of {', '.join(KINDS)}")
        seen = (received_at or datetime.now(UTC)).astimezone(UTC)
        event = {"kind": kind, "key": key, "path": path, "received_at": iso(seen)}
        status, error = self._fate(schedule)
        holding = status == "queued" and self._held_back(schedule.id)
        self._reserved[schedule.id] += holding  # counted before the await: a burst stays bounded
        try:
            run_id, fresh = await self.history.record_event(
                schedule=schedule.id,
                pipeline=schedule.pipeline,
                trigger=kind,
                received_at=seen,
                event_key=key,
                event=event,
                status=status,
                async_driver=schedule.async_driver,
                final_vars=list(schedule.final_vars),
                inputs=dict(schedule.inputs),
                payload=payload,
                traceparent=traceparent,
                error=error,
            )
        finally:
            self._reserved[schedule.id] -= holding
        if not fresh:
            first = await self._first_event(run_id, event)
            return Recorded(run_id=run_id, event=first, fresh=False)
        for listener in self._listeners:
            listener(schedule.id, kind)
        if status == "queued":
            inputs = _event_inputs(kind, path, payload)
            self._go(_Held(run_id=run_id, schedule=schedule.id, trigger=kind, received_at=seen,
                           inputs=inputs))  # fmt: skip
        else:
            self._not_run(schedule, run_id, event, seen, status, error)
        return Recorded(run_id=run_id, event=event, fresh=True)

    def _not_run(self, schedule, run_id, event, seen, status, error) -> None:
        """An event's `skipped` row is told like a slot's: metrics, notifications."""
        log.warning("event %s of %s: %s", event["key"], schedule.id, error.message)
        if self.runner.events:
            self.runner.events.emit(
                RunEvent(
                    kind="finished",
                    run_id=run_id,
                    schedule=schedule,
                    pipeline=schedule.pipeline,
                    trigger=event["kind"],
                    status=status,
                    scheduled_at=seen,
                    finished_at=datetime.now(UTC),
                    error=error,
                )
            )

    def _fate(self, schedule: Schedule) -> tuple[str, RunError | None]:
        """`queued`, or `skipped` with why."""
        if self._held_back(schedule.id):
            if self.pending(schedule.id) + self._reserved[schedule.id] >= schedule.max_pending:
                why = (
                    f"schedule {schedule.id!r} is {self._why_held(schedule.id)} and holds "
                    f"{schedule.max_pending} events already (max_pending); this one is not run"
                )
                return "skipped", RunError(type="Overflow", message=why)
            return "queued", None
        if schedule.overlap == "skip" and self.runner.busy(schedule.id):
            why = f"a run of schedule {schedule.id!r} was still going (overlap = 'skip')"
            return "skipped", RunError(type="Overlap", message=f"skipped: {why}")
        return "queued", None

    async def _first_event(self, run_id: int, event: dict) -> dict:
        try:
            record = await self.history.get_run(run_id)
        except FlowerdError:
            return event
        return record.event if record is not None and record.event else event

    # -- starting -----------------------------------------------------------------------
    def _held_back(self, schedule_id: str) -> bool:
        schedule = self._schedules.get(schedule_id)
        return schedule is None or not schedule.enabled or self._is_paused(schedule_id)

    def _why_held(self, schedule_id: str) -> str:
        return "paused" if self._is_paused(schedule_id) else "disabled"

    def _go(self, held: _Held) -> None:
        schedule = self._schedules.get(held.schedule)
        if schedule is None or self._held_back(held.schedule) or not self.runner.accepting:
            self._held[held.schedule][held.run_id] = held  # a stop: the next start adopts it
            return
        self._held.get(held.schedule, {}).pop(held.run_id, None)
        self.runner.start_claimed(
            schedule, held.run_id, held.received_at, held.trigger, held.inputs
        )

    def release(self) -> None:
        """Start the held events of every schedule that may run now (resume, reload)."""
        for schedule_id in list(self._held):
            if self._held_back(schedule_id):
                continue
            waiting = sorted(self._held.pop(schedule_id).values(), key=lambda h: h.run_id)
            for held in waiting:
                self._go(held)

    async def adopt(self) -> int:
        """Take over the queued event rows of daemons that are gone, and run them."""
        rows = await self.history.adopt_events(lease_s=self._every_s * 3)
        for record in sorted(rows, key=lambda r: r.id):
            await self._adopted(record)
        if rows:
            log.warning(
                "%d event(s) recorded by a daemon that stopped before running them are run now",
                len(rows),
            )
        return len(rows)

    async def _adopted(self, record: RunRecord) -> None:
        if record.schedule not in self._schedules:
            await self.history.finish(
                record.id,
                status="cancelled",
                finished_at=datetime.now(UTC),
                attempts=0,
                error=RunError(
                    type="Cancelled",
                    message=f"schedule {record.schedule!r} is no longer in the schedule files",
                ),
            )
            return
        event = record.event or {}
        held = _Held(
            run_id=record.id,
            schedule=record.schedule,
            trigger=record.trigger,
            received_at=record.scheduled_at or datetime.now(UTC),
            inputs=_event_inputs(record.trigger, event.get("path"), record.payload),
        )
        self._go(held)


def _event_inputs(kind: str, path: str | None, payload: dict | None) -> dict:
    """What a pipeline that declares `trigger_path` / `payload` gets."""
    if kind == "file":
        return {"trigger_path": path}
    return {"payload": payload if payload is not None else {}}
