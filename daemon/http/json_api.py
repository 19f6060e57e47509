"""/healthz, /metrics and /api/...: the same JSON as the CLI's `--json`.

Reads go through History's reader methods (a thread for SQLite), so a slow query never
holds the event loop. Acts (trigger, pause, resume, rerun, backfill: operator; reload,
stop: admin) need `Authorization: Bearer <token>` of that role (daemon.http.auth): 401
without that header, 403 when it is wrong, too low, or no token is set. An allowed act is
an audit row before it takes effect (daemon.serve.audit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from daemon.errors import FlowerdError, RunNotFound, UsageError
from daemon.http.auth import ACTION_ROLES, Caller, Tokens
from daemon.http.listing import MAX_ROWS, Listing
from daemon.http.metrics import CONTENT_TYPE
from daemon.http.served import Served
from daemon.http.shapes import run_detail_json, schedule_json

log = logging.getLogger("daemon.http.api")  # its name before the move

LAG_LIMIT_S = 1.0  # /healthz: a loop this late fires slots late (the daemon warns too)
RUN_FILTERS = ("schedule", "pipeline", "status", "trigger", "since", "until", "limit", "before")
SCHEDULE_ACTIONS = ("trigger", "pause", "resume", "backfill")
MAX_BODY_BYTES = 64 * 1024  # a trigger's inputs; History bounds each stored value anyway


class RunIdConvertor(Convertor[int]):
    """`{run_id:run_id}`: at most 19 digits (a 64-bit id). Starlette's `int` matches any
    length and int() of 5,000 digits raises (a 500); a longer id is no route: a 404."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("run_id", RunIdConvertor())


