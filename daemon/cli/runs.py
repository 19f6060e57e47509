"""`flowerd runs`, `runs show`, `stats`: read-only questions about the history."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated

import typer

from daemon.cli.app import JsonFlag, WhenOption, app, runs_app, settings_of
from daemon.cli.common import (
    _configured_schedules,
    _instant,
    _iso,
    _read_history,
    _with_next_fires,
)
from daemon.cli.fit import zone_of
from daemon.cli.render import (
    _print_run,
    _print_runs,
    _print_stats,
)
from daemon.errors import UsageError, did_you_mean

# Read-only commands open the database with `readonly=True` (they never block the
# daemon's writer) and import neither Hamilton nor APScheduler; `daemon.history` is
# imported inside each command so `flowerd --help` stays fast too.


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    schedule: Annotated[str | None, typer.Option("--schedule", "-s")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p")] = None,
    status: Annotated[str | None, typer.Option("--status", help="e.g. failed, success.")] = None,
    trigger: Annotated[
        str | None, typer.Option("--trigger", help="schedule | catchup | manual")
    ] = None,
    since: Annotated[str | None, WhenOption] = None,
    until: Annotated[str | None, WhenOption] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many; 0: all.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Query the run history, newest first (`runs show ID` for one run)."""
    if ctx.invoked_subcommand is not None:
        return
    if limit < 0:
        raise UsageError(f"--limit: {limit} is negative; give 0 (all) or more")
    filters = {
        "schedule": schedule,
        "pipeline": pipeline,
        "status": status,
        "trigger": trigger,
        "since": _instant("--since", since),
        "until": _instant("--until", until),
        "limit": limit,
    }
    settings = settings_of(ctx)
    records = asyncio.run(_read_history(settings.db_url, lambda h: h.list_runs(**filters)))
    if not records and schedule is not None:
        _known_schedule(settings, schedule)
    if as_json:
        typer.echo(json.dumps([record.to_json() for record in records], indent=2))
    else:
        _print_runs(records, settings.db_url)


def _known_schedule(settings, schedule: str) -> None:  # noqa: ANN001
    """`runs --schedule nope` says there is no such schedule, not just `no runs` (on
    stderr: the answer itself, an empty list, stays what it is)."""
    known = set(_configured_schedules(settings))
    known |= asyncio.run(_read_history(settings.db_url, lambda h: h.schedule_names()))
    if schedule not in known:
        typer.echo(
            f"flowerd: no schedule {schedule!r}{did_you_mean(schedule, known)} in "
            f"{settings.schedules_dir} or the history; "
            f"schedules: {', '.join(sorted(known)) or '(none)'}",
            err=True,
        )


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id (first column of `runs`).")],
    as_json: JsonFlag = False,
) -> None:
    """One run, with its error and traceback (exit 1 if there is no such run)."""
    settings = settings_of(ctx)
    record = asyncio.run(_read_history(settings.db_url, lambda h: h.get_run(run_id)))
    if as_json:
        typer.echo(json.dumps(record.to_json(), indent=2))
    else:
        _print_run(record, zone_of(record.schedule, _zones(settings), settings.timezone))


@app.command()
def stats(
    ctx: typer.Context,
    since: Annotated[str | None, WhenOption] = None,
    as_json: JsonFlag = False,
) -> None:
    """Per schedule and per pipeline: runs, success rate, p50/p95 duration, last status,
    next fire."""
    settings = settings_of(ctx)
    after = _instant("--since", since)
    found = asyncio.run(_read_history(settings.db_url, lambda h: _stats_of(h, after)))
    rows, paused = found
    by_schedule = _with_next_fires(
        [row for row in rows if row["kind"] == "schedule"], settings, paused
    )
    by_pipeline = [row for row in rows if row["kind"] == "pipeline"]
    if as_json:
        doc = {"since": _iso(after), "schedules": by_schedule, "pipelines": by_pipeline}
        typer.echo(json.dumps(doc, indent=2))
    else:
        _print_stats(by_schedule, by_pipeline, _zones(settings), settings.timezone)


def _zones(settings) -> dict[str, str]:  # noqa: ANN001
    return {sid: schedule.timezone for sid, schedule in _configured_schedules(settings).items()}


async def _stats_of(history, since: datetime | None) -> tuple[list[dict], set[str]]:
    return await history.stats(since=since), await history.paused()
