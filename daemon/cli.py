"""The `flowerd` command: typer commands that read settings once and print tables or JSON.

History commands must start fast: nothing here imports Hamilton (or pandas) at module
level; only `run`, `validate` and `serve` import the pipeline layer, lazily.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from daemon.errors import FlowerdError, UsageError
from daemon.settings import Settings, load_settings, sqlite_path

app = typer.Typer(
    name="flowerd",
    help="A scheduled orchestration daemon for Hamilton pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def _print_version(value: bool | None) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"flowerd {version('flowerd')}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    base_dir: Annotated[
        Path | None,
        typer.Option("--base-dir", envvar="FLOWERD_BASE_DIR", help="Project directory."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="FLOWERD_DATABASE_URL", help="Database URL or SQLite path."),
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text | json")] = None,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print it."),
    ] = None,
) -> None:
    """Global options come before the command."""
    settings = load_settings(base_dir, database_url=db, log_level=log_level, log_format=log_format)
    ctx.obj = settings


# --------------------------------------------------------------------------- the daemon


@app.command()
def serve(
    ctx: typer.Context,
    http: Annotated[
        str | None,
        typer.Option("--http", help="HOST:PORT (port 0: any free port) or off; the setting."),
    ] = None,
) -> None:
    """Run the daemon in the foreground (what systemd runs)."""
    from daemon import app as daemon_app
    from daemon.http.address import parse_address
    from daemon.logs import log_config

    settings = settings_of(ctx)
    if http is not None:
        settings = settings.model_copy(update={"http": http})
    parse_address(settings.http)  # a bad value is refused before anything starts
    log_config(settings.log_level, settings.log_format)
    code = asyncio.run(daemon_app.serve(settings))
    daemon_app.exit_past_stuck_threads(code)
    raise typer.Exit(code)


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check every schedule file, and that each pipeline builds with its options."""
    from daemon.app import load_and_validate
    from daemon.pipeline import PipelineManager

    settings = settings_of(ctx)
    pm = PipelineManager(settings.base_dir, pipelines_dir=settings.pipelines_dir)
    schedules, warnings = load_and_validate(settings, pm)  # ScheduleError: exit 1, all listed
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{len(schedules)} schedule(s) valid in {settings.schedules_dir}")


def _parse_inputs(pairs: list[str]) -> dict[str, str]:
    inputs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {pair!r}: write KEY=VALUE")
        inputs[key.strip()] = value
    return inputs


@app.command("run")
def run_once(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="A module in pipelines/.")],
    final_var: Annotated[list[str] | None, typer.Option("--final-var", help="Repeatable.")] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", help="KEY=VALUE, repeatable.")
    ] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Use the sync driver.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run a pipeline once now, in this process; recorded with trigger `manual`.
    Prints the result (or the error); `--log-level DEBUG` shows the run's log lines."""
    from daemon.logs import log_config

    settings = settings_of(ctx)
    log_config("DEBUG" if settings.log_level == "DEBUG" else "ERROR", settings.log_format)
    inputs = _parse_inputs(input_ or [])
    record = asyncio.run(_run_recorded(settings, pipeline, final_var or [], inputs, sync))
    if as_json:
        typer.echo(json.dumps(record.to_json(), indent=2))
    else:
        typer.echo(f"run {record.id}: {record.status} in {record.duration_s or 0:.3f} s")
        if record.error:
            typer.echo(f"{record.error.type}: {record.error.message}", err=True)
        elif record.result_summary:
            typer.echo(record.result_summary)
    if record.status != "success":
        raise typer.Exit(1)


async def _run_recorded(settings: Settings, pipeline, final_vars, raw_inputs, sync):
    from daemon.history import History
    from daemon.pipeline import PipelineManager, RunConfig
    from daemon.runner import Runner

    pm = PipelineManager(settings.base_dir, pipelines_dir=settings.pipelines_dir)
    inputs = pm.typed_inputs(pipeline, raw_inputs, async_driver=not sync)
    cfg = RunConfig(final_vars=final_vars or None, inputs=inputs, async_driver=not sync)
    pm.validate(pipeline, cfg)  # a typo or missing input is refused, not recorded as a run
    history = await History.open(settings.db_url)
    try:
        runner = Runner(pm=pm, history=history, max_concurrent_runs=1, threads=1)
        try:
            outcome = await runner.run_manual(pipeline, cfg)
        finally:
            runner.close()
        return await history.get_run(outcome.run_id)
    finally:
        await history.close()


# --------------------------------------------------------------------------- schedules


