"""`flowerd db upgrade | prune`: migrations and retention."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from daemon.cli.app import db_app, settings_of
from daemon.cli.common import _iso
from daemon.errors import FlowerdError, UsageError
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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; delete.")] = False,
) -> None:
    """Delete runs that finished longer ago than --older-than, after showing how many per
    schedule and status. Running runs stay, and so does each schedule's newest slot
    (catch-up starts from it), and each schedule's last `retention_keep_failures` failed
    or timed-out runs; run ids are never given out again."""
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
    keep = settings_of(ctx).retention_keep_failures
    deleted = asyncio.run(_prune(url, before, dry_run=dry_run, yes=yes, keep_failures=keep))
    if deleted is not None:
        typer.echo(f"deleted {deleted} run(s) that finished before {_iso(before)}")


async def _prune(
    url: str, before: datetime, *, dry_run: bool, yes: bool, keep_failures: int = 0
) -> int | None:
    from daemon.history import History

    async with History.open(url) as history:
        doomed = await history.prune_preview(before=before, keep_failures=keep_failures)
        total = sum(count for _, _, count in doomed)
        _print_preview(doomed, total, before)
        if not total or dry_run:
            return None
        if not yes and not await asyncio.to_thread(_confirmed, total):
            typer.echo("nothing deleted")
            return None
        return await history.prune(before=before, keep_failures=keep_failures)


def _print_preview(doomed: list[tuple[str | None, str, int]], total: int, before: datetime):
    if not total:
        typer.echo(f"no finished runs before {_iso(before)} to prune")
        return
    typer.echo(f"{total} run(s) finished before {_iso(before)}:")
    width = max(len(schedule or "(manual runs)") for schedule, _, _ in doomed)
    for schedule, status, count in doomed:
        typer.echo(f"  {schedule or '(manual runs)':<{width}}  {status:<9} {count:>8}")


def _confirmed(total: int) -> bool:
    if not sys.stdin.isatty():
        raise FlowerdError(
            "db prune: not asking on a non-terminal stdin; add --yes to delete, "
            "or --dry-run to only look"
        )
    return typer.confirm(f"delete these {total} run(s)?", default=False)
