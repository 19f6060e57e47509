"""`flowerd schedules`: what is configured, its state and next fire times."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli import fit
from daemon.cli.app import JsonFlag, app, settings_of
from daemon.cli.common import (
    _instant,
    _read_history,
    project_schedules,
)
from daemon.errors import FlowerdError
from daemon.settings import Settings, sqlite_path

# --------------------------------------------------------------------------- schedules


@app.command()
def schedules(
    ctx: typer.Context,
    next_n: Annotated[int, typer.Option("--next", min=0, help="Fire times to list.")] = 3,
    from_: Annotated[
        str | None, typer.Option("--from", help="ISO-8601, or a duration ago (2h); default now.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The schedules, their state, and their next fire times after --from."""
    from daemon.http.shapes import schedule_json
    from daemon.serve import collector

    after = _instant("--from", from_) or datetime.now(UTC)
    settings = settings_of(ctx)
    with collector.paused(keep=True):  # the schedules and rows live until the exit
        found = project_schedules(settings)
        running, told = _daemon_fires(settings)
        if told is not None and found:  # SQLite: the daemon is the history's only writer
            paused, pending = told
        else:
            paused, pending = asyncio.run(_paused_schedules(settings.db_url)) if found else ({}, {})
        rows = [
            schedule_json(
                s, s.id in paused, after, next_n, paused.get(s.id),
                loaded=running is not None and running.get(s.id) == s.fingerprint(),
                pending=pending.get(s.id, 0),
            )
            for s in found
        ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_schedules(rows, settings)
        _print_drift(rows, running)


def _daemon_fires(
    settings: Settings,
) -> tuple[dict[str, str] | None, tuple[dict[str, str | None], dict[str, int]] | None]:
    """The running daemon's schedules (id -> fingerprint; None when none answers), and
    what it says of their state -- (paused, pending), as the history has them -- when its
    history is SQLite: one daemon per database file, so its state is the history's (on
    PostgreSQL another daemon's pause reaches it only at its lease's renewal: read there)."""
    from daemon.serve.control import request

    try:
        answer = request(settings.control_socket, "loaded", timeout_s=ASK_TIMEOUT_S)
    except FlowerdError:
        return None, None
    if not answer.get("ok"):
        return None, None
    told = None
    if sqlite_path(settings.db_url) is not None and "paused" in answer and "pending" in answer:
        told = (answer["paused"], answer["pending"])
    return answer.get("schedules"), told


ASK_TIMEOUT_S = 5.0


def _print_drift(rows: list[dict], running: dict[str, str] | None) -> None:
    """Where the files and the running daemon differ, and what makes them agree."""
    if running is None:
        if rows:
            typer.echo("no daemon is running here: none of these fire until `flowerd serve`")
        return
    in_files = {row["id"] for row in rows}
    drift = [
        ("changed in the files since the daemon loaded them",
         [r["id"] for r in rows if not r["loaded"] and r["id"] in running]),
        ("not loaded yet", [r["id"] for r in rows if r["id"] not in running]),
        ("gone from the files, still fired", sorted(set(running) - in_files)),
    ]  # fmt: skip
    told = [f"{what}: {', '.join(ids)}" for what, ids in drift if ids]
    for line in told:
        typer.echo(line)
    if told:
        typer.echo("the daemon fires what it loaded; `flowerd reload` applies the files")


async def _paused_schedules(db_url: str) -> tuple[dict[str, str | None], dict[str, int]]:
    """Ids paused in the history, and why; and each event schedule's pending events. None
    when there is no history (yet) to read."""

    async def read(history) -> tuple[dict[str, str | None], dict[str, int]]:
        return dict(await history.paused_reasons()), await history.pending_events()

    path = sqlite_path(db_url)
    if path is not None and not path.exists():  # no history yet: what it would answer,
        return {}, {}  # without importing SQLAlchemy (~40 % of this command's start-up)
    try:
        return await _read_history(db_url, read)
    except FlowerdError as exc:  # the listing is still useful without the paused state
        typer.echo(f"warning: cannot read paused schedules from the history: {exc}", err=True)
        return {}, {}


SCHEDULE_COLUMNS = (
    fit.Column("id"),
    fit.Column("pipeline", drop=3),
    fit.Column("trigger", drop=4),
    fit.Column("timezone", drop=2),
    fit.Column("state"),
    fit.Column("next", drop=5),
    fit.Column("file", drop=1),
)


def _print_schedules(rows: list[dict], settings: Settings) -> None:
    from rich.markup import escape

    if not rows:
        typer.echo(f"no schedules in {settings.schedules_dir}")
        return
    cells = []
    for row in rows:
        state = "paused" if row["paused"] else ("enabled" if row["enabled"] else "disabled")
        upcoming = "\n".join(row["next"]) or "-"
        if row["after"]:  # no fire times of its own: when its upstreams succeed
            upcoming = "after " + ", ".join(row["after"])
        elif row["pending"] is not None:  # an event schedule: what waits to run
            upcoming = f"on events; {row['pending']} pending"
        cells.append(
            [
                escape(row["id"]),
                escape(row["pipeline"]),
                escape(row["trigger"]),
                row["timezone"],
                state,
                upcoming,
                escape(Path(row["file"]).name),
            ]
        )
    console = fit.console()
    console.print(fit.table(list(SCHEDULE_COLUMNS), cells, console.width))
