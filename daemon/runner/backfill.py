"""Backfill and rerun: slots of the past run (again), through the Runner.

    flowerd backfill S --from T --to T [--rerun]
      -> plan: every slot of S's trigger in [from, to] (schedule/firetimes.py: DST as when firing),
         oldest first; those already in the history are listed and skipped, or with
         --rerun each is a `rerun` row of the slot's latest run
      -> a Job: at most `workers` runs at a time (1 unless overlap = "allow"), each taking
         a concurrency slot that leaves another free, claimed only once it has one (a run
         that never started leaves no row)
    flowerd rerun ID -> a Job of one `rerun` row of run ID

A Job runs in the daemon (control commands `backfill`, `rerun`, `job`, `job_stop`; a job
nobody asks about for ORPHAN_S stops: its CLI is gone) or, without a daemon, in the CLI's
own process. Stopping it (Ctrl-C, SIGTERM, the daemon's stop) starts nothing more; runs
already going finish or end `cancelled`; so running the same backfill again completes it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from daemon.durations import iso, parse_instant, parse_last
from daemon.errors import FlowerdError, PipelineError, RunNotFound, UsageError, did_you_mean
from daemon.history import History, RunRecord
from daemon.history.redact import REDACTED
from daemon.inputs import SLOT_INPUTS
from daemon.schedule import Schedule
from daemon.schedule.firetimes import count_slots, slots_between

log = logging.getLogger("daemon.backfill")  # its name before the move

MAX_SLOTS_WITHOUT_YES = 10_000
ORPHAN_S = 30.0  # a daemon-side job not asked about for this long stops
KEEP_FINISHED_S = 600.0  # a finished job's progress stays readable this long
WATCH_S = 0.05
_NOT_STORED = "<not stored:"


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, kw_only=True)
class Item:
    """One run of a job: a slot to backfill, or a run to repeat (`again`)."""

    slot: datetime | None
    again: RunRecord | None = None
    cfg: Any = None  # the RunConfig of a rerun
    schedule: Schedule | None = None  # a rerun's schedule, if it still has one


@dataclass(kw_only=True)
class Plan:
    schedule: Schedule | None
    items: list[Item]
    recorded: list[RunRecord] = field(default_factory=list)  # skipped: already in history
    later: int = 0  # slots after now, left to the scheduler


def parse_bound(
    flag: str, text: str, zone: ZoneInfo, now: datetime, *, last: bool = False
) -> datetime:
    """ISO-8601 (a date, or a date-time without offset, is in the schedule's timezone)
    or a duration ago (`3d`). `last` (--to): a bare date includes that whole day."""
    parse = parse_last if last else parse_instant
    try:
        return parse(text, now=now, zone=zone)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def shown(moment: datetime) -> str:
    """A bound in a message: the last moment of a day (a bare date as --to) to the second."""
    return moment.isoformat(timespec="seconds" if moment.microsecond == 999_999 else "auto")


def find_schedule(schedules: Mapping[str, Schedule], schedule_id: str) -> Schedule:
    if schedule_id not in schedules:
        raise FlowerdError(
            f"no schedule {schedule_id!r}{did_you_mean(schedule_id, schedules)}; "
            f"schedules: {', '.join(sorted(schedules)) or '(none)'}"
        )
    schedule = schedules[schedule_id]
    if getattr(schedule, "after", None):  # `after` schedules: their slot is an upstream's
        raise FlowerdError(
            f"schedule {schedule_id!r} runs after {', '.join(schedule.after)}: its slots are "
            "its upstreams' slots, so it has none of its own to backfill; backfill those"
        )
    if schedule.event_triggers:  # an event's run has no slot to run again
        raise FlowerdError(
            f"schedule {schedule_id!r} runs on events ({schedule.describe_trigger()}): it has "
            "no slots to backfill; `flowerd rerun ID` runs one of its runs again"
        )
    return schedule


def slots_in(
    schedule: Schedule, start: datetime, end: datetime, *, now: datetime, yes: bool
) -> tuple[list[datetime], int]:
    """(the slots in [start, end] up to now, oldest first, in the schedule's timezone;
    how many later ones were left out). More than MAX_SLOTS_WITHOUT_YES needs `yes`."""
    if start > end:
        raise UsageError(f"--from {shown(start)} is after --to {shown(end)}")
    before = start - timedelta(microseconds=1)  # slots_between is (start, end]: inclusive
    if not yes and count_slots(schedule, before, end, cap=MAX_SLOTS_WITHOUT_YES) is None:
        raise UsageError(
            f"schedule {schedule.id!r} has more than {MAX_SLOTS_WITHOUT_YES:,} slots from "
            f"{shown(start)} to {shown(end)}; add --yes to run them all"
        )
    slots = slots_between(schedule, before, end)
    due = [slot for slot in slots if slot <= now]
    if not slots:
        raise FlowerdError(
            f"schedule {schedule.id!r} ({schedule.describe_trigger()} in {schedule.timezone}) "
            f"has no slot from {shown(start)} to {shown(end)}"
        )
    if not due:
        raise FlowerdError(
            f"the {len(slots)} slot(s) of schedule {schedule.id!r} from {shown(start)} "
            f"to {shown(end)} are all still to come; the scheduler will run them"
        )
    return due, len(slots) - len(due)


async def plan_backfill(
    history: History, schedule: Schedule, slots: list[datetime], *, rerun: bool, pm
) -> Plan:
    recorded = await history.slot_runs(schedule.id, slots[0], slots[-1])
    items, skipped = [], []
    for slot in slots:
        record = recorded.get(slot.astimezone(UTC))
        if record is None:
            items.append(Item(slot=slot))
        elif rerun:
            cfg = rerun_config(record, schedule, pm, check=False)
            items.append(Item(slot=slot, again=record, cfg=cfg, schedule=schedule))
        else:
            skipped.append(record)
    return Plan(schedule=schedule, items=items, recorded=skipped)


def rerun_config(record: RunRecord, schedule: Schedule | None, pm, *, check: bool = True):
    """The RunConfig that repeats `record`: its pipeline, inputs and final vars; the rest
    (config, modules, driver, retries) from its schedule when that still runs the same
    pipeline. Inputs the history did not keep (secret, too large) come from the schedule."""
    from daemon.pipeline import RunConfig

    if record.pipeline not in pm.list_pipelines():
        raise PipelineError(
            f"run {record.id}'s pipeline {record.pipeline!r} is gone: no module "
            f"{record.pipeline}.py in {pm.pipelines_dir}"
        )
    same = schedule is not None and schedule.pipeline == record.pipeline
    kwargs = schedule.run_config_kwargs() if same else {"async_driver": record.async_driver}
    if not (same and record.status in ("missed", "skipped")):  # those rows never ran
        kwargs["inputs"] = _stored_inputs(record, kwargs.get("inputs") or {})
        kwargs["final_vars"] = list(record.final_vars)
    cfg = RunConfig(**kwargs)
    if check:
        pm.validate(record.pipeline, cfg)
    return cfg


def _stored_inputs(record: RunRecord, configured: Mapping[str, Any]) -> dict[str, Any]:
    inputs = {}
    for key, value in record.inputs.items():
        if key in SLOT_INPUTS:
            continue
        kept = not (value == REDACTED or (isinstance(value, str) and value.startswith(_NOT_STORED)))
        if not kept and key not in configured:
            raise FlowerdError(
                f"run {record.id}'s input {key!r} was not stored in the history (secret or "
                "larger than max_row_bytes) and its schedule does not set it: it cannot be rerun"
            )
        inputs[key] = value if kept else configured[key]
    return inputs


# --------------------------------------------------------------------------- the job


class Job:
    """Runs a plan's items through a Runner, oldest first, `workers` at a time."""

    def __init__(self, runner, plan: Plan, *, job_id: str = "local"):
        self.id = job_id
        self.runner = runner
        self.plan = plan
        schedule = plan.schedule  # None: `flowerd rerun ID`, a plain run of one item
        serial = schedule is None or schedule.overlap != "allow"
        self.workers = 1 if serial else max(1, runner.max_concurrent_runs - 1)
        self._items = iter(plan.items)
        self._waiting: dict[asyncio.Task, bool] = {}  # worker -> not started yet
        self.run_ids: list[int] = []
        self.succeeded = self.failed = self.running = self.gone = 0
        self.stopping = self.finished = False
        self.asked_at = time.monotonic()
        self.finished_at = 0.0

    async def run(self) -> None:
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]
        watch = asyncio.ensure_future(self._watch_runner())
        try:
            for result in await asyncio.gather(*workers, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("job %s: %s: %s", self.id, type(result).__name__, result)
                    self.stop()
        finally:
            for task in (*workers, watch):
                task.cancel()
            await asyncio.gather(*workers, watch, return_exceptions=True)
            self.finished, self.finished_at = True, time.monotonic()

    def stop(self) -> None:
        """Start nothing more; cancel the runs still waiting for a concurrency slot (they
        leave no row); runs already going finish."""
        self.stopping = True
        for task, waiting in self._waiting.items():
            if waiting:
                task.cancel()

    async def _worker(self) -> None:
        task = asyncio.current_task()
        while not self.stopping and self.runner.accepting:
            item = next(self._items, None)
            if item is None:
                return
            self._waiting[task] = True
            try:
                await self._one(item)
            except asyncio.CancelledError:
                if self.stopping and self._waiting.get(task):
                    return  # stopped before it started: no row
                raise
            finally:
                self._waiting.pop(task, None)

    async def _one(self, item: Item) -> None:
        schedule = self.plan.schedule
        if self.workers == 1 and schedule is not None:
            while self.runner.busy(schedule.id):  # overlap: not beside a scheduled run
                await asyncio.sleep(WATCH_S)
        task = asyncio.current_task()

        def started(run_id: int) -> None:
            self._waiting[task] = False
            self.run_ids.append(run_id)
            self.running += 1

        if item.again is not None:
            outcome = await self.runner.run_again(
                item.again,
                item.cfg,
                schedule=item.schedule,
                background=schedule is not None,
                started=started,
            )
        else:
            outcome = await self.runner.backfill(schedule, item.slot, started=started)
        if outcome is None:  # the slot was recorded meanwhile (the scheduler, another job)
            self.gone += 1
            return
        self.running -= 1
        if outcome.error is None:
            self.succeeded += 1
        else:
            self.failed += 1

    async def _watch_runner(self) -> None:
        """The daemon stopping (its runner no longer accepting) stops the job."""
        while self.runner.accepting:
            await asyncio.sleep(WATCH_S)
        self.stop()

    def progress(self) -> dict:
        total = len(self.plan.items)
        return {
            "job": self.id,
            "schedule": self.plan.schedule.id if self.plan.schedule else None,
            "total": total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "running": self.running,
            "left": total - self.succeeded - self.failed - self.gone,
            "runs": list(self.run_ids),
            "recorded": [record.id for record in self.plan.recorded],
            "later": self.plan.later,
            "stopping": self.stopping,
            "finished": self.finished,
        }


# --------------------------------------------------------------------------- in the daemon


class Jobs:
    """The daemon's jobs, for the control commands `backfill`, `rerun`, `job`, `job_stop`."""

    def __init__(self, daemon):
        self.daemon = daemon
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def handlers(self) -> dict:
        return {
            "backfill": self.backfill,
            "rerun": self.rerun,
            "job": self.job,
            "job_stop": self.job_stop,
        }

    async def backfill(self, request: dict) -> dict:
        daemon = self.daemon
        schedule = find_schedule(daemon.scheduler.schedules, str(request.get("schedule")))
        start, end = _instant(request, "from"), _instant(request, "to")
        now = datetime.now(UTC)
        yes = bool(request.get("yes"))  # a long range is walked off the event loop
        slots, later = await asyncio.to_thread(slots_in, schedule, start, end, now=now, yes=yes)
        plan = await plan_backfill(
            daemon.history, schedule, slots, rerun=bool(request.get("rerun")), pm=daemon.pm
        )
        plan.later = later
        return self._start(plan, f"backfill of {schedule.id}")

    async def rerun(self, request: dict) -> dict:
        daemon = self.daemon
        record = await daemon.history.get_run(int(request.get("run_id", 0)))
        schedule = daemon.scheduler.schedules.get(record.schedule or "")
        cfg = rerun_config(record, schedule, daemon.pm)
        item = Item(slot=None, again=record, cfg=cfg, schedule=schedule)
        return self._start(Plan(schedule=None, items=[item]), f"rerun of run {record.id}")

    def _start(self, plan: Plan, what: str) -> dict:
        self._forget_old()
        job = Job(self.daemon.runner, plan, job_id=str(next(self._ids)))
        self._jobs[job.id] = job
        self.daemon.runner.spawn(self._run(job, what))
        return {"message": f"{what}: {len(plan.items)} run(s)", **job.progress(), **_recorded(plan)}

    async def _run(self, job: Job, what: str) -> None:
        log.info(
            "%s: %d run(s), %d already recorded", what, len(job.plan.items), len(job.plan.recorded)
        )
        orphan = asyncio.ensure_future(self._orphaned(job))
        try:
            await job.run()
        finally:
            orphan.cancel()
        log.info("%s ended: %s", what, job.progress())

    async def _orphaned(self, job: Job) -> None:
        while time.monotonic() - job.asked_at < ORPHAN_S:
            await asyncio.sleep(1.0)
        log.warning("job %s: nobody asked about it for %g s; stopping it", job.id, ORPHAN_S)
        job.stop()

    async def job(self, request: dict) -> dict:
        job = self._job(request)
        job.asked_at = time.monotonic()
        return job.progress()

    async def job_stop(self, request: dict) -> dict:
        job = self._job(request)
        job.asked_at = time.monotonic()
        job.stop()
        return job.progress()

    def _job(self, request: dict) -> Job:
        job = self._jobs.get(str(request.get("job")))
        if job is None:
            raise FlowerdError(f"no job {request.get('job')!r} in this daemon")
        return job

    def _forget_old(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.finished and now - job.finished_at > KEEP_FINISHED_S:
                del self._jobs[job_id]


def _instant(request: dict, key: str) -> datetime:
    try:
        return datetime.fromisoformat(str(request[key]))
    except (KeyError, ValueError):
        raise UsageError(f"backfill: '{key}' must be an ISO-8601 time") from None


def _recorded(plan: Plan) -> dict:
    return {"recorded_runs": [_brief(record) for record in plan.recorded]}


def _brief(record: RunRecord) -> dict:
    return {"id": record.id, "scheduled_at": iso(record.scheduled_at), "status": record.status}


__all__ = ["Item", "Job", "Jobs", "Plan", "RunNotFound", "find_schedule", "parse_bound"]
