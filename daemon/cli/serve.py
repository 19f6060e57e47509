"""`serve`, `validate` and `run`: the commands that load pipelines (lazily)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated

import typer

from daemon.cli.app import app, settings_of
from daemon.errors import FlowerdError, UsageError
from daemon.settings import Settings


@app.command()
def serve(
    ctx: typer.Context,
    http: Annotated[
        str | None,
        typer.Option("--http", help="HOST:PORT (port 0: any free port) or off; the setting."),
    ] = None,
) -> None:
    """Run the daemon in the foreground (what systemd runs)."""
    from daemon.http.address import parse_address
    from daemon.logs import log_config, stop_background
    from daemon.serve import collector

    with collector.paused(keep=True):  # the daemon's modules (Hamilton, pandas, SQLAlchemy)
        from daemon.serve import daemon as daemon_app

    settings = settings_of(ctx)
    if http is not None:
        settings = settings.model_copy(update={"http": http})
    parse_address(settings.http)  # a bad value is refused before anything starts
    log_config(settings.log_level, settings.log_format, background=True, zone=settings.timezone)
    try:
        code = asyncio.run(daemon_app.serve(settings))
    except FlowerdError as exc:  # start-up refused: one paragraph, then no thread holds us
        stop_background()  # the lines logged before it come first
        print(f"flowerd: {exc}", file=sys.stderr)
        daemon_app.exit_past_stuck_threads(exc.exit_code)
        raise typer.Exit(exc.exit_code) from None
    daemon_app.exit_past_stuck_threads(code)
    raise typer.Exit(code)


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check every schedule file, and that each pipeline builds with its options."""
    from daemon.serve import collector

    settings = settings_of(ctx)
    with collector.paused(keep=True):  # what it imports and reads lives until the exit
        from daemon.pipeline import Pipelines
        from daemon.serve.validate import load_and_validate

        pm = Pipelines(settings.base_dir, pipelines_dir=settings.pipelines_dir)
        schedules, warnings = load_and_validate(
            settings, pm, reach_clusters=True, resolve_secrets=False
        )
    for warning in warnings:  # a ScheduleError above: exit 1, every problem listed
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{len(schedules)} schedule(s) valid in {settings.schedules_dir}")


def _parse_inputs(pairs: list[str]) -> dict[str, str]:
    from daemon.inputs import check_not_reserved

    inputs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {pair!r}: write KEY=VALUE")
        inputs[key.strip()] = value
    try:
        check_not_reserved(inputs)
    except ValueError as exc:
        raise UsageError(f"--input: {exc}") from None
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run as JSON (prints go to stderr).")
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="DEBUG shows the run's log lines (default: errors only). "
            "Also accepted before the command.",
        ),
    ] = None,
) -> None:
    """Run a pipeline once now, in this process; recorded with trigger `manual`.
    Prints the result as JSON (or the error); the run's prints and log go to its run log
    (`flowerd runs logs ID`) and to stderr, never to stdout."""
    from daemon.logs import log_config, set_terminal_level

    settings = settings_of(ctx)
    level = (log_level or settings.log_level).upper()
    log_config(level, settings.log_format, zone=settings.timezone)  # the run's log gets its lines,
    if level != "DEBUG":  # the terminal only errors
        set_terminal_level("ERROR")
    inputs = _parse_inputs(input_ or [])
    job = _run_recorded(settings, pipeline, final_var or [], inputs, sync, echo=True)
    record = asyncio.run(job) if not as_json else _stdout_kept_for_json(job)
    if as_json:
        typer.echo(json.dumps(record.to_json(), indent=2))
    else:
        typer.echo(f"run {record.id}: {record.status} in {record.duration_s or 0:.3f} s")
        if record.error:
            typer.echo(f"{record.error.type}: {record.error.message}", err=True)
        elif record.result is not None:
            typer.echo(json.dumps(record.to_json()["result"], indent=2))
        elif record.result_summary:
            typer.echo(record.result_summary)
    if record.status != "success":
        raise typer.Exit(1)


def _stdout_kept_for_json(job):  # noqa: ANN001, ANN202
    """With --json, stdout carries only the JSON: while the pipeline runs, what it (or a
    library, or a C extension) writes to stdout goes to stderr -- file descriptor 1
    itself points there, so threads and child processes are covered too."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        try:
            return asyncio.run(job)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
    finally:
        os.close(saved)


async def _run_recorded(settings: Settings, pipeline, final_vars, raw_inputs, sync, echo=True):
    """The run's prints go to its log, and (`echo`) to stderr: stdout is the result's."""
    from daemon.history import History
    from daemon.observe.tracking import Tracking
    from daemon.pipeline import Pipelines, RunConfig
    from daemon.runner.runner import Runner
    from daemon.tell.runlogs import RunLogs

    tracking = Tracking.from_settings(settings)
    pm = Pipelines(settings.base_dir, pipelines_dir=settings.pipelines_dir,
                   node_hooks=tracking.hooks)  # fmt: skip
    inputs = pm.typed_inputs(pipeline, raw_inputs, async_driver=not sync)
    cfg = RunConfig(final_vars=final_vars or None, inputs=inputs, async_driver=not sync)
    pm.validate(pipeline, cfg)  # a typo or missing input is refused, not recorded as a run
    history = await History.open(settings.db_url, state_dir=settings.state_dir)
    try:
        runner = Runner(
            pm=pm, history=history, max_concurrent_runs=1, threads=1, timezone=settings.timezone
        )
        runner.tracking = tracking
        keeper = RunLogs(history, max_bytes=settings.max_log_bytes, echo_prints=echo)
        try:
            async with keeper.attach(runner.events):
                outcome = await runner.run_manual(pipeline, cfg)
        finally:
            runner.close()
            await tracking.close()
        return await history.get_run(outcome.run_id)
    finally:
        await history.close()
