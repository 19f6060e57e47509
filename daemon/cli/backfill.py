"""`flowerd backfill` and `flowerd rerun`: slots of the past run (again).

Through the running daemon when one listens (a job there, polled for progress; its
limits apply), else in this process through the same Runner. Ctrl-C / SIGTERM stop the
job: nothing more starts, runs going finish; a second one cancels those too (`cancelled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from daemon.cli.app import JsonFlag, app, settings_of
from daemon.errors import DaemonNotRunning, FlowerdError, UsageError
from daemon.settings import Settings

POLL_S = 0.2
PLAN_TIMEOUT_S = 600.0  # the daemon walks the range's slots before it answers


# --------------------------------------------------------------------------- the commands


@app.command()
def backfill(
    ctx: typer.Context,
    schedule: Annotated[str, typer.Argument(help="The schedule whose slots to run.")],
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="First slot time: ISO-8601 (a date: the schedule's "
            "timezone) or a duration ago (7d).",
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Last slot time (inclusive), as --from; a date includes that whole day.",
        ),
    ],
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Run slots already in the history again.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Run more than 10,000 slots.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run every slot of SCHEDULE from --from to --to (inclusive), oldest first, trigger
    `backfill`; slots already in the history are listed and skipped unless --rerun."""
    settings = settings_of(ctx)
    spec, start, end = _local_plan_args(settings, schedule, from_, to)
    yes = yes or _confirm_many(spec, start, end)
    args = {"schedule": spec.id, "from": start.isoformat(), "to": end.isoformat()}
    args.update(rerun=rerun, yes=yes)
    view = _View(as_json, f"backfill {spec.id}", zone=spec.zone)
    try:
        job = _Remote(settings, "backfill", args)
    except DaemonNotRunning:
        job = _Local(settings, lambda: _local_backfill(settings, spec, start, end, rerun, yes))
    records = job.follow(view)
    view.summary(records, job.last)
    if not _all_ran(records, job.last):
        raise typer.Exit(1)


@app.command("rerun")
def rerun_cmd(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run to repeat.")],
    as_json: JsonFlag = False,
) -> None:
    """Run the same pipeline, inputs, final vars and slot as run ID again: a new row,
    trigger `rerun`, `rerun_of` = ID."""
    settings = settings_of(ctx)
    view = _View(as_json, f"rerun of run {run_id}", bar=False)
    try:
        job = _Remote(settings, "rerun", {"run_id": run_id})
    except DaemonNotRunning:
        job = _Local(settings, lambda: _local_rerun(settings, run_id))
    records = job.follow(view)
    if as_json:
        typer.echo(json.dumps(records[0].to_json() if records else None, indent=2))
    for record in records:
        _print_one(record, as_json)
    if not records or records[0].status != "success":
        raise typer.Exit(1)


# --------------------------------------------------------------------------- arguments


def _local_plan_args(settings: Settings, schedule_id: str, from_: str, to: str):
    from daemon.cli.common import project_schedules
    from daemon.runner.backfill import find_schedule, parse_bound, shown

    schedules = project_schedules(settings)
    spec = find_schedule({s.id: s for s in schedules}, schedule_id)
    now = datetime.now(UTC)
    start = parse_bound("--from", from_, spec.zone, now)
    end = parse_bound("--to", to, spec.zone, now, last=True)
    if start > end:
        raise UsageError(f"--from {shown(start)} is after --to {shown(end)}")
    return spec, start, end


def _confirm_many(spec, start: datetime, end: datetime) -> bool:
    from datetime import timedelta

    from daemon.runner.backfill import MAX_SLOTS_WITHOUT_YES
    from daemon.schedule.firetimes import count_slots

    before = start - timedelta(microseconds=1)
    if count_slots(spec, before, end, cap=MAX_SLOTS_WITHOUT_YES) is not None:
        return False
    if not sys.stdin.isatty():
        return False  # the plan refuses it, naming --yes
    question = (
        f"{spec.id} has more than {MAX_SLOTS_WITHOUT_YES:,} slots in that range; run them all?"
    )
    if not typer.confirm(question, err=True):
        raise typer.Exit(1)
    return True