def routes(daemon: Served, listing: Listing, tokens: Tokens) -> list[Route]:
    api = Api(daemon, listing, tokens)
    return [
        Route("/metrics", api.metrics),
        Route("/healthz", api.healthz),
        Route("/api/status", api.status),
        Route("/api/schedules", api.schedules),
        Route("/api/runs", api.runs),
        Route("/api/runs/{run_id:run_id}", api.run),
        Route("/api/runs/{run_id:run_id}/logs", api.logs),
        Route("/api/audit", api.audit),
        Route("/api/schedules/{schedule}/{action}", api.act, methods=["POST"]),
        Route("/api/runs/{run_id:run_id}/rerun", api.rerun, methods=["POST"]),
        Route("/api/reload", api.reload, methods=["POST"]),
        Route("/api/stop", api.stop, methods=["POST"]),
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
        except ClientDisconnect:  # no one to answer: one line, no traceback
            log.info(
                "HTTP: %s %s: the client hung up (or was cut for being slow) before its "
                "request arrived",
                request.method,
                request.url.path,
            )
            return Response(status_code=499)

    return wrapped


def parse_run_filters(query: dict[str, str]) -> dict:
    """`/api/runs?...` (and the page's filter form) -> History.list_runs arguments, with
    the CLI's rules (T is ISO-8601 or a duration ago; a bare date as `until` is that whole
    day) but at most MAX_ROWS rows: a larger or zero `limit` is capped; `before=ID` asks
    for the rows listed after run ID."""
    from daemon.durations import parse_instant, parse_until

    unknown = sorted(set(query) - set(RUN_FILTERS))
    if unknown:
        raise UsageError(
            f"unknown filter(s) {', '.join(unknown)}; filters: {', '.join(RUN_FILTERS)}"
        )
    given = {key: value.strip() for key, value in query.items() if value.strip()}
    filters: dict[str, Any] = {
        k: given.get(k) for k in ("schedule", "pipeline", "status", "trigger")
    }
    for key, parse in (("since", parse_instant), ("until", parse_until)):
        try:  # a bare date as `until` includes that whole day
            filters[key] = parse(given[key]) if key in given else None
        except ValueError as exc:
            raise UsageError(f"{key}: {exc}") from None
    limit = given.get("limit", "50")
    if not _digits(limit):
        raise UsageError(f"limit: {_shown(limit)} is not a whole number 0 (all) or more")
    rows = int(limit) if len(limit) <= 6 else 0
    filters["limit"] = rows if 0 < rows <= MAX_ROWS else MAX_ROWS
    before = given.get("before")
    if before is not None and not (_digits(before) and len(before) <= 19):
        raise UsageError(f"before: {_shown(before)} is not a run id")
    filters["before"] = None if before is None else int(before)
    return filters


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _shown(text: str) -> str:
    """A client's value in a message: repr, cut short."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


class Api:
    def __init__(self, daemon: Served, listing: Listing, tokens: Tokens):
        self.daemon = daemon
        self.listing = listing
        self.tokens = tokens

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
        pending = await self.daemon.history.pending_events()
        rows = [  # what the daemon fires: loaded, by definition
            schedule_json(
                s, s.id in paused, after, int(next_n), why.get(s.id),
                loaded=True, pending=pending.get(s.id, 0),
            )
            for s in found
        ]  # fmt: skip
        return JSONResponse(rows)

    @answers_errors
    async def runs(self, request: Request) -> Response:
        filters = parse_run_filters(dict(request.query_params))
        body, before = await self.listing.json(filters)
        headers = {}
        if before is not None:  # RFC 8288: where the next page is
            after = request.url.include_query_params(before=before)
            headers["Link"] = f'<{after.path}?{after.query}>; rel="next"'
        return Response(body, media_type="application/json", headers=headers)

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
    async def audit(self, request: Request) -> Response:
        from daemon.durations import parse_instant

        since = request.query_params.get("since", "").strip()
        try:
            moment = parse_instant(since) if since else None
        except ValueError as exc:
            raise UsageError(f"since: {exc}") from None
        return JSONResponse(await self.daemon.history.audit(since=moment))

    @answers_errors
    async def act(self, request: Request) -> Response:
        schedule, action = request.path_params["schedule"], request.path_params["action"]
        caller = self.tokens.caller(request, ACTION_ROLES.get(action, "operator"))
        if not isinstance(caller, Caller):
            return caller
        if action not in SCHEDULE_ACTIONS:
            return error(404, f"no action {action!r}; actions: {', '.join(SCHEDULE_ACTIONS)}")
        if schedule not in self.daemon.scheduler.schedules:
            return error(404, f"no schedule {schedule!r}")
        ask = {"schedule": schedule}
        if action == "trigger":
            ask["inputs"] = (await _body(request, {"inputs": dict})).get("inputs", {})
        if action == "backfill":
            body = await _body(request, {"from": str, "to": str, "rerun": bool})
            ask.update(body, **_bounds(self.daemon.scheduler.schedules[schedule], body))
        answer = await self._act(caller, action, ask)
        return JSONResponse({"ok": True, "schedule": schedule, **answer})

    @answers_errors
    async def rerun(self, request: Request) -> Response:
        caller = self.tokens.caller(request, ACTION_ROLES["rerun"])
        if not isinstance(caller, Caller):
            return caller
        run_id = request.path_params["run_id"]
        await self.daemon.history.get_run(run_id)  # unknown: a 404, and no act
        return JSONResponse({"ok": True, **await self._act(caller, "rerun", {"run_id": run_id})})

    @answers_errors
    async def reload(self, request: Request) -> Response:
        return await self._daemon_act(request, "reload")

    @answers_errors
    async def stop(self, request: Request) -> Response:
        return await self._daemon_act(request, "stop")

    async def _daemon_act(self, request: Request, action: str) -> Response:
        caller = self.tokens.caller(request, ACTION_ROLES[action])
        if not isinstance(caller, Caller):
            return caller
        return JSONResponse({"ok": True, **await self._act(caller, action, {})})

    async def _act(self, caller: Caller, action: str, ask: dict) -> dict:
        audit = self.daemon.audit
        return await audit.from_http(action, ask, actor=caller.name, client=caller.client)


def _bounds(schedule: Any, body: dict) -> dict:
    """A backfill's `from` / `to` as the CLI reads them: ISO-8601 (a date, or a time without
    offset, in the schedule's timezone; a bare date as `to` includes that day) or a
    duration ago."""
    from daemon.runner.backfill import parse_bound

    now = datetime.now(UTC)
    bounds = {}
    for key in ("from", "to"):
        if key not in body:
            raise UsageError('a backfill needs {"from": T, "to": T} in the request body')
        moment = parse_bound(key, body[key], schedule.zone, now, last=key == "to")
        bounds[key] = moment.isoformat()
    return bounds


async def _body(request: Request, keys: dict[str, type]) -> dict:
    """An act's JSON body (may be empty): an object of `keys`, each of its type."""
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
    except RecursionError:  # e.g. 30,000 nested lists
        raise UsageError("the request body is nested too deeply") from None
    shape = ", ".join(f'"{key}": {kind.__name__}' for key, kind in keys.items())
    if not isinstance(doc, dict):
        raise UsageError(f"the request body must be a JSON object {{{shape}}}")
    unknown = sorted(set(doc) - set(keys))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in the request body")
    for key, kind in keys.items():
        if key in doc and not isinstance(doc[key], kind):
            raise UsageError(f"{key!r} in the request body must be a {kind.__name__}: {{{shape}}}")
    return doc


async def read_logs(history: Any, run_id: int) -> list:
    """The run's log lines as the contract's JSON (the same shape `runs logs --json`
    prints: daemon.tell.runlogs.line_json)."""
    from daemon.tell.runlogs import line_json

    await history.get_run(run_id)  # RunNotFound: a 404, as for /api/runs/{id}
    return [line_json(line) for line in await history.log_lines(run_id)]
