"""The web page: schedules with their last 30 outcomes, the runs, one run.

Server-rendered (Jinja2, autoescaped); static/page.js only refreshes the page and sends
the token-guarded POSTs; no CDN, nothing to build. Every history read is History's
reader (a thread for SQLite); the DAG picture is built in a thread and drawn by
graphviz's `dot` in a subprocess, cached per pipeline files.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.errors import FlowerdError, RunNotFound
from daemon.history import STATUSES, TRIGGERS
from daemon.http import livelog, timeline
from daemon.http.cells import RecentRuns
from daemon.http.json_api import parse_run_filters
from daemon.http.listing import Listing
from daemon.http.served import Served
from daemon.tell.runlogs import line_json

HERE = Path(__file__).resolve().parent
CELLS = 30
AUDIT_ROWS = 20  # the newest acts on the schedules page (all: /api/audit)
DOT_TIMEOUT_S = 10.0
LEGEND = (
    "success",
    "failed",
    "timed_out",
    "crashed",
    "cancelled",
    "skipped",
    "missed",
    "running",
    "queued",
)


def routes(daemon: Served, listing: Listing) -> list:
    page = Page(daemon, listing)
    return [
        Route("/", page.schedules),
        Route("/runs", page.runs),
        Route("/runs/{run_id:run_id}", page.run),
        Route("/runs/{run_id:run_id}/dag.svg", page.dag),
        Route("/runs/{run_id:run_id}/log/events", page.live_log),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def _templates() -> Environment:
    from daemon.durations import ago, iso, shown_iso

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    env.filters["ago"] = ago
    env.filters["iso"] = iso  # for machines: datetime attributes
    env.filters["shown"] = lambda moment, zone, timespec="seconds": (  # for people
        "-" if moment is None else shown_iso(
            datetime.fromisoformat(moment) if isinstance(moment, str) else moment, zone, timespec
        )
    )  # fmt: skip
    env.filters["seconds"] = lambda s: (
        "-" if s is None else (f"{s:.3f} s" if s < 10 else f"{s:.1f} s")
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=repr)
    env.globals.update(legend=LEGEND, statuses=STATUSES, triggers=TRIGGERS)
    return env


class Page:
    def __init__(self, daemon: Served, listing: Listing):
        self.daemon = daemon
        self.listing = listing
        self.templates = _templates()
        self.templates.globals["zone_of"] = self._zone_of
        self._dags: dict[tuple, bytes] = {}
        self.recent = RecentRuns(daemon.history, per_schedule=CELLS)
        daemon.runner.events.add(self.recent.on_run_event)

    async def _render(self, name: str, status_code: int = 200, **context) -> HTMLResponse:
        """Rendered in a thread: 30 cells of many schedules is real work, and a slot must
        not wait for it (Jinja templates are safe to render from threads)."""
        settings = self.daemon.settings
        context.update(
            now=datetime.now(UTC),
            http_token_set=bool(settings.http_token or settings.http_tokens),
            zone=ZoneInfo(settings.timezone),
        )
        template = self.templates.get_template(name)
        html = await asyncio.to_thread(template.render, context)
        return HTMLResponse(html, status_code=status_code)

    async def schedules(self, request: Request) -> Response:
        daemon = self.daemon
        schedules = list(daemon.scheduler.schedules.values())
        cells = await self.recent.of([s.id for s in schedules])
        pending = await daemon.history.pending_events()
        rows = [
            {
                "schedule": s,
                "paused": s.id in daemon.paused,
                "next": daemon.scheduler.next_fire(s.id),
                "cells": cells[s.id],  # oldest first, newest at the right
                "pending": pending.get(s.id, 0) if s.event_triggers else None,
            }
            for s in schedules
        ]
        acts = await daemon.history.audit(limit=AUDIT_ROWS)
        return await self._render("schedules.html", rows=rows, acts=acts, refresh_s=10)

    async def runs(self, request: Request) -> Response:
        query = dict(request.query_params)
        older = None
        try:
            filters = parse_run_filters(query)
            records, problem = await self.listing.records(filters), None
            if records and len(records) >= filters["limit"]:  # a full page: more below
                older = "/runs?" + urlencode({**query, "before": records[-1].id})
        except FlowerdError as exc:
            records, problem = [], str(exc)
        return await self._render(
            "runs.html",
            runs=records,
            query=query,
            older=older,
            problem=problem,
            refresh_s=10,
            schedules=sorted(self.daemon.scheduler.schedules),
        )

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            record = await self.daemon.history.get_run(run_id)
        except RunNotFound as exc:
            return await self._render("missing.html", status_code=404, message=str(exc))
        lines = await self.daemon.history.log_lines(run_id)
        return await self._render(
            "run.html",
            run=record,
            logs=[line_json(line) for line in lines],
            last_seq=lines[-1]["seq"] if lines else -1,
            live=record.status in ("queued", "running"),  # its log follows (livelog)
            run_zone=self._zone_of(record.schedule),
            timeline=timeline.bars(record),
            dot=shutil.which("dot") is not None,
            refresh_s=0,
        )

    async def live_log(self, request: Request) -> Response:
        return await livelog.stream(request, self.daemon.history, self._zone_of)

    def _zone_of(self, schedule_id: str | None) -> ZoneInfo:
        """Times for people in the schedule's timezone, else the `timezone` setting."""
        schedule = self.daemon.scheduler.schedules.get(schedule_id or "")
        return ZoneInfo(schedule.timezone if schedule else self.daemon.settings.timezone)

    async def dag(self, request: Request) -> Response:
        """The run's pipeline (with its schedule's modules and config) drawn as SVG."""
        try:
            record = await self.daemon.history.get_run(request.path_params["run_id"])
        except RunNotFound as exc:
            return Response(_note_svg(str(exc)), status_code=404, media_type="image/svg+xml")
        spec = self.daemon.scheduler.schedules.get(record.schedule or "")
        kwargs = spec.run_config_kwargs() if spec and spec.pipeline == record.pipeline else {}
        modules = [record.pipeline, *kwargs.get("additional_modules", [])]
        key = (
            record.pipeline,
            json.dumps(kwargs, sort_keys=True, default=repr),
            self._stamp(modules),
        )
        if key not in self._dags:
            try:
                nodes, edges = await asyncio.to_thread(self.daemon.pm.dag, record.pipeline, kwargs)
                self._dags[key] = await _draw(nodes, edges)
            except (FlowerdError, OSError, TimeoutError, ValueError) as exc:
                return Response(
                    _note_svg(f"cannot draw the DAG: {exc}"), media_type="image/svg+xml"
                )
        return Response(self._dags[key], media_type="image/svg+xml")

    def _stamp(self, modules: list[str]) -> tuple:
        stamps = []
        for name in modules:
            path = self.daemon.pm.pipelines_dir / f"{name}.py"
            stamps.append(path.stat().st_mtime_ns if path.exists() else 0)
        return tuple(stamps)


def to_dot(nodes: list[tuple[str, bool]], edges: list[tuple[str, str]]) -> str:
    lines = [
        "digraph pipeline {",
        '  rankdir=LR; bgcolor="transparent";',
        '  node [fontname="sans-serif", fontsize=11, shape=box, style="rounded,filled", '
        'fillcolor="#eef3fb", color="#5b7db1"];',
    ]
    for name, is_input in nodes:
        style = ' [shape=parallelogram, fillcolor="#fff7e0", color="#b08a2e"]' if is_input else ""
        lines.append(f"  {json.dumps(name)}{style};")
    lines += [f"  {json.dumps(a)} -> {json.dumps(b)};" for a, b in edges]
    return "\n".join(lines + ["}"]) + "\n"


async def _draw(nodes: list, edges: list) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "dot",
        "-Tsvg",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(to_dot(nodes, edges).encode()), DOT_TIMEOUT_S
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ValueError(f"dot exited {proc.returncode}: {err.decode(errors='replace')[:200]}")
    return out


def _note_svg(text: str) -> bytes:
    from html import escape

    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="30">'
        '<text x="4" y="20" font-family="sans-serif" font-size="13">'
        f"{escape(text[:150])}</text></svg>"
    ).encode()