def _all_ran(records: list, last: dict) -> bool:
    return last.get("left", 0) == 0 and all(r.status == "success" for r in records)


# --------------------------------------------------------------------------- the two ways


class _Stops:
    """SIGINT / SIGTERM while a job runs: the first stops it, the second cancels runs."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        self._old = {sig: signal.signal(sig, self._on) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _on(self, signum, frame) -> None:
        self.count += 1

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Remote:
    """A job in the running daemon, polled over the control socket."""

    def __init__(self, settings: Settings, cmd: str, args: dict):
        self.settings = settings
        answer = self._ask(cmd, timeout_s=PLAN_TIMEOUT_S, **args)
        self.job = answer["job"]
        self.first, self.last = answer, answer

    def _ask(self, cmd: str, timeout_s: float = 30.0, **args) -> dict:
        from daemon.serve.control import request

        answer = request(self.settings.control_socket, cmd, timeout_s=timeout_s, **args)
        if not answer.get("ok"):
            error = FlowerdError(answer.get("error", "the daemon refused"))
            error.exit_code = answer.get("exit_code", 1)
            raise error
        return answer

    def follow(self, view: _View) -> list:
        view.recorded(self.first.get("recorded_runs", []), self.first)
        with _Stops() as stops, view.bar(self.first["total"]) as bar:
            sent = 0
            while not self.last["finished"]:
                time.sleep(POLL_S)
                try:
                    self.last = self._poll(stops.count > sent, view)
                except (DaemonNotRunning, OSError, ValueError):  # it stopped meanwhile
                    view.note("the daemon went away; what it started is recorded")
                    break
                sent = stops.count
                bar(self.last)
        return _records(self.settings.db_url, self.last["runs"])

    def _poll(self, stop: bool, view: _View) -> dict:
        if stop:
            view.note("stopping: no new runs start; runs going finish")
            return self._ask("job_stop", job=self.job)
        return self._ask("job", job=self.job)


class _Local:
    """No daemon listens: the job runs in this process, through the same Runner."""

    def __init__(self, settings: Settings, start):
        self.settings = settings
        self._start = start
        self.last: dict = {}

    def follow(self, view: _View) -> list:
        return asyncio.run(self._follow(view))

    async def _follow(self, view: _View) -> list:
        history, runner, job = await self._start()
        try:
            self.last = job.progress()
            view.recorded([_brief(r) for r in job.plan.recorded], self.last)
            task = asyncio.ensure_future(job.run())
            loop = asyncio.get_running_loop()
            stops = {"count": 0}

            def on_stop() -> None:
                stops["count"] += 1
                if stops["count"] == 1:
                    view.note("stopping: no new runs start; runs going finish (again: cancel)")
                    job.stop()
                else:
                    task.cancel()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_stop)
            with view.bar(len(job.plan.items)) as bar:
                while not task.done():
                    await asyncio.wait({task}, timeout=POLL_S)
                    self.last = job.progress()
                    bar(self.last)
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.last = job.progress()
            return await history.get_runs(list(job.run_ids))
        finally:
            runner.close()
            await history.close()


async def _open(settings: Settings):
    from daemon.history import History
    from daemon.pipeline import Pipelines
    from daemon.runner.runner import Runner

    pm = Pipelines(settings.base_dir, pipelines_dir=settings.pipelines_dir)
    history = await History.open(
        settings.db_url, max_row_bytes=settings.max_row_bytes, state_dir=settings.state_dir
    )
    runner = Runner(
        pm=pm,
        history=history,
        max_concurrent_runs=settings.max_concurrent_runs,
        threads=settings.threads,
        timezone=settings.timezone,
    )
    return pm, history, runner


async def _local_backfill(settings: Settings, spec, start, end, rerun: bool, yes: bool):
    from daemon.pipeline import RunConfig
    from daemon.runner.backfill import Job, plan_backfill, slots_in

    slots, later = slots_in(spec, start, end, now=datetime.now(UTC), yes=yes)
    pm, history, runner = await _open(settings)
    try:
        pm.validate(spec.pipeline, RunConfig(**spec.run_config_kwargs()))
        plan = await plan_backfill(history, spec, slots, rerun=rerun, pm=pm)
    except BaseException:
        runner.close()
        await history.close()
        raise
    plan.later = later
    return history, runner, Job(runner, plan)


async def _local_rerun(settings: Settings, run_id: int):
    from daemon.cli.common import project_schedules
    from daemon.runner.backfill import Item, Job, Plan, rerun_config

    pm, history, runner = await _open(settings)
    try:
        record = await history.get_run(run_id)
        schedules = {}
        with contextlib.suppress(FlowerdError, OSError):  # the run may outlive its file
            found = project_schedules(settings)
            schedules = {s.id: s for s in found}
        schedule = schedules.get(record.schedule or "")
        cfg = rerun_config(record, schedule, pm)
    except BaseException:
        runner.close()
        await history.close()
        raise
    item = Item(slot=None, again=record, cfg=cfg, schedule=schedule)
    return history, runner, Job(runner, Plan(schedule=None, items=[item]))


def _records(url: str, ids: list[int]) -> list:
    from daemon.cli.common import _read_history

    return asyncio.run(_read_history(url, lambda h: h.get_runs(list(ids))))


def _brief(record) -> dict:  # noqa: ANN001
    from daemon.durations import iso

    return {"id": record.id, "scheduled_at": iso(record.scheduled_at), "status": record.status}


# --------------------------------------------------------------------------- output


class _View:
    """What a person sees: a progress bar on a terminal (stderr), lines, a summary; with
    --json, stdout carries only the JSON."""

    def __init__(self, as_json: bool, what: str, *, bar: bool = True, zone=UTC):
        self.as_json = as_json
        self.what = what
        self.zone = zone  # slots are shown in the schedule's timezone
        self.show_bar = bar and sys.stderr.isatty()

    def note(self, line: str) -> None:
        typer.echo(f"{self.what}: {line}", err=True)

    def recorded(self, rows: list[dict], first: dict) -> None:
        for row in rows:
            slot = self._local(row["scheduled_at"])
            typer.echo(
                f"already in the history: slot {slot} (run {row['id']}, {row['status']}); skipped",
                err=self.as_json,
            )
        if first.get("later"):
            self.note(f"{first['later']} slot(s) after now are left to the scheduler")

    def _local(self, moment: str | None) -> str:
        return datetime.fromisoformat(moment).astimezone(self.zone).isoformat() if moment else "-"

    @contextlib.contextmanager
    def bar(self, total: int):
        if not self.show_bar or not total:
            yield lambda progress: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn(
                "{task.completed}/{task.total} done, {task.fields[failed]} failed, "
                "{task.fields[left]} left"
            ),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
            task = progress.add_task(self.what, total=total, failed=0, left=total)

            def update(last: dict) -> None:
                done = last["succeeded"] + last["failed"]
                progress.update(task, completed=done, failed=last["failed"], left=last["left"])

            yield update

    def summary(self, records: list, last: dict) -> None:
        if self.as_json:
            typer.echo(json.dumps([record.to_json() for record in records], indent=2))
        ok = sum(1 for record in records if record.status == "success")
        failed = [record for record in records if record.status != "success"]
        for record in failed:
            error = f": {record.error.type}: {record.error.message}" if record.error else ""
            slot = self._local(record.scheduled_at.isoformat() if record.scheduled_at else None)
            typer.echo(f"run {record.id} (slot {slot}) {record.status}{error}", err=True)
        parts = [f"{len(records)} run(s): {ok} succeeded, {len(failed)} failed"]
        if last.get("recorded"):
            parts.append(f"{len(last['recorded'])} slot(s) already in the history, skipped")
        not_started = last.get("left", 0) - last.get("running", 0)
        if not_started > 0:
            parts.append(f"{not_started} not started (stopped; run the same command to go on)")
        typer.echo(f"{self.what}: {'; '.join(parts)}", err=self.as_json)


def _print_one(record, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        return
    typer.echo(
        f"run {record.id} (rerun of run {record.rerun_of}): {record.status} in "
        f"{record.duration_s or 0:.3f} s"
    )
    if record.error:
        typer.echo(f"{record.error.type}: {record.error.message}", err=True)
    elif record.result_summary:
        typer.echo(record.result_summary)
