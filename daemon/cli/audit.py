"""`flowerd audit`: who did what to the daemon, newest first (daemon.serve.audit)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated

import typer

from daemon.cli.app import JsonFlag, WhenOption, app, settings_of
from daemon.cli.common import _instant, _read_history


@app.command()
def audit(
    ctx: typer.Context,
    since: Annotated[str | None, WhenOption] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every act on the daemon (trigger, pause, resume, rerun, backfill, reload, stop):
    when, who (the Unix user or the HTTP token's name), through what, on what."""
    settings = settings_of(ctx)
    after = _instant("--since", since)
    rows = asyncio.run(_read_history(settings.db_url, lambda h: h.audit(since=after)))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no acts recorded" + (f" since {since}" if since else ""))
    for row in rows:
        typer.echo(line_of(row))


def line_of(row: dict) -> str:
    at = datetime.fromisoformat(row["at"]).strftime("%Y-%m-%d %H:%M:%S%z")
    what = " ".join(
        str(part)
        for part in (row["action"], row["schedule"], row["run_id"] and f"run {row['run_id']}")
        if part
    )
    detail = f"  ({row['detail']})" if row["detail"] else ""
    return f"{at}  {row['actor']:<16} {row['via']:<4}  {what}{detail}"
