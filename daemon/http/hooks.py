"""`POST /hooks/{schedule}`: a signed delivery starts a run of an `on_webhook` schedule.

The answers are DESIGN.md's ("Events"), checked in this order: an unknown schedule (or
one that takes no webhooks) 404; no signature header 401; a body over 1 MiB 413 (read
bounded: the rest is never buffered); a wrong signature 403; a body that is not a JSON
object 400. An accepted delivery is recorded in the journal (daemon.incoming.journal)
and answered 202 `{"run_id", "event"}` once its row is durable -- before the run ends;
the same `Idempotency-Key` / `X-GitHub-Delivery` again answers 200 with the first run's
id and starts nothing.

Webhooks authenticate by their signature, not by the API's bearer tokens: a sender such as
GitHub signs, it cannot hold a token. The handler does no blocking work: the body is read
in chunks, a file secret in a thread, and the journal writes through the history's writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.errors import FlowerdError
from daemon.incoming.webhooks import (
    MAX_BODY_BYTES,
    BadDelivery,
    WebhookSecrets,
    open_delivery,
    signature_header,
)
from daemon.schedule import Schedule
from daemon.secrets import SecretError

log = logging.getLogger(__name__)


class _Recorded(Protocol):
    run_id: int
    event: Any
    fresh: bool


class _Journal(Protocol):
    async def record(
        self,
        schedule_id: str,
        kind: str,
        key: str,
        *,
        path: str | None = None,
        payload: Any = None,
        received_at: datetime | None = None,
        traceparent: str | None = None,
    ) -> _Recorded: ...


class _Scheduler(Protocol):
    @property
    def schedules(self) -> Mapping[str, Schedule]: ...


class HookDaemon(Protocol):
    """What the webhook route uses of the daemon."""

    scheduler: _Scheduler
    journal: _Journal


def routes(daemon: HookDaemon) -> list[Route]:
    return [Route("/hooks/{schedule}", Hooks(daemon).receive, methods=["POST"])]


class Hooks:
    def __init__(self, daemon: HookDaemon):
        self.daemon = daemon
        self.secrets = WebhookSecrets()

    async def receive(self, request: Request) -> Response:
        received_at = datetime.now(UTC)
        name = request.path_params["schedule"]
        schedule = self.daemon.scheduler.schedules.get(name)
        if schedule is None or schedule.on_webhook is None:
            return _error(404, f"no webhook schedule {name!r}")
        given = signature_header(request.headers)
        if given is None:
            return _error(
                401, "the body must be signed: header 'X-Flowerd-Signature: sha256=<hex>'"
            )
        try:
            body = await _body(request)
            secret = await self.secrets.of(schedule)
            event = await open_delivery(secret, given, request.headers, body)
        except BadDelivery as exc:
            return _error(exc.status, str(exc))
        except SecretError as exc:  # the variable or file went away since start-up
            log.error("webhook %s refused: %s", name, exc)
            return _error(503, f"the secret of schedule {name!r} cannot be read (see the log)")
        except ClientDisconnect:
            log.info("webhook %s: the client hung up before its body arrived", name)
            return Response(status_code=499)
        return await self._record(schedule, event, received_at)

    async def _record(self, schedule: Schedule, event: Any, received_at: datetime) -> Response:
        recording = self.daemon.journal.record(
            schedule.id,
            "webhook",
            event.key,
            payload=event.payload,
            received_at=received_at,
            traceparent=event.traceparent,
        )
        try:  # shielded: a sender hanging up mid-write leaves a whole event, started
            recorded = await asyncio.shield(recording)
        except FlowerdError as exc:  # the history cannot take the row: not accepted
            log.error("webhook %s (key %s) not recorded: %s", schedule.id, event.key, exc)
            return JSONResponse(
                {"error": f"the event could not be recorded, send it again: {exc}"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        body = {"run_id": recorded.run_id, "event": _event_json(recorded.event)}
        return JSONResponse(body, status_code=202 if recorded.fresh else 200)


async def _body(request: Request) -> bytes:
    """The raw body, at most MAX_BODY_BYTES (413 as soon as it is known to be more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadDelivery(413, f"the body must be at most {MAX_BODY_BYTES} bytes (1 MiB)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadDelivery(413, f"the body must be at most {MAX_BODY_BYTES} bytes (1 MiB)")
        chunks.append(chunk)
    return b"".join(chunks)


def _event_json(event: Any) -> Any:
    """The journal's event as the contract's JSON object (a mapping, or a record with
    `as_json()`)."""
    as_json = getattr(event, "as_json", None)
    return as_json() if callable(as_json) else event


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)
