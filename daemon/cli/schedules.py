"""`flowerd schedules`: what is configured, its state and next fire times."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.app import app, settings_of
from daemon.cli.common import (
    _instant,
    _read_history,
)
from daemon.errors import FlowerdError
from daemon.settings import Settings

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
    found = load_schedules(
        settings.schedules_dir,
        default_timezone=settings.timezone,
        default_isolation=settings.isolation,
    )
    paused = asyncio.run(_paused_schedules(settings.db_url)) if found else {}
    rows = [schedule_json(s, s.id in paused, after, next_n, paused.get(s.id)) for s in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_schedules(rows, settings)


async def _paused_schedules(db_url: str) -> dict[str, str | None]:
    """Ids paused in the history, and why; none when there is no history (yet) to read."""
    try:
        return dict(await _read_history(db_url, lambda history: history.paused_reasons()))
    except FlowerdError as exc:  # the listing is still useful without the paused state
        typer.echo(f"warning: cannot read paused schedules from the history: {exc}", err=True)
        return {}


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
        if row["after"]:  # no fire times of its own: when its upstreams succeed
            upcoming = "after " + ", ".join(row["after"])
        cells = (row["id"], row["pipeline"], row["trigger"], row["timezone"], state, upcoming)
        table.add_row(*cells, Path(row["file"]).name)
    console = Console()
    if not console.is_terminal:  # piped or captured: full rows, not 80 truncated columns
        console.width = max(console.width, 200)
    console.print(table)
