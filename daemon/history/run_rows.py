"""What the History writes about a run, as ops for the one writer: its claim (the slot
key makes a slot run once), its `running` mark, its terminal row, and the slots that did
not run. Row values are redacted and bounded here (daemon.history.redact) before they are queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from daemon import revealed
from daemon.history.ops import Ops, Origin
from daemon.history.redact import bounded, json_safe, redact
from daemon.history.schema import (
    SUMMARY_MAX_CHARS,
    TERMINAL,
    RunError,
    aware,
    check_status,
    check_trigger,
    clip,
    error_columns,
    utcnow,
    without_none,
)
from daemon.history.writer import await_write

log = logging.getLogger("daemon.history.writes")  # its name before the move


class RunRows:
    """The write half of a run's row (Reader is the read half): every write is an op
    for the one writer, through `Ops.submit`, stamped with its `Origin`."""

    def __init__(self, ops: Ops, origin: Origin, max_row_bytes: int):
        self._submit = ops.submit
        self._origin = origin
        self.max_row_bytes = max_row_bytes

    async def claim(
        self,
        *,
        pipeline: str,
        trigger: str,
        schedule: str | None = None,
        scheduled_at: datetime | None = None,
        async_driver: bool,
        final_vars: list[str] | tuple[str, ...] = (),
        inputs: Mapping | None = None,
        status: str = "queued",
        started_at: datetime | None = None,
        rerun_of: int | None = None,
    ) -> int | None:
        """Insert a run's row; its id, or None if the slot (schedule, scheduled_at) is
        already in the history (slot triggers only: a `rerun` row repeats a slot and
        names the run it repeats in `rerun_of`). Durable when this returns."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=scheduled_at,
            async_driver=async_driver,
            status=check_status(status),
            started_at=started_at,
            final_vars=final_vars,
            inputs=inputs,
        )
        values["rerun_of"] = rerun_of
        return await await_write(self._submit("insert", without_none(values)))

    async def record_event(
        self,
        *,
        schedule: str,
        pipeline: str,
        trigger: str,
        received_at: datetime,
        event_key: str,
        event: dict,
        status: str = "queued",
        async_driver: bool,
        final_vars: list[str] | tuple[str, ...] = (),
        inputs: Mapping | None = None,
        payload: dict | None = None,
        traceparent: str | None = None,
        error: RunError | None = None,
    ) -> tuple[int, bool]:
        """An event's row (daemon.incoming.journal): `queued` (or a terminal `skipped`),
        its slot key (schedule, event_key), `scheduled_at` when it was seen. Returns
        (run id, fresh): not fresh when the event already had a row (its id). Durable
        when this returns."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=received_at,
            async_driver=async_driver,
            status=check_status(status),
            started_at=None,
            final_vars=final_vars,
            inputs=inputs,
        )
        values.update(event_key=event_key, event=event, payload=payload, traceparent=traceparent)
        if status in TERMINAL:
            values.update(finished_at=utcnow(), **error_columns(error))
        return await await_write(self._submit("insert", without_none(values)))

    def slot_write(
        self,
        *,
        schedule: str,
        pipeline: str,
        scheduled_at: datetime,
        status: str,
        trigger: str = "schedule",
        async_driver: bool = True,
        error: RunError | None = None,
    ):
        """Queue a slot that did not run as one terminal row; returns the write to await
        (its result: the row id, or None if the slot is already in the history). Catch-up
        queues many before awaiting any, so they share a commit."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=scheduled_at,
            async_driver=async_driver,
            status=check_status(status, TERMINAL),
            started_at=None,
        )
        values.update(finished_at=utcnow(), **error_columns(error))
        return await_write(self._submit("insert", without_none(values)))

    async def record_slot(self, **slot) -> int | None:
        """A slot that did not run (missed, skipped, cancelled ...), as one terminal row;
        None if the slot is already in the history."""
        return await self.slot_write(**slot)

    def _row(
        self,
        *,
        pipeline,
        trigger,
        schedule,
        scheduled_at,
        async_driver,
        status,
        started_at,
        final_vars=(),
        inputs=None,
    ):
        check_trigger(trigger)
        aware(scheduled_at, "scheduled_at")
        aware(started_at, "started_at")
        return {
            "schedule": schedule,
            "pipeline": pipeline,
            "trigger": trigger,
            "status": status,
            "run_at": scheduled_at or started_at or utcnow(),
            "scheduled_at": scheduled_at,
            "started_at": started_at,
            "attempts": 0,
            "async_driver": bool(async_driver),
            "final_vars": [str(v) for v in final_vars],
            "inputs": bounded(redact(inputs or {}), self.max_row_bytes) if inputs else {},
            "host": self._origin.host,
            "pid": self._origin.pid,
            "instance_id": self._origin.instance_id,
        }

    def mark_running_nowait(self, run_id: int, *, started_at: datetime) -> None:
        """Queued, not awaited: a pipeline starts once its claim is durable, without
        waiting for another commit (finish writes started_at too)."""
        self._running_op(run_id, started_at).future.add_done_callback(_log_failure)

    async def mark_running(self, run_id: int, *, started_at: datetime) -> None:
        await await_write(self._running_op(run_id, started_at))

    def _running_op(self, run_id: int, started_at: datetime):
        aware(started_at, "started_at")
        values = {"b_id": run_id, "b_status": "running", "b_started_at": started_at}
        return self._submit("running", values)

    async def finish(
        self,
        run_id: int,
        *,
        status: str,
        finished_at: datetime,
        attempts: int,
        started_at: datetime | None = None,
        error: RunError | None = None,
        result_summary: str | None = None,
        result: Any = None,
        attempt_errors: list[dict] | None = None,
        nodes: list[dict] | None = None,
        nodes_omitted: int = 0,
        trace_id: str | None = None,
        links: dict[str, str] | None = None,
    ) -> None:
        """The terminal row. Queued before the first await, so it lands even when the
        calling task is cancelled (the CancelledError is re-raised after the commit)."""
        check_status(status, TERMINAL)
        aware(finished_at, "finished_at")
        if revealed.any_revealed():  # a secret a run read never lands in its row
            result_summary, error = revealed.masked(result_summary), _masked_error(error)
            result, attempt_errors = _masked_json(json_safe(result)), _masked_json(attempt_errors)
        values = {
            "b_id": run_id,
            "b_status": status,
            "b_started_at": started_at,
            "b_finished_at": finished_at,
            "b_duration_s": (finished_at - started_at).total_seconds() if started_at else None,
            "b_attempts": attempts,
            "b_result_summary": clip(result_summary, SUMMARY_MAX_CHARS),
            "b_result": self._stored_result(result),
            "b_attempt_errors": list(attempt_errors) if attempt_errors else None,
            "b_nodes": list(nodes) if nodes else None,
            "b_nodes_omitted": nodes_omitted or None,
            "b_trace_id": trace_id,
            "b_links": dict(links) if links else None,
        }
        values.update({f"b_{k}": v for k, v in error_columns(error).items()})
        await await_write(self._submit("finish", without_none(values)))

    def _stored_result(self, result: Any) -> dict | None:
        if not isinstance(result, Mapping):
            return None
        return bounded(json_safe(result), self.max_row_bytes)


def _masked_error(error: RunError | None) -> RunError | None:
    if error is None:
        return None
    traceback = revealed.masked(error.traceback) if error.traceback else error.traceback
    return dataclasses.replace(error, message=revealed.masked(error.message), traceback=traceback)


def _masked_json(value: Any) -> Any:
    if value is None:
        return None
    return json.loads(revealed.masked(json.dumps(value)))


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a run's 'running' mark could not be written: %s", future.exception())
