"""/healthz, /metrics and /api/...: the same JSON as the CLI's `--json`.

Reads go through History's reader methods (a thread for SQLite), so a slow query never
holds the event loop. Changes (trigger, pause, resume) need `Authorization: Bearer
<http_token>`: 401 without that header, 403 when it is wrong or no token is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from daemon.errors import FlowerdError, RunNotFound, UsageError
from daemon.http.metrics import CONTENT_TYPE
from daemon.shapes import run_detail_json, schedule_json

LAG_LIMIT_S = 1.0  # /healthz: a loop this late fires slots late (the daemon warns too)
RUN_FILTERS = ("schedule", "pipeline", "status", "trigger", "since", "until", "limit")
ACTIONS = ("trigger", "pause", "resume")
MAX_BODY_BYTES = 64 * 1024  # a trigger's inputs; History bounds each stored value anyway


def routes(daemon: Any) -> list[Route]:
    api = Api(daemon)
    return [
        Route("/metrics", api.metrics),
        Route("/healthz", api.healthz),
        Route("/api/status", api.status),
        Route("/api/schedules", api.schedules),
        Route("/api/runs", api.runs),
        Route("/api/runs/{run_id:int}", api.run),
        Route("/api/runs/{run_id:int}/logs", api.logs),
        Route("/api/schedules/{schedule}/{action}", api.act, methods=["POST"]),
    ]


def error(status_code: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers or None)


def answers_errors(handler: Callable[..., Awaitable[Response]]):
    """Our errors as JSON: unknown run -> 404, anything else the caller caused -> 400."""

    async def wrapped(self, request: Request) -> Response:
        try:
            return await handler(self, request)
        except RunNotFound as exc:
            return error(404, str(exc))
        except FlowerdError as exc:
            return error(400, str(exc))

    return wrapped


def parse_run_filters(query: dict[str, str]) -> dict:
    """`/api/runs?...` (and the page's filter form) -> History.list_runs arguments, with
    the CLI's rules: T is ISO-8601 or a duration ago; limit 0 means all."""
    from daemon.durations import parse_instant

    unknown = sorted(set(query) - set(RUN_FILTERS))
    if unknown:
        raise UsageError(
            f"unknown filter(s) {', '.join(unknown)}; filters: {', '.join(RUN_FILTERS)}"
        )
    given = {key: value.strip() for key, value in query.items() if value.strip()}
    filters: dict[str, Any] = {
        k: given.get(k) for k in ("schedule", "pipeline", "status", "trigger")
    }
    for key in ("since", "until"):
        try:
            filters[key] = parse_instant(given[key]) if key in given else None
        except ValueError as exc:
            raise UsageError(f"{key}: {exc}") from None
    limit = given.get("limit", "50")
    if not limit.isdigit():
        raise UsageError(f"limit: {limit!r} is not a whole number 0 (all) or more")
    filters["limit"] = int(limit)
    return filters


class Api:
    def __init__(self, daemon: Any):
        self.daemon = daemon

    async def metrics(self, request: Request) -> Response:
        return Response(await self.daemon.metrics.render_async(), media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        reasons = [
            f"{part}: {state}" for part, state in self.daemon.health().items() if state != "ok"
        ]
        lag_s = self.daemon.loop_lag_s
        if lag_s > LAG_LIMIT_S:
            reasons.append(f"event loop: {lag_s:.2f} s late (limit {LAG_LIMIT_S:g} s)")
        if reasons:
            return PlainTextResponse("\n".join(reasons) + "\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def status(self, request: Request) -> Response:
        return JSONResponse(await self.daemon.status())

    @answers_errors
    async def schedules(self, request: Request) -> Response:
        from daemon.durations import parse_instant

        query = request.query_params
        next_n = query.get("next", "3")
        if not next_n.isdigit():
            raise UsageError(f"next: {next_n!r} is not a whole number 0 or more")
        try:
            after = parse_instant(query["from"]) if query.get("from") else datetime.now(UTC)
        except ValueError as exc:
            raise UsageError(f"from: {exc}") from None
        paused = self.daemon.paused
        # the CLI's order: files by name, then (as loaded) the tables in each file
        found = sorted(self.daemon.scheduler.schedules.values(), key=lambda s: str(s.file))
        why = self.daemon.paused_reasons
        rows = [  # what the daemon fires: loaded, by definition
            schedule_json(s, s.id in paused, after, int(next_n), why.get(s.id), loaded=True)
            for s in found
        ]
        return JSONResponse(rows)

    @answers_errors
    async def runs(self, request: Request) -> Response:
        filters = parse_run_filters(dict(request.query_params))
        records = await self.daemon.history.list_runs(**filters)
        body = await asyncio.to_thread(lambda: json.dumps([r.to_json() for r in records]))
        return Response(body, media_type="application/json")

    @answers_errors
    async def run(self, request: Request) -> Response:
        history, run_id = self.daemon.history, request.path_params["run_id"]
        record = await history.get_run(run_id)
        return JSONResponse(run_detail_json(record, await history.reruns_of(run_id)))

    @answers_errors
    async def logs(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return JSONResponse(await read_logs(self.daemon.history, run_id))  # unknown: 404

    @answers_errors
    async def act(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        schedule, action = request.path_params["schedule"], request.path_params["action"]
        if action not in ACTIONS:
            return error(404, f"no action {action!r}; actions: {', '.join(ACTIONS)}")
        if schedule not in self.daemon.scheduler.schedules:
            return error(404, f"no schedule {schedule!r}")
        ask = {"schedule": schedule}
        if action == "trigger":
            ask["inputs"] = await _trigger_inputs(request)
        answer = await getattr(self.daemon, action)(ask)
        return JSONResponse({"ok": True, "schedule": schedule, **answer})

    def _refused(self, request: Request) -> Response | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error(
                401,
                "this needs the header 'Authorization: Bearer <http_token>'",
                **{"WWW-Authenticate": "Bearer"},
            )
        token = self.daemon.settings.http_token
        if not token:
            return error(403, "changes over HTTP are off: no http_token is set")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return error(403, "wrong token")
        return None


async def _trigger_inputs(request: Request) -> dict:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise UsageError(f"the request body must be at most {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise UsageError(f"the request body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs", {}), dict):
        raise UsageError('the request body must be {"inputs": {"NAME": VALUE, ...}}')
    unknown = sorted(set(doc) - {"inputs"})
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in the request body")
    return doc.get("inputs", {})


async def read_logs(history: Any, run_id: int) -> list:
    """The run's log lines as the contract's JSON (the same shape `runs logs --json`
    prints: daemon.runlogs.line_json)."""
    from daemon.runlogs import line_json

    await history.get_run(run_id)  # RunNotFound: a 404, as for /api/runs/{id}
    return [line_json(line) for line in await history.log_lines(run_id)]
