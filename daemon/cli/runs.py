"""`flowerd runs`, `runs show`, `stats`: read-only questions about the history."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated

import typer

from daemon.cli.app import JsonFlag, WhenOption, app, runs_app, settings_of
from daemon.cli.common import (
    _instant,
    _iso,
    _read_history,
    _with_next_fires,
)
from daemon.cli.render import (
    _print_run,
    _print_runs,
    _print_stats,
)
from daemon.errors import UsageError

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
        str | None,
        typer.Option("--trigger", help="schedule | catchup | manual | backfill | rerun | upstream"),
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
    if as_json:
        typer.echo(json.dumps([record.to_json() for record in records], indent=2))
    else:
        _print_runs(records, settings.db_url)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id (first column of `runs`).")],
    as_json: JsonFlag = False,
) -> None:
    """One run, with its error and traceback (exit 1 if there is no such run)."""
    url = settings_of(ctx).db_url
    record, reruns = asyncio.run(_read_history(url, lambda h: _with_reruns(h, run_id)))
    if as_json:
        typer.echo(json.dumps({**record.to_json(), "reruns": reruns}, indent=2))
        return
    _print_run(record)
    chain = [f"this run repeats {record.rerun_of}"] if record.rerun_of is not None else []
    if reruns:
        chain.append(f"repeated by {', '.join(str(r) for r in reruns)}")
    if chain:
        typer.echo(f"  {'reruns':<14} {'; '.join(chain)}")


async def _with_reruns(history, run_id: int):
    return await history.get_run(run_id), await history.reruns_of(run_id)


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
        _print_stats(by_schedule, by_pipeline)


async def _stats_of(history, since: datetime | None) -> tuple[list[dict], set[str]]:
    return await history.stats(since=since), await history.paused()
