"""`flowerd db upgrade | prune`: migrations and retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer

from daemon.cli.app import db_app, settings_of
from daemon.cli.common import (
    _iso,
)
from daemon.errors import UsageError
from daemon.settings import sqlite_path


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
