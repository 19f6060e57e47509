"""Every table and line the CLI prints (JSON shapes come from the records)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from daemon.cli.common import STATUS_STYLES


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
