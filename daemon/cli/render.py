"""Every table and line the CLI prints (JSON shapes come from the records)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from daemon.cli import fit
from daemon.cli.common import STATUS_STYLES
from daemon.durations import ago


def _styled(status: str | None) -> str:
    if status is None:
        return "-"
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def _console():
    return fit.console()


RUNS_COLUMNS = (
    fit.Column("id", justify="right"),
    fit.Column("schedule"),
    fit.Column("pipeline", drop=2),
    fit.Column("trigger", drop=4),
    fit.Column("status"),
    fit.Column("when", drop=6),
    fit.Column("took", drop=3, justify="right"),
    fit.Column("tries", drop=1, justify="right"),
    fit.Column("error", drop=5, flex=True),
)


def _print_runs(records: list, db_url: str) -> None:
    from rich.markup import escape

    if not records:
        typer.echo("no runs")
        return
    now = datetime.now(UTC)
    rows = []
    for record in records:
        error = f"{record.error.type}: {record.error.message}" if record.error else ""
        rows.append(
            [
                str(record.id),
                escape(record.schedule or "-"),
                escape(record.pipeline),
                record.trigger,
                _styled(record.status),
                ago(record.at, now),
                _seconds(record.duration_s),
                str(record.attempts),
                escape(error.splitlines()[0] if error else ""),
            ]
        )
    console = _console()
    console.print(fit.table(list(RUNS_COLUMNS), rows, console.width))


def _print_run(record, zone) -> None:  # noqa: ANN001
    """One run; its times in `zone` (its schedule's, else the `timezone` setting)."""
    from rich.markup import escape

    console = _console()
    doc = record.to_json()
    console.print(f"run {record.id}: {_styled(record.status)}")
    for key in ("schedule", "pipeline", "trigger"):
        console.print(f"  {key:<14} {escape(str(doc[key] if doc[key] is not None else '-'))}")
    for key in ("scheduled_at", "started_at", "finished_at"):
        console.print(f"  {key:<14} {fit.shown_at(getattr(record, key), zone)}")
    console.print(f"  {'duration':<14} {_seconds(record.duration_s)}")
    console.print(f"  {'lateness':<14} {_seconds(record.lateness_s)}")
    console.print(f"  {'attempts':<14} {record.attempts}")
    console.print(f"  {'driver':<14} {'async' if record.async_driver else 'sync'}")
    console.print(f"  {'final_vars':<14} {escape(', '.join(record.final_vars) or '-')}")
    console.print(f"  {'inputs':<14} {escape(json.dumps(record.inputs))}")
    console.print(f"  {'written by':<14} {escape(record.host)} pid {record.pid}")
    result = _result_text(record, doc)
    if result:
        console.print(f"  {'result':<14} {escape(result)}")
    for earlier in doc.get("attempt_errors") or []:
        console.print(
            f"  {'attempt error':<14} {escape(earlier['type'])}: {escape(earlier['message'])}"
        )
    if record.trace_id:
        console.print(f"  {'trace_id':<14} {record.trace_id}")
    for name, url in (record.links or {}).items():
        console.print(f"  {name:<14} {escape(url)}")
    if record.error:
        console.print(f"[red]{escape(record.error.type)}: {escape(record.error.message)}[/red]")
        if record.error.traceback:
            console.print(escape(record.error.traceback.rstrip()))
    _print_nodes(console, record, zone)


def _print_nodes(console, record, zone) -> None:  # noqa: ANN001
    """The run's node timings: a table in the order the nodes started."""
    from rich.markup import escape
    from rich.table import Table

    if not record.nodes:
        return
    table = Table(title=f"nodes ({len(record.nodes)})", title_justify="left", box=None)
    for column in ("node", "started", "duration", "status"):
        table.add_column(column, justify="right" if column == "duration" else "left")
    for node in record.nodes:
        started = node["started_at"]
        at = datetime.fromisoformat(started).astimezone(zone) if started else None
        took = node["duration_s"]
        table.add_row(
            escape(node["name"]),
            at.strftime("%H:%M:%S.%f")[:-3] if at else "-",
            f"{took * 1000:.3f} ms" if took < 1 else _seconds(took),
            _styled(node["status"]),
        )
    console.print(table)
    if record.nodes_omitted:
        console.print(f"  ({record.nodes_omitted} faster node(s) not kept: the slowest 1,000 are)")


def _result_text(record, doc: dict) -> str | None:  # noqa: ANN001
    """The result as JSON (the history stores it so); the clipped repr only as a fallback
    for rows written before results were stored."""
    if doc.get("result") is not None:
        return json.dumps(doc["result"], indent=2).replace("\n", "\n" + " " * 17)
    return record.result_summary


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


# Dropped lowest first on a narrow terminal: the durations are what `stats` is for, so
# they go last (ok and failed are in runs and rate already).
STATS_COLUMNS = (
    fit.Column("name"),
    fit.Column("runs", drop=4, justify="right"),
    fit.Column("ok", drop=1, justify="right"),
    fit.Column("failed", drop=2, justify="right"),
    fit.Column("rate", drop=5, justify="right"),
    fit.Column("p50", drop=8, justify="right"),
    fit.Column("p95", drop=7, justify="right"),
    fit.Column("last"),
    fit.Column("when", drop=3),
)
NEXT_FIRE_DROP = 6
NEXT_FIRE = "%m-%d %H:%M %Z"  # within the year ahead: the year would only take width


def _print_stats(by_schedule: list[dict], by_pipeline: list[dict], zones, default) -> None:  # noqa: ANN001
    """`zones`: schedule id -> its timezone; `default`: the `timezone` setting."""
    if not by_schedule and not by_pipeline:
        typer.echo("no runs")
        return
    console = _console()
    for title, rows, extra in (
        ("per schedule", by_schedule, "next fire"),
        ("per pipeline", by_pipeline, None),
    ):
        if not rows:
            continue
        columns = list(STATS_COLUMNS) + ([fit.Column(extra, drop=NEXT_FIRE_DROP)] if extra else [])
        cells = [_stats_cells(row, extra, zones, default) for row in rows]
        console.print(fit.table(columns, cells, console.width, title=title, title_justify="left"))


def _stats_cells(row: dict, extra: str | None, zones, default) -> list[str]:  # noqa: ANN001
    from rich.markup import escape

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
        ago(last_at),
    ]
    if extra:
        fire = row.get("next_fire")
        zone = fit.zone_of(row["name"], zones, default)
        when = datetime.fromisoformat(fire).astimezone(zone).strftime(NEXT_FIRE) if fire else ""
        cells.append("paused" if row.get("paused") else when)
    return cells
