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
from daemon.settings import Settings, load_settings

app = typer.Typer(
    name="flowerd",
    help="A scheduled orchestration daemon for Hamilton pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


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
) -> None:
    """Global options come before the command."""
    settings = load_settings(base_dir, database_url=db, log_level=log_level, log_format=log_format)
    ctx.obj = settings


# --------------------------------------------------------------------------- the daemon


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the daemon in the foreground (what systemd runs)."""
    from daemon import app as daemon_app
    from daemon.logs import log_config

    settings = settings_of(ctx)
    log_config(settings.log_level, settings.log_format)
    raise typer.Exit(asyncio.run(daemon_app.serve(settings)))


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
    """Run a pipeline once now, in this process; recorded with trigger `manual`."""
    from daemon.logs import log_config

    settings = settings_of(ctx)
    log_config(settings.log_level, settings.log_format)
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
    history = await History.open(settings.db_url)
    try:
        runner = Runner(pm=pm, history=history, max_concurrent_runs=1, threads=1)
        try:
            run_id = await runner.run_manual(pipeline, cfg)
        finally:
            runner.close()
        return await history.get_run(run_id)
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

    settings = settings_of(ctx)
    after = _schedules_from(from_)
    found = load_schedules(settings.schedules_dir, default_timezone=settings.timezone)
    paused = asyncio.run(_paused_schedules(settings.db_url)) if found else set()
    rows = [_schedule_row(s, s.id in paused, after, next_n) for s in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_schedules(rows, settings)


def _schedules_from(text: str | None) -> datetime:
    from daemon.durations import parse_instant

    if text is None:
        return datetime.now(UTC)
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise UsageError(f"--from: {exc}") from None


async def _paused_schedules(db_url: str) -> set[str]:
    """Ids paused in the history; none when there is no history (yet) to read."""
    from daemon.settings import sqlite_path

    path = sqlite_path(db_url)
    if path is not None and not path.exists():
        return set()
    try:
        from daemon.history import History

        history = await History.open(db_url, readonly=True)
    except ImportError:
        return set()
    except Exception as exc:  # the listing is still useful without the paused state
        typer.echo(f"warning: cannot read paused schedules from the history: {exc}", err=True)
        return set()
    try:
        return set(await history.paused())
    finally:
        await history.close()


def _schedule_row(schedule, paused: bool, after: datetime, next_n: int) -> dict:  # noqa: ANN001
    from daemon.trigger import next_fire_times

    fires = schedule.enabled and not paused
    return {
        "id": schedule.id,
        "pipeline": schedule.pipeline,
        "file": str(schedule.file),
        "trigger": schedule.describe_trigger(),
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "paused": paused,
        "async_driver": schedule.async_driver,
        "next": [t.isoformat() for t in next_fire_times(schedule, after, next_n)] if fires else [],
    }


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