@app.command()
def schedules(
    ctx: typer.Context,
    next_n: Annotated[int, typer.Option("--next", min=0, help="Fire times to list.")] = 3,
    from_: Annotated[
        str | None, typer.Option("--from", help="ISO-8601, or a duration ago (2h); default now.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The schedules, their state, and their next fire times after --from."""
    from daemon.schedule import load_schedules
    from daemon.shapes import schedule_json

    settings = settings_of(ctx)
    after = _instant("--from", from_) or datetime.now(UTC)
    found = load_schedules(settings.schedules_dir, default_timezone=settings.timezone)
    paused = asyncio.run(_paused_schedules(settings.db_url)) if found else set()
    rows = [schedule_json(s, s.id in paused, after, next_n) for s in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_schedules(rows, settings)


async def _paused_schedules(db_url: str) -> set[str]:
    """Ids paused in the history; none when there is no history (yet) to read."""
    try:
        return set(await _read_history(db_url, lambda history: history.paused()))
    except FlowerdError as exc:  # the listing is still useful without the paused state
        typer.echo(f"warning: cannot read paused schedules from the history: {exc}", err=True)
        return set()


def _print_schedules(rows: list[dict], settings: Settings) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo(f"no schedules in {settings.schedules_dir}")
        return
    table = Table("id", "pipeline", "trigger", "timezone", "state", "next", "file")
    for column in table.columns:
        column.no_wrap = True
    for row in rows:
        state = "paused" if row["paused"] else ("enabled" if row["enabled"] else "disabled")
        upcoming = "\n".join(row["next"]) or "-"
        cells = (row["id"], row["pipeline"], row["trigger"], row["timezone"], state, upcoming)
        table.add_row(*cells, Path(row["file"]).name)
    console = Console()
    if not console.is_terminal:  # piped or captured: full rows, not 80 truncated columns
        console.width = max(console.width, 200)
    console.print(table)


# --------------------------------------------------------------------------- talk to it


def _ask(ctx: typer.Context, cmd: str, **args) -> dict:
    from daemon.control import request

    answer = request(settings_of(ctx).control_socket, cmd, **args)
    if not answer.get("ok"):
        raise FlowerdError(answer.get("error", "the daemon refused"))
    return answer


@app.command()
def trigger(ctx: typer.Context, schedule: str) -> None:
    """Run a schedule now in the running daemon (trigger `manual`)."""
    typer.echo(_ask(ctx, "trigger", schedule=schedule)["message"])


@app.command()
def pause(ctx: typer.Context, schedule: str) -> None:
    """Stop firing a schedule until `resume` (survives restarts)."""
    typer.echo(_ask(ctx, "pause", schedule=schedule)["message"])


@app.command()
def resume(ctx: typer.Context, schedule: str) -> None:
    """Fire a paused schedule again, from its next slot."""
    typer.echo(_ask(ctx, "resume", schedule=schedule)["message"])


@app.command()
def reload(ctx: typer.Context) -> None:
    """Re-read the schedule files; on any error the daemon keeps what it had (exit 1)."""
    answer = _ask(ctx, "reload")
    for warning in answer.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(answer["message"])


@app.command()
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Uptime, schedules with next fire, running runs and event-loop lag."""
    answer = _ask(ctx, "status")
    answer.pop("ok", None)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    typer.echo(
        f"flowerd pid {answer['pid']}, up {answer['uptime_s']:.0f} s, "
        f"loop lag {answer['loop_lag_ms']:.1f} ms, {len(answer['running'])} running"
    )
    if answer.get("http"):
        typer.echo(f"  page, API and metrics: {answer['http']}/")
    for sched in answer["schedules"]:
        state = "paused" if sched["paused"] else ("enabled" if sched["enabled"] else "disabled")
        typer.echo(f"  {sched['id']:<24} {state:<8} next {sched['next'] or '-'}")
    for run in answer["running"]:
        typer.echo(f"  running: run {run['id']} {run['pipeline']} since {run['started_at']}")


# --------------------------------------------------------------------------- systemd
service_app = typer.Typer(help="The systemd unit for this install.", no_args_is_help=True)
app.add_typer(service_app, name="service")

UserFlag = Annotated[bool, typer.Option("--user", help="A unit for `systemctl --user`.")]
RunAs = Annotated[
    str | None,
    typer.Option(
        "--run-as",
        help="System units: the user to run as, or 'dynamic' for DynamicUser=yes "
        "(default: the base dir's owner; dynamic when that is root).",
    ),
]


def _unit_for(ctx: typer.Context, user: bool, run_as: str | None) -> str:
    from daemon import systemd

    settings = settings_of(ctx)
    if run_as is None:
        run_as = systemd.default_run_as(settings.base_dir)
    elif run_as == "dynamic":
        run_as = None
    exe = systemd.flowerd_executable()
    for needed in (settings.base_dir, exe) if not user and run_as is None else ():
        if not systemd.world_readable(needed):
            typer.echo(f"warning: a DynamicUser cannot read {needed}; use --run-as USER", err=True)
    return systemd.render_unit(settings, user=user, run_as=run_as, flowerd_path=exe)


@service_app.command("print")
def service_print(ctx: typer.Context, user: UserFlag = False, run_as: RunAs = None) -> None:
    """Print the flowerd.service unit for this install."""
    typer.echo(_unit_for(ctx, user, run_as), nl=False)


@service_app.command("install")
def service_install(
    ctx: typer.Context,
    user: UserFlag = False,
    run_as: RunAs = None,
    path: Annotated[Path | None, typer.Option("--path", help="Write the unit here.")] = None,
) -> None:
    """Write the unit (system-wide, or for your user manager) and say how to enable it."""
    from daemon import systemd

    target = path or systemd.unit_path(user=user)
    text = _unit_for(ctx, user, run_as)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        hint = "" if user else "; run it as root, or use --user"
        raise FlowerdError(f"cannot write {target}: {exc.strerror or exc}{hint}") from None
    typer.echo(f"wrote {target}")
    typer.echo(f"enable and start it:\n  {systemd.enable_commands(user=user)}")
    db = systemd.database_hint(settings_of(ctx), user=user)
    if db:
        typer.echo(f"its history:\n  flowerd --base-dir {settings_of(ctx).base_dir} --db {db} runs")


# --------------------------------------------------------------------------- history
# Read-only commands open the database with `readonly=True` (they never block the
# daemon's writer) and import neither Hamilton nor APScheduler; `daemon.history` is
# imported inside each command so `flowerd --help` stays fast too.

STATUS_STYLES = {
    "success": "green",
    "failed": "red",
    "timed_out": "red",
    "crashed": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
    "missed": "magenta",
    "running": "cyan",
    "queued": "blue",
}

runs_app = typer.Typer(help="Query the run history, newest first.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")
db_app = typer.Typer(help="The history database: migrations and retention.", no_args_is_help=True)
app.add_typer(db_app, name="db")

WhenOption = typer.Option(help="ISO-8601, or a duration ago: 30m, 2h, 7d.")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the contract's JSON.")]


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
    record = asyncio.run(_read_history(url, lambda h: h.get_run(run_id)))
    if as_json:
        typer.echo(json.dumps(record.to_json(), indent=2))
    else:
        _print_run(record)


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


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the history database to this flowerd's schema (creates it if needed)."""
    from daemon import history

    url = settings_of(ctx).db_url
    revision = asyncio.run(history.upgrade(url))
    typer.echo(f"{history.describe(url)}: schema at revision {revision} (head)")


@db_app.command("prune")
def db_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete finished runs older than this: 30d.")
    ],
) -> None:
    """Delete runs that finished longer ago than --older-than (running ones stay)."""
    from datetime import timedelta

    from daemon.durations import parse_duration_s

    try:
        age_s = parse_duration_s(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    url = settings_of(ctx).db_url
    before = datetime.now(UTC) - timedelta(seconds=age_s)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        typer.echo(f"no history at {path}; nothing to prune")
        return
    deleted = asyncio.run(_prune(url, before))
    typer.echo(f"deleted {deleted} run(s) that finished before {_iso(before)}")


async def _prune(url: str, before: datetime) -> int:
    from daemon.history import History

    async with History.open(url) as history:
        return await history.prune(before=before)


async def _read_history(url: str, query):
    from daemon.history import History

    async with History.open(url, readonly=True) as history:
        return await query(history)


def _instant(flag: str, text: str | None) -> datetime | None:
    from daemon.durations import parse_instant

    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _iso(moment: datetime | None) -> str | None:
    from daemon.durations import iso

    return iso(moment)


def _with_next_fires(rows: list[dict], settings: Settings, paused: set[str]) -> list[dict]:
    """Add `next_fire` to each schedule's row, and rows for schedules with no runs yet.
    Blank (None) when the schedule files are invalid or the schedule does not fire."""
    configured = _configured_schedules(settings)
    known = {row["schedule"] for row in rows}
    for schedule_id, schedule in configured.items():
        if schedule_id not in known:
            rows.append(_no_runs_row(schedule_id, schedule.pipeline))
    now = datetime.now(UTC)
    for row in rows:
        schedule = configured.get(row["schedule"])
        row["next_fire"] = _next_fire(schedule, now, row["schedule"] in paused)
        row["paused"] = row["schedule"] in paused
    return sorted(rows, key=lambda row: row["schedule"])


def _configured_schedules(settings: Settings) -> dict:
    from daemon.schedule import load_schedules

    try:
        found = load_schedules(settings.schedules_dir, default_timezone=settings.timezone)
    except (FlowerdError, OSError):
        return {}  # stats still answer from the history alone
    return {schedule.id: schedule for schedule in found}


def _next_fire(schedule, now: datetime, paused: bool) -> str | None:  # noqa: ANN001
    if schedule is None or paused or not schedule.enabled:
        return None
    from daemon.trigger import next_fire_times

    fires = next_fire_times(schedule, now, 1)
    return _iso(fires[0]) if fires else None


def _no_runs_row(schedule_id: str, pipeline: str) -> dict:
    return {
        "kind": "schedule",
        "name": schedule_id,
        "schedule": schedule_id,
        "pipeline": pipeline,
        "runs": 0,
        "successes": 0,
        "failures": 0,
        "cancelled": 0,
        "skipped": 0,
        "missed": 0,
        "success_rate": None,
        "p50_s": None,
        "p95_s": None,
        "last_status": None,
        "last_at": None,
    }


def _styled(status: str | None) -> str:
    if status is None:
        return "-"
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago`, `in 4m` -- relative times for tables."""
    if moment is None:
        return "-"
    delta_s = ((now or datetime.now(UTC)) - moment).total_seconds()
    future, delta_s = delta_s < 0, abs(delta_s)
    for unit, size_s in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta_s >= size_s:
            amount = f"{int(delta_s // size_s)}{unit}"
            break
    else:
        amount = f"{int(delta_s)}s"
    return f"in {amount}" if future else f"{amount} ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: full rows, not 80 truncated columns
        console.width = max(console.width, 200)
    return console


def _print_runs(records: list, db_url: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not records:
        typer.echo("no runs")
        return
    table = Table("id", "schedule", "pipeline", "trigger", "status", "when", "took", "tries")
    table.add_column("error", overflow="ellipsis", max_width=60)
    now = datetime.now(UTC)
    for record in records:
        error = f"{record.error.type}: {record.error.message}" if record.error else ""
        table.add_row(
            str(record.id),
            escape(record.schedule or "-"),
            escape(record.pipeline),
            record.trigger,
            _styled(record.status),
            ago(record.at, now),
            _seconds(record.duration_s),
            str(record.attempts),
            escape(error.splitlines()[0] if error else ""),
        )
    _console().print(table)


def _print_run(record) -> None:  # noqa: ANN001
    from rich.markup import escape

    console = _console()
    doc = record.to_json()
    console.print(f"run {record.id}: {_styled(record.status)}")
    for key in ("schedule", "pipeline", "trigger", "scheduled_at", "started_at", "finished_at"):
        console.print(f"  {key:<14} {escape(str(doc[key] if doc[key] is not None else '-'))}")
    console.print(f"  {'duration':<14} {_seconds(record.duration_s)}")
    console.print(f"  {'lateness':<14} {_seconds(record.lateness_s)}")
    console.print(f"  {'attempts':<14} {record.attempts}")
    console.print(f"  {'driver':<14} {'async' if record.async_driver else 'sync'}")
    console.print(f"  {'final_vars':<14} {escape(', '.join(record.final_vars) or '-')}")
    console.print(f"  {'inputs':<14} {escape(json.dumps(record.inputs))}")
    console.print(f"  {'written by':<14} {escape(record.host)} pid {record.pid}")
    if record.result_summary:
        console.print(f"  {'result':<14} {escape(record.result_summary)}")
    if record.error:
        console.print(f"[red]{escape(record.error.type)}: {escape(record.error.message)}[/red]")
        if record.error.traceback:
            console.print(escape(record.error.traceback.rstrip()))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


STATS_COLUMNS = ("name", "runs", "ok", "failed", "rate", "p50", "p95", "last", "when")


def _print_stats(by_schedule: list[dict], by_pipeline: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not by_schedule and not by_pipeline:
        typer.echo("no runs")
        return
    console = _console()
    now = datetime.now(UTC)
    for title, rows, extra in (
        ("per schedule", by_schedule, "next fire"),
        ("per pipeline", by_pipeline, None),
    ):
        if not rows:
            continue
        table = Table(*STATS_COLUMNS, title=title, title_justify="left")
        if extra:
            table.add_column(extra)
        for row in rows:
            last_at = datetime.fromisoformat(row["last_at"]) if row["last_at"] else None
            cells = [
                escape(row["name"]),
                str(row["runs"]),
                str(row["successes"]),
                str(row["failures"]),
                _rate(row["success_rate"]),
                _seconds(row["p50_s"]),
                _seconds(row["p95_s"]),
                _styled(row["last_status"]),
                ago(last_at, now),
            ]
            if extra:
                fire = row.get("next_fire")
                cells.append("paused" if row.get("paused") else (fire or ""))
            table.add_row(*cells)
        console.print(table)


def main() -> None:
    """Console entry point. Typer handles usage errors (exit 2); our own errors print one
    message and exit with their code (1, 2 or 3) -- never a traceback."""
    try:
        app()
    except FlowerdError as exc:
        print(f"flowerd: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
