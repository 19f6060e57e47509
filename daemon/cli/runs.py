"""`flowerd runs`, `runs show`, `stats`: read-only questions about the history."""

from __future__ import annotations

import asyncio
import contextlib
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
from daemon.errors import FlowerdError, UsageError, did_you_mean

# Read-only commands open the database with `readonly=True` (they never block the
# daemon's writer) and import neither Hamilton nor APScheduler; `daemon.history` is
# imported inside each command so `flowerd --help` stays fast too, and the tables
# (render, rich) and run logs only where they are printed.


UntilOption = typer.Option(
    help="ISO-8601, or a duration ago: 30m, 2h, 7d; a date includes that whole day."
)


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
    until: Annotated[str | None, UntilOption] = None,
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
        "limit": limit,
    }
    settings = settings_of(ctx)
    if since or until:  # a date or a naive time: the schedule's timezone, else the setting's
        zone = _zone_of_schedule(settings, schedule)
        filters["since"] = _instant("--since", since, zone=zone)
        filters["until"] = _instant("--until", until, zone=zone, until=True)
    records = asyncio.run(_read_history(settings.db_url, lambda h: h.list_runs(**filters)))
    if not records and schedule is not None:
        _known_schedule(settings, schedule)
    if as_json:
        typer.echo(json.dumps([record.to_json() for record in records], indent=2))
    else:
        from daemon.cli.render import _print_runs

        _print_runs(records, settings.db_url)


def _zone_of_schedule(settings, schedule: str | None):  # noqa: ANN001, ANN202
    from zoneinfo import ZoneInfo

    configured = _configured_schedules(settings) if schedule else {}
    found = configured.get(schedule)
    return found.zone if found is not None else ZoneInfo(settings.timezone)


def _known_schedule(settings, schedule: str) -> None:  # noqa: ANN001
    """`runs --schedule nope` is an error (exit 1) naming the schedules there are, not an
    empty answer: a typo must not read as 'it never ran'."""
    known = set(_configured_schedules(settings))
    known |= asyncio.run(_read_history(settings.db_url, lambda h: h.schedule_names()))
    if schedule not in known:
        raise FlowerdError(
            f"no schedule {schedule!r}{did_you_mean(schedule, known)} in "
            f"{settings.schedules_dir} or the history; "
            f"schedules: {', '.join(sorted(known)) or '(none)'}"
        )


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id (first column of `runs`).")],
    as_json: JsonFlag = False,
) -> None:
    """One run, with its error and traceback (exit 1 if there is no such run)."""
    settings = settings_of(ctx)
    record, reruns, lines = asyncio.run(
        _read_history(settings.db_url, lambda h: _run_reruns_and_tail(h, run_id))
    )
    if as_json:
        from daemon.http.shapes import run_detail_json

        typer.echo(json.dumps(run_detail_json(record, reruns), indent=2))
        return
    from daemon.cli.fit import zone_of
    from daemon.cli.render import _print_run
    from daemon.tell.runlogs import line_text

    zone = zone_of(record.schedule, _zones(settings), settings.timezone)
    _print_run(record, zone)
    chain = [f"this run repeats {record.rerun_of}"] if record.rerun_of is not None else []
    if reruns:
        chain.append(f"repeated by {', '.join(str(r) for r in reruns)}")
    if chain:
        typer.echo(f"  {'reruns':<14} {'; '.join(chain)}")
    if lines:
        typer.echo(f"last {len(lines)} log line(s) (flowerd runs logs {run_id}):")
        for line in lines:
            typer.echo(line_text(line, zone))


async def _run_reruns_and_tail(history, run_id: int) -> tuple:
    return (
        await history.get_run(run_id),
        await history.reruns_of(run_id),
        await history.log_lines(run_id, last=SHOW_TAIL_LINES),
    )


@runs_app.command("logs")
def runs_logs(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="The run's id (first column of `runs`).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new lines until the run ends.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The run's log: what it logged and printed, in order (exit 1 if there is no such
    run). JSON: a list of {time, level, logger, message}."""
    settings = settings_of(ctx)
    url = settings.db_url
    show = _JsonList() if as_json else _Text(settings)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends --follow; the list closes
        asyncio.run(_read_history(url, lambda h: _show_logs(h, run_id, follow, show)))
    show.close()


SHOW_TAIL_LINES = 20


async def _show_logs(history, run_id: int, follow: bool, show) -> None:
    from daemon.tell.follow import follow as follow_log

    began = False
    async for record, lines in follow_log(history, run_id, once=not follow):
        if not began:
            show.begin(record)
            began = True
        for line in lines:
            show(line)


class _Text:
    """Lines as text, their times in the run's schedule's timezone (or the setting's)."""

    def __init__(self, settings) -> None:  # noqa: ANN001
        self.settings = settings
        self.zone = None

    def begin(self, record) -> None:  # noqa: ANN001
        from daemon.cli.fit import zone_of

        zones = _zones(self.settings) if record.schedule else {}
        self.zone = zone_of(record.schedule, zones, self.settings.timezone)

    def __call__(self, line: dict) -> None:
        from daemon.tell.runlogs import line_text

        typer.echo(line_text(line, self.zone))

    def close(self) -> None:
        pass


class _JsonList:
    """A JSON list printed item by item, so `--follow --json` streams and is still one
    valid JSON document when it ends."""

    def __init__(self) -> None:
        self.count = 0

    def begin(self, record) -> None:  # noqa: ANN001 - JSON times are UTC
        pass

    def __call__(self, line: dict) -> None:
        from daemon.tell.runlogs import line_json

        text = json.dumps(line_json(line))
        typer.echo(("[\n  " if not self.count else ",\n  ") + text, nl=False)
        self.count += 1

    def close(self) -> None:
        typer.echo("\n]" if self.count else "[]")


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
        from daemon.cli.render import _print_stats

        _print_stats(by_schedule, by_pipeline, _zones(settings), settings.timezone)


def _zones(settings) -> dict[str, str]:  # noqa: ANN001
    return {sid: schedule.timezone for sid, schedule in _configured_schedules(settings).items()}


async def _stats_of(history, since: datetime | None) -> tuple[list[dict], set[str]]:
    return await history.stats(since=since), await history.paused()
