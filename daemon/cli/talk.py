"""Talking to the running daemon over its control socket."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from daemon.cli.app import JsonFlag, app, settings_of
from daemon.cli.fit import console, shown_at
from daemon.errors import FlowerdError

# --------------------------------------------------------------------------- talk to it


def _ask(ctx: typer.Context, cmd: str, **args) -> dict:
    from daemon.serve.control import request

    answer = request(settings_of(ctx).control_socket, cmd, **args)
    if not answer.get("ok"):
        raise FlowerdError(answer.get("error", "the daemon refused"))
    return answer


@app.command()
def trigger(
    ctx: typer.Context,
    schedule: str,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", help="KEY=VALUE, repeatable: overrides for this run only."),
    ] = None,
) -> None:
    """Run a schedule now in the running daemon (trigger `manual`)."""
    from daemon.cli.serve import _parse_inputs

    inputs = _parse_inputs(input_ or [])
    typer.echo(_ask(ctx, "trigger", schedule=schedule, inputs=inputs)["message"])


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
def stop(ctx: typer.Context) -> None:
    """Stop the running daemon, as SIGTERM does (running runs get shutdown_grace)."""
    typer.echo(_ask(ctx, "stop")["message"])


@app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
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
    width = console().width  # a health sentence wraps at the terminal's width
    for part, health in (answer.get("health") or {}).items():
        if health != "ok":
            typer.echo(textwrap.fill(f"  {part}: {health}", width, subsequent_indent="    "))
    default = settings_of(ctx).timezone  # times in each schedule's zone, else this one
    zones = {
        sched["id"]: ZoneInfo(sched.get("timezone") or default) for sched in answer["schedules"]
    }
    width = max([len(schedule_id) for schedule_id in zones] or [0])
    for sched in answer["schedules"]:
        state = "paused" if sched["paused"] else ("enabled" if sched["enabled"] else "disabled")
        nxt = _local(sched["next"], zones[sched["id"]])
        typer.echo(f"  {sched['id']:<{width}} {state:<8} next {nxt}")
        if sched.get("paused_reason"):
            typer.echo(f"  {'':<{width}} paused because {sched['paused_reason']}")
    for run in answer["running"]:
        since = _local(run.get("started_at"), zones.get(run.get("schedule"), ZoneInfo(default)))
        typer.echo(f"  running: run {run['id']} {run['pipeline']} since {since}")
    daemons = answer.get("daemons") or []
    for other in daemons if len(daemons) > 1 else ():  # several daemons share the history
        state = "" if other.get("alive", True) else " (lease expired)"
        typer.echo(
            f"  daemon {other['id']} on {other['host']} pid {other['pid']}, "
            f"last seen {other['last_seen']}{state}"
        )


def _local(text: str | None, zone: ZoneInfo) -> str:
    return shown_at(datetime.fromisoformat(text), zone) if text else "-"
