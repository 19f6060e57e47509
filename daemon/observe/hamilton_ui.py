"""The Hamilton UI (`[hamilton_ui]`): each run a DAG run in the configured project, tagged
`flowerd_schedule`, `flowerd_slot`, `flowerd_trigger`, `flowerd_run_id`, with its nodes;
the run's URL in the UI goes into the run's `links` (`hamilton_ui`).

apache-hamilton-sdk's `HamiltonTracker` makes the reports (the DAG template, the run, each
node's status and result summary), one tracker per run. It is fed the run's Hamilton hooks
(daemon.observe.listeners) instead of sitting in the driver, because as a driver adapter
it would make blocking calls inside the run: its constructor checks the user and the
project, its graph hooks register the template and the run, all without a timeout, and
its client starts two threads and an atexit hook per instance (the second stop() raises).
Here every request goes through one thread of the sink's (the lane), in the run's order,
with a client of flowerd's (`_Client`) whose requests are bounded by
`tracking_timeout_s` and which sends a run's node updates in one request at its end.
`run_started` and the node hooks only queue (the run never waits for the UI to start);
`run_ended` waits for the last report, bounded, after the run has let go of its slot: a
UI that is down, slow or refusing never holds a run up, its log says what was not
reported, `flowerd_tracking_errors_total{sink="hamilton_ui"}` moves. A UI that did not
answer is left alone for RETRY_AFTER_S (runs meanwhile are said not reported at once),
so its timeouts never pile up in the lane. The SDK's own log lines (where the run can be
found, a missing git repository) are kept out of the daemon's output: flowerd says what
matters in its words.

Runs executed in a worker process (`isolation = "process"`) are reported the same way,
from the daemon: the worker sends its node events back (as it does for the timings) and
the daemon's own copy of the graph stands in for the worker's (tracking.RunTrack.in_worker
says why the tracker is not in the worker). Their nodes have no result summary (results
stay in the worker).

A run's end that could not be sent (the UI down or slow then, or the run's reports cut
short) would leave it RUNNING in the UI for good: the end -- the nodes' updates still
held and the terminal status -- is sent again in the background, a few times over some
minutes, for at most a thousand runs at once (daemon.observe.late_ends).

Needs the `flowerd[observe]` extra.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlencode

import requests
from hamilton_sdk.adapters import HamiltonTracker
from hamilton_sdk.api.clients import HamiltonClient, create_batch
from hamilton_sdk.tracking.utils import make_json_safe

from daemon.observe.late_ends import LateEnds
from daemon.observe.listeners import (
    SUCCESS,
    GraphStart,
    NodeEnd,
    NodeStart,
    RunEnd,
    RunListener,
    RunStart,
)
from daemon.revealed import any_revealed, masked, reveal

log = logging.getLogger("daemon.observe")
logging.getLogger("hamilton_sdk").setLevel(logging.ERROR)  # its "results at ..." lines

WAIT_SHARE = 0.9  # of tracking_timeout_s: a run waits that long for the UI, then goes on
RETRY_AFTER_S = 10.0  # a UI that did not answer is not asked again for this long
VERIFIED_FOR_S = 60.0  # the user and project, once checked, are not checked again for this
_PRE_NODE = ("run_id", "node_", "kwargs", "task_id")
_POST_NODE = ("run_id", "node_", "kwargs", "success", "error", "result", "task_id")


class NotReported(Exception):
    """What of a run the Hamilton UI did not get, and why."""


def make(settings: Any, section: dict[str, Any]) -> HamiltonUISink:
    api_key = section.get("api_key")
    return HamiltonUISink(
        url=section["url"].rstrip("/"),
        project_id=section["project_id"],
        username=section["username"],
        api_key=reveal(api_key, where="[hamilton_ui] api_key") if api_key is not None else None,
        timeout_s=getattr(settings, "tracking_timeout_s", 5.0),
    )


class HamiltonUISink:
    name = "hamilton_ui"

    def __init__(
        self, *, url: str, project_id: int, username: str, api_key: str | None, timeout_s: float
    ):
        self.url = url
        self.api = f"{url}/api/v1"
        self.project_id = project_id
        self.username = username
        self.headers = {"x-api-user": username, **({"x-api-key": api_key} if api_key else {})}
        self.timeout_s = timeout_s
        self.session = requests.Session()  # used on the lane only
        self.lane = ThreadPoolExecutor(1, thread_name_prefix="flowerd-hamilton-ui")
        self.verified_until = 0.0  # monotonic: the user and project were found until then
        self.down_until = 0.0  # monotonic: the UI did not answer; not asked again until then
        self.down_reason = ""
        self.templates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # runs whose end was not taken, sent again: first after twice the wait on the UI
        self.ends = LateEnds(self, first_s=2 * timeout_s)

    def open_run(self, run: RunStart) -> RunListener | None:
        spec = run.spec
        if spec is not None and getattr(spec, "hamilton_ui", True) is False:
            return None
        return _RunReport(self, run)

    def down(self) -> bool:
        """Whether the UI failed to answer a moment ago: runs meanwhile are not sent
        (their requests would only queue behind its timeouts)."""
        return time.monotonic() < self.down_until

    def failed(self, exc: BaseException) -> str:
        """Why a request failed; a UI that cannot be reached is left alone for a while."""
        reason = _reason(exc)
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            self.down_until = time.monotonic() + RETRY_AFTER_S
            when = time.strftime("%H:%M:%S")
            self.down_reason = (
                f"the Hamilton UI at {self.url} did not answer at {when} ({reason}); "
                f"runs are not sent to it for {RETRY_AFTER_S:g} s"
            )
        return f"the Hamilton UI at {self.url}: {reason}"

    def run_url(self, dag_run_id: int) -> str:
        return f"{self.url}/dashboard/project/{self.project_id}/runs/{dag_run_id}"

    def close(self) -> None:
        self.ends.stop()
        self.lane.shutdown(wait=True, cancel_futures=False)
        self.session.close()


class _RunReport(RunListener):
    """One run's reports. Everything but the waits runs on the sink's lane, in order."""

    wants_graph = True  # a worker's run too (tracking.RunTrack.in_worker)

    def __init__(self, sink: HamiltonUISink, run: RunStart):
        self.sink = sink
        self.run = run
        self.client = _Client(sink, run)
        self.tracker: HamiltonTracker | None = None
        self.graph: Any = None
        self.hamilton_run_id: str | None = None
        self.problem: str | None = None  # why the rest of the run is not reported
        self.told = False  # the problem was raised to the seam (said and counted once)
        self.dag_run_id: int | None = None  # the run in the UI, once registered
        self.ended = False  # its end was taken by the UI

    # -- called by the seam ------------------------------------------------------------
    def run_started(self, run: RunStart) -> None:
        self.sink.lane.submit(self._open)  # not waited for: the run starts now

    def graph_started(self, graph: GraphStart) -> None:
        self._queue(self._graph, graph.hamilton)

    def node_started(self, node: NodeStart) -> None:
        if node.hamilton is not None:
            self._queue(self._node, "pre_node_execute", _PRE_NODE, node.started_at, node.hamilton)

    def node_ended(self, node: NodeEnd) -> None:
        if node.hamilton is not None:
            end = (node.started_at or 0) + node.duration_s
            hamilton = {**node.hamilton, "success": node.status == SUCCESS}  # not in all hooks
            self._queue(self._node, "post_node_execute", _POST_NODE, end, hamilton)

    def run_ended(self, end: RunEnd) -> None:
        self._wait(self.sink.lane.submit(self._ending, end), "the run's end and its nodes")
        if self.problem and not self.told:
            self.told = True
            raise NotReported(self.problem + self._later())

    def _later(self) -> str:
        return "; its end is sent later" if self.dag_run_id and not self.ended else ""

    # -- on the lane -------------------------------------------------------------------
    def _queue(self, call, *args) -> Future:
        return self.sink.lane.submit(self._guarded, call, *args)

    def _guarded(self, call, *args) -> None:
        if self.tracker is None or self.problem:
            return
        if self.sink.down():
            self.problem = f"{_what(call)}: {self.sink.down_reason}"
            return
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - fail open: the run goes on unreported
            self.problem = f"{_what(call)} failed: {self.sink.failed(exc)}"
            self.tracker = None

    def _ending(self, end: RunEnd) -> None:
        """The run's end, or (not taken: the UI down, slow, or the run's reports cut
        short) held to be sent again, so that the UI does not show it RUNNING for good."""
        self._guarded(self._end, end)
        if self.dag_run_id is not None and not self.ended:
            self.client.at = end.finished_at
            status = "SUCCESS" if end.status == SUCCESS else "FAILURE"
            self.sink.ends.add(self.dag_run_id, self.client, status, self.run.run_id)

    def _open(self) -> None:
        if self.sink.down():
            self.problem = f"the run: {self.sink.down_reason}"
            return
        try:
            self.tracker = HamiltonTracker(
                project_id=self.sink.project_id,
                username=self.sink.username,
                dag_name=self.run.pipeline,
                tags=_tags(self.run),
                client_factory=lambda *_, **__: self.client,
                hamilton_api_url=self.sink.url,
                hamilton_ui_url=self.sink.url,
            )
        except Exception as exc:  # noqa: BLE001 - said at the run's end
            self.problem = f"the run: {self.sink.failed(exc)}"

    def _graph(self, hamilton: dict[str, Any] | None) -> None:
        if hamilton is None:
            return
        graph = hamilton["graph"]
        self.graph = graph
        template = self.sink.templates.get(graph)
        if template is None:
            self.tracker.post_graph_construct(graph, _modules(graph), graph.config)
            self.sink.templates[graph] = self.tracker.dag_template_id_cache[id(graph)]
        else:
            self.tracker.dag_template_id_cache[id(graph)] = template
        self.hamilton_run_id = hamilton["run_id"]
        keys = ("run_id", "graph", "final_vars", "overrides")
        self.tracker.pre_graph_execute(
            **{key: hamilton.get(key) for key in keys}, inputs=_shown(hamilton.get("inputs"))
        )
        self.dag_run_id = self.tracker.dw_run_ids[self.hamilton_run_id]
        self.links = {"hamilton_ui": self.sink.run_url(self.dag_run_id)}

    def _node(self, hook: str, keys: tuple[str, ...], at: float, hamilton: dict) -> None:
        if self.hamilton_run_id is None:
            return
        self.client.at = dt.datetime.fromtimestamp(at, dt.UTC)
        getattr(self.tracker, hook)(**{key: hamilton.get(key) for key in keys})

    def _end(self, end: RunEnd) -> None:
        if self.hamilton_run_id is None:
            return
        self.client.at = end.finished_at
        self.tracker.post_graph_execute(
            run_id=self.hamilton_run_id,
            graph=self.graph,
            success=end.status == SUCCESS,
            error=None,
            results=None,
        )
        self.ended = True

    def _wait(self, future: Future, what: str) -> None:
        try:  # a little inside the seam's own bound, so that this says why
            future.result(timeout=self.sink.timeout_s * WAIT_SHARE)
        except FutureTimeout:
            self.told = True
            self.problem = self.problem or "timed out"  # the rest of it is dropped
            raise NotReported(
                f"{what}: the Hamilton UI at {self.sink.url} did not answer within "
                f"tracking_timeout_s ({self.sink.timeout_s:g} s)"
                f"{'; its end is sent later' if self.dag_run_id else ''}"
            ) from None


class _Client(HamiltonClient):
    """The tracker's client: apache-hamilton-sdk's requests with a timeout, no threads or
    atexit hooks, the times flowerd saw, and a run's node updates sent at its end."""

    def __init__(self, sink: HamiltonUISink, run: RunStart):
        self.sink = sink
        self.started_at = run.started_at
        self.at: dt.datetime | None = None  # when the hook being fed happened
        self.updates: list[dict] = []
        self.run_id: int | None = None  # flowerd's, for the lines of an end sent late

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        sink = self.sink
        response = sink.session.request(
            method, f"{sink.api}{path}", headers=sink.headers, timeout=sink.timeout_s, **kwargs
        )
        if response.status_code in (401, 403):
            raise NotReported(f"user {sink.username!r} is refused ({response.status_code})")
        response.raise_for_status()
        return response.json() if response.content else None

    def validate_auth(self) -> None:
        if time.monotonic() < self.sink.verified_until:
            return
        self._call("GET", "/phone_home")

    def project_exists(self, project_id: int) -> bool:
        if time.monotonic() < self.sink.verified_until:
            return True
        try:
            self._call("GET", f"/projects/{project_id}")
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                raise NotReported(
                    f"project {project_id} does not exist (create it in the UI first)"
                ) from None
            raise
        self.sink.verified_until = time.monotonic() + VERIFIED_FOR_S
        return True

    def register_dag_template_if_not_exists(
        self, project_id, dag_hash, code_hash, nodes, code_artifacts, name, config, tags,
        code, vcs_info,
    ) -> int:  # fmt: skip
        query = urlencode(
            {"project_id": project_id, "dag_hash": dag_hash, "code_hash": code_hash,
             "dag_name": name}
        )  # fmt: skip
        found = self._call("GET", f"/dag_templates/exists/?{query}")
        if found is not None:
            return found["id"]
        body = {
            "name": name,
            "template_type": "HAMILTON",
            "config": make_json_safe(config),
            "dag_hash": dag_hash,
            "tags": make_json_safe(tags),
            "nodes": nodes,
            "code_artifacts": code_artifacts,
            "code_log": {"files": code},
            "code_hash": code_hash,
            "code_version_info_type": "git",
            "code_version_info": {
                "git_hash": vcs_info.commit_hash,
                "git_repo": vcs_info.repository,
                "git_branch": vcs_info.branch,
            },
            "code_version_info_schema": 1,
        }
        return self._call("POST", f"/dag_templates?project_id={project_id}", json=body)["id"]

    def create_and_start_dag_run(self, dag_template_id, tags, inputs, outputs) -> int:
        body = {
            "run_start_time": self.started_at,
            "tags": tags,
            "inputs": make_json_safe(inputs or {}),
            "outputs": outputs,
            "run_status": "RUNNING",
        }
        path = f"/dag_runs?dag_template_id={dag_template_id}"
        return self._call("POST", path, json=make_json_safe(body))["id"]

    def update_tasks(self, dag_run_id, attributes, task_updates, in_samples=None) -> None:
        for update in task_updates:
            if update is not None and self.at is not None:
                key = "start_time" if update.get("end_time") is None else "end_time"
                update[key] = self.at
        self.updates.append(
            {"dag_run_id": dag_run_id, "attributes": attributes, "task_updates": task_updates}
        )

    def log_dag_run_end(self, dag_run_id: int, status: str) -> None:
        attributes, updates = create_batch(self.updates, dag_run_id)
        if updates:
            self._bulk(dag_run_id, attributes, updates)
        self.updates = []  # taken: an end sent again sends only its status
        self._end(dag_run_id, status)

    def end_again(self, dag_run_id: int, status: str) -> None:
        """The end once more (daemon.observe.late_ends), after a try that may have been
        taken in part: the nodes' updates are taken again as they are (the UI updates a
        node's row), their attributes (result summaries, errors) only once (it refuses
        a second, 500): those are sent apart, and a refusal let go."""
        attributes, updates = create_batch(self.updates, dag_run_id)
        if updates:
            self._bulk(dag_run_id, [], updates)
            if attributes:
                with contextlib.suppress(requests.HTTPError):
                    self._bulk(dag_run_id, attributes, [])
        self.updates = []
        self._end(dag_run_id, status)

    def _bulk(self, dag_run_id: int, attributes: list, updates: list) -> None:
        body = {"attributes": attributes, "task_updates": updates}
        self._call("PUT", f"/dag_runs_bulk?dag_run_id={dag_run_id}", json=make_json_safe(body))

    def _end(self, dag_run_id: int, status: str) -> None:
        body = {"run_status": status, "run_end_time": self.at or dt.datetime.now(dt.UTC)}
        self._call("PUT", f"/dag_runs/{dag_run_id}/", json=make_json_safe(body))


def _tags(run: RunStart) -> dict[str, str]:
    return {
        "flowerd_schedule": run.schedule or "",
        "flowerd_slot": run.slot.isoformat() if run.slot is not None else "",
        "flowerd_trigger": run.trigger,
        "flowerd_run_id": str(run.run_id),
    }


def _shown(inputs: dict[str, Any] | None) -> dict[str, Any]:
    """The run's inputs as the UI shows them: no secret read for them (daemon.revealed)."""
    if not inputs or not any_revealed():
        return inputs or {}
    return {key: masked(value) if isinstance(value, str) else value
            for key, value in inputs.items()}  # fmt: skip


def _modules(graph: Any) -> list[Any]:
    """The modules the graph's functions come from (the tracker hashes and shows them)."""
    names = {
        fn.__module__
        for node in graph.nodes.values()
        for fn in (getattr(node, "originating_functions", None) or ())
    }
    return [sys.modules[name] for name in sorted(names) if name in sys.modules]


def _what(call: Any) -> str:
    return {
        "_graph": "registering the run",
        "_node": "a node's report",
        "_end": "sending the run's end and its nodes",
    }.get(getattr(call, "__name__", ""), "a report")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NotReported):
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (is it running?)"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"
