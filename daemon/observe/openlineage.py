"""OpenLineage (`[openlineage]`): a START event when a run starts and a COMPLETE (FAIL for
a run that did not succeed, ABORT for one cancelled) when it ends, through
openlineage-python's HTTP transport (POSTed as JSON to {url}/api/v1/lineage).

The job is the schedule (namespace from the setting, name the schedule's id; the
pipeline's name for a run without a schedule). Each event carries a `parent` run facet
whose job is the schedule and whose run id is a UUID derived from the schedule and its
slot, so every run of one slot (a retry, a rerun) hangs under the same parent. Events are
sent in the seam's threads (`run_started` / `run_ended`), each bounded by
`tracking_timeout_s` and never retried: a receiver that is down, slow or refusing costs a
run at most that wait; its log says which event was not sent, the counter moves.

Needs the `flowerd[observe]` extra (checked with the settings: daemon.observe.sections).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import error_message_run, parent_run
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.uuid import generate_new_uuid

from daemon.observe.listeners import SUCCESS, RunEnd, RunListener, RunStart

PRODUCER = "urn:flowerd"
# the parent run ids: uuid5 of "<schedule>@<slot ISO>" in this namespace
SLOTS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:flowerd:slot")
ENDS = {SUCCESS: RunState.COMPLETE, "cancelled": RunState.ABORT}


def make(settings: Any, section: dict[str, Any]) -> OpenLineageSink:
    timeout_s = getattr(settings, "tracking_timeout_s", 5.0)
    config = HttpConfig(url=section["url"], timeout=timeout_s, retry={"total": 0})
    client = OpenLineageClient(transport=HttpTransport(config))
    return OpenLineageSink(client, section.get("namespace", "flowerd"), section["url"])


def slot_run_id(schedule: str, slot: datetime) -> str:
    """The parent run id of a schedule's slot: the same slot always gives the same UUID."""
    return str(uuid.uuid5(SLOTS, f"{schedule}@{slot.isoformat()}"))


class OpenLineageSink:
    name = "openlineage"

    def __init__(self, client: OpenLineageClient, namespace: str, url: str):
        self.client = client
        self.namespace = namespace
        self.url = url

    def open_run(self, run: RunStart) -> RunListener | None:
        if run.spec is not None and getattr(run.spec, "openlineage", True) is False:
            return None
        return _RunEvents(self, run)

    def close(self) -> None:
        self.client.close(0)


class _RunEvents(RunListener):
    def __init__(self, sink: OpenLineageSink, run: RunStart):
        self.sink = sink
        self.run = run
        self.run_id = str(generate_new_uuid(run.started_at))
        self.job = Job(namespace=sink.namespace, name=run.schedule or run.pipeline)

    def run_started(self, run: RunStart) -> None:
        self._emit(RunState.START, run.started_at, {})

    def run_ended(self, end: RunEnd) -> None:
        state = ENDS.get(end.status, RunState.FAIL)
        facets = {}
        if end.error is not None:
            message = f"{end.error.type}: {end.error.message}"
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=message, programmingLanguage="python", stackTrace=end.error.traceback
            )
        self._emit(state, end.finished_at, facets)

    def _emit(self, state: RunState, at: datetime, facets: dict[str, Any]) -> None:
        facets = {**self._parent(), **facets}
        event = RunEvent(
            eventType=state,
            eventTime=at.isoformat(),
            run=Run(runId=self.run_id, facets=facets),
            job=self.job,
            producer=PRODUCER,
        )
        try:
            self.sink.client.emit(event)
        except Exception as exc:  # noqa: BLE001 - said in the run's log by the seam
            raise RuntimeError(
                f"{state.value} event not sent to {self.sink.url}: {type(exc).__name__}: {exc}"
            ) from None

    def _parent(self) -> dict[str, Any]:
        if self.run.schedule is None:
            return {}
        slot = self.run.slot or self.run.started_at  # a manual run: when it started
        parent = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=slot_run_id(self.run.schedule, slot)),
            job=parent_run.Job(namespace=self.sink.namespace, name=self.run.schedule),
        )
        return {"parent": parent}
