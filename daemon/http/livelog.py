"""The page's live log: a running run's new lines as server-sent events
(`GET /runs/{id}/log/events`), until the run ends.

Each line is one `message` event (`id:` its seq, so a reconnecting EventSource resumes
after the last line it has, through `Last-Event-ID`); the end is an `end` event with the
run's status, and the stream closes. Bounded per client: the stream reads the history
itself (daemon.tell.follow, off the event loop for SQLite) -- nothing is queued for a
client -- and a client that does not take a chunk within SEND_TIMEOUT_S is dropped, so a
slow reader costs its own connection and never the loop or another client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from daemon.errors import RunNotFound
from daemon.tell.follow import LogHistory, follow

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
POLL_S = 0.25
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class BoundedStream(StreamingResponse):
    """A StreamingResponse whose every send must be taken within SEND_TIMEOUT_S."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded(message: Message) -> None:
            await asyncio.wait_for(send(message), SEND_TIMEOUT_S)

        try:
            await super().__call__(scope, receive, bounded)
        except TimeoutError:
            log.info("live log: dropped a client that read too slowly (%s)", scope.get("client"))


async def events(
    history: LogHistory, run_id: int, zone: ZoneInfo, after_seq: int = -1
) -> AsyncIterator[str]:
    from daemon.durations import shown_iso
    from daemon.tell.runlogs import line_json

    status = None
    async for record, lines in follow(history, run_id, poll_s=POLL_S, after_seq=after_seq):
        status = record.status
        for line in lines:
            shown = f"{shown_iso(line['time'], zone, 'milliseconds')} {line['level']} "
            doc = {**line_json(line), "text": f"{shown}{line['logger']}: {line['message']}"}
            yield f"id: {line['seq']}\ndata: {json.dumps(doc)}\n\n"
    yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"


async def stream(request: Request, history: LogHistory, zone_of) -> Response:
    """The route's handler: 404 for an unknown run, else the stream."""
    run_id = request.path_params["run_id"]
    try:
        record = await history.get_run(run_id)
    except RunNotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    after = request.headers.get("last-event-id") or request.query_params.get("after", "")
    after_seq = int(after) if after.isdigit() and len(after) < 12 else -1
    lines = events(history, run_id, zone_of(record.schedule), after_seq)
    return BoundedStream(lines, media_type="text/event-stream", headers=HEADERS)
