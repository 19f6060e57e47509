"""`Tracking`: the daemon's sinks and each run's listeners -- a part the runner is handed
(daemon.runner never imports this package; it sees the `Tracker` protocol).

    track = tracking.begin(active)      # on the run's task: its nodes are recorded
    await track.started()               # listeners' run_started, in a thread, bounded
    ... the pipeline runs; node events reach the listeners (daemon.observe.taps) ...
    fields = await track.ended(status, error)   # run_ended in a thread, bounded;
                                        # -> nodes, nodes_omitted, trace_id, links for the row

Fail-open: a listener that raises or is slower than `timeout_s` costs the run at most that
wait; the run's log says what was not reported and `flowerd_tracking_errors_total{sink}`
(`count_error`) moves. Node timings are kept whether or not any sink is configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daemon import logs
from daemon.observe import taps
from daemon.observe.listeners import (
    SKIPPED,
    NodeEnd,
    NodeStart,
    RunEnd,
    RunListener,
    RunStart,
    Sink,
)
from daemon.observe.nodes import RunNodes, events, rows

log = logging.getLogger("daemon.observe")

DEFAULT_TIMEOUT_S = 5.0
TRACKING_THREADS = 32


class NodeFailed(Exception):
    """A node that failed in a worker process, as its listeners here are told: the
    worker's "Type: message" (its exception stays there)."""


class Tracking:
    """The daemon's sinks (made from its settings) and what each run tells them."""

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        count_error: Callable[[str], None] | None = None,
    ):
        self.sinks = tuple(sinks)
        self.timeout_s = timeout_s
        self.count_error = count_error or (lambda sink: None)
        self.hooks = taps.HOOKS  # handed to daemon.pipeline and the worker processes
        # the sinks' waits, off the loop: threads of their own, so that runs ending in a
        # burst neither queue behind each other in asyncio's small default pool nor
        # hold it (a sink that batches, as otel does, then sends a burst in few requests)
        self._threads: ThreadPoolExecutor | None = None

    def in_thread(self, call: Callable[..., Any], *args: Any) -> asyncio.Future:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(TRACKING_THREADS, thread_name_prefix="flowerd-track")
        return asyncio.get_running_loop().run_in_executor(self._threads, call, *args)

    @classmethod
    def from_settings(cls, settings: Any, *, count_error=None) -> Tracking:
        """The sinks the settings configure (none: node timings alone)."""
        from daemon.observe.sinks import configured

        timeout_s = getattr(settings, "tracking_timeout_s", DEFAULT_TIMEOUT_S)
        return cls(configured(settings), timeout_s=timeout_s, count_error=count_error)

    def begin(self, active: Any) -> RunTrack:
        """A run starts (on its own task): from now on its nodes are recorded."""
        run = RunStart(
            run_id=active.run_id,
            schedule=active.schedule,
            pipeline=active.pipeline,
            slot=active.scheduled_at,
            trigger=active.trigger,
            started_at=active.started_at,
            traceparent=getattr(active, "traceparent", None),
            spec=active.spec,
        )
        return RunTrack(self, run, self._listeners(run))

    def _listeners(self, run: RunStart) -> list[tuple[str, RunListener]]:
        opened = []
        for sink in self.sinks:
            try:
                listener = sink.open_run(run)
            except Exception as exc:  # noqa: BLE001 - a sink's own fault: fail open
                self.failed(sink.name, run.run_id, "its run was not opened", exc)
                continue
            if listener is not None:
                opened.append((sink.name, listener))
        return opened

    def failed(self, sink: str, run_id: int, what: str, exc: BaseException | None) -> None:
        self.count_error(sink)
        why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        log.warning("run %d: not reported to %s: %s%s", run_id, sink, what, why)

    async def close(self) -> None:
        """The daemon stops: each sink flushes, in a thread, within `timeout_s`."""
        for sink in self.sinks:
            try:
                await asyncio.wait_for(self.in_thread(sink.close), self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - TimeoutError too: fail open
                self.count_error(sink.name)
                log.warning("%s did not close cleanly: %s: %s", sink.name, type(exc).__name__, exc)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)


class _FanOut:
    """A run's node events to its listeners; one that raises is dropped from the run."""

    def __init__(self, track: RunTrack):
        self._track = track

    def graph_started(self, graph) -> None:
        self._track.each("graph_started", graph)

    def node_started(self, node: NodeStart) -> None:
        self._track.each("node_started", node)

    def node_ended(self, node: NodeEnd) -> None:
        self._track.each("node_ended", node)


class RunTrack:
    """One run's tracking: its nodes (timings) and its listeners."""

    def __init__(self, tracking: Tracking, run: RunStart, listeners: list):
        self._tracking = tracking
        self.run = run
        self.listeners = listeners
        self.nodes = RunNodes(_FanOut(self) if listeners else None)
        self._token = taps.current.set(self.nodes)
        self.trace_id = next((lis.trace_id for _, lis in listeners if lis.trace_id), None)
        self._trace_token = logs.trace_id_var.set(self.trace_id) if self.trace_id else None
        self._describe: Callable[[], dict[str, Any]] | None = None  # a worker's run: its graph
        self._graph: Any = None

    def each(self, method: str, event: Any) -> None:
        for name, listener in list(self.listeners):
            try:
                getattr(listener, method)(event)
            except Exception as exc:  # noqa: BLE001 - fail open: this sink hears no more
                self.listeners.remove((name, listener))
                self._tracking.failed(name, self.run.run_id, f"{method} raised", exc)

    async def started(self) -> None:
        if self.listeners:
            await self._bounded("run_started", self.run)

    def in_worker(self, describe: Callable[[], dict[str, Any]]) -> Callable[[tuple], None]:
        """The relay of a run that a worker process carries out (`isolation = "process"`).

        A listener that drives a Hamilton adapter (the Hamilton UI's tracker) is fed here,
        in the daemon, not in the worker: the worker sends plain node events back anyway
        (timings, OTel), the daemon has the same graph built (`describe`: {graph, inputs},
        asked once a run, only when such a listener listens), and so the tracker keeps one
        home -- its bounded lane, fail-open counting and logging, the run's `links`, and
        its end reported whatever became of the worker (killed at a timeout, died) --
        with no secret (the UI's api_key) in the worker. What the worker's results would
        add (each node's result summary) stays there: results do not cross back."""
        self._describe = describe
        return self.relay

    def relay(self, payload: tuple) -> None:
        """A node event sent back by the worker process running this run."""
        kind, fields = payload
        if kind == "graph":
            self._replay_graph(fields)
        elif kind == "start":
            fields["hamilton"] = self._hook(fields)
            self.nodes.replay_start(NodeStart(**fields))
        else:
            fields["hamilton"] = self._hook(fields) if fields["status"] != SKIPPED else None
            self.nodes.replay_end(NodeEnd(**fields))

    def _replay_graph(self, fields: dict[str, Any]) -> None:
        if self._describe is None or not any(lis.wants_graph for _, lis in self.listeners):
            return
        try:  # a dict lookup for a kept driver (the runner described it for slot inputs)
            described = self._describe()
        except Exception as exc:  # noqa: BLE001 - the run's own failure, if any, is its own
            for name, listener in self.listeners:
                if listener.wants_graph:
                    self._tracking.failed(name, self.run.run_id, "its graph", exc)
            return
        self._graph = described["graph"]
        self.nodes.graph_started({**fields, "overrides": None, **described})

    def _hook(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The hook keywords of a worker's node event, this process's node in them."""
        node_ = self._graph.nodes.get(fields["name"]) if self._graph is not None else None
        if node_ is None:
            return None
        hook = {"run_id": self.nodes.hamilton_run_id, "node_": node_, "kwargs": {},
                "task_id": fields["task_id"]}  # fmt: skip
        if "status" in fields:  # an end: the error as its text (the worker's exception)
            error = fields["error"]
            hook.update(error=NodeFailed(error) if error else None, result=None)
        return hook

    async def ended(self, status: str, error: Any, finished_at) -> dict[str, Any]:
        """The run's end, told to every listener before its row is final; the row's
        tracking fields (`nodes`, `nodes_omitted`, `trace_id`, `links`)."""
        kept, omitted = self.nodes.kept()
        if self._token is not None:
            try:
                taps.current.reset(self._token)
            except ValueError:  # ended in another context than it began (the drain)
                pass
            self._token = None
        if self.listeners:
            end = RunEnd(run_id=self.run.run_id, status=status, finished_at=finished_at,
                         error=error, nodes=events(kept))  # fmt: skip
            await self._bounded("run_ended", end)
        links: dict[str, str] = {}
        for _, listener in self.listeners:
            links.update(listener.links or {})
        return {
            "nodes": rows(kept),
            "nodes_omitted": omitted,
            "trace_id": self.trace_id,
            "links": links or None,
        }

    async def finish(self, status: str, error: Any, finished_at) -> tuple[dict[str, Any], bool]:
        """`ended`, for the runner's terminal row: the fields, and whether the run's task
        was cancelled meanwhile (the row is written first, then the cancel goes on)."""
        try:
            return await self.ended(status, error, finished_at), False
        except asyncio.CancelledError:
            return self.fields(), True

    def fields(self) -> dict[str, Any]:
        """The row's tracking fields as they are now (no listener waited for)."""
        kept, omitted = self.nodes.kept()
        return {"nodes": rows(kept), "nodes_omitted": omitted, "trace_id": self.trace_id,
                "links": None}  # fmt: skip

    async def _bounded(self, method: str, event: Any) -> None:
        """Every listener's `method` in threads at once, all within `timeout_s`."""
        timeout_s = self._tracking.timeout_s
        began = time.monotonic()
        calls = {
            name: self._tracking.in_thread(getattr(listener, method), event)
            for name, listener in self.listeners
            if _overrides(listener, method)  # no thread hop for what a sink ignores
        }
        if not calls:
            return
        done, late = await asyncio.wait(calls.values(), timeout=timeout_s)
        for name, call in calls.items():
            if call in late:
                self._tracking.failed(
                    name, self.run.run_id,
                    f"{method} took longer than tracking_timeout_s ({timeout_s:g} s)", None,
                )  # fmt: skip
                call.add_done_callback(_retrieve)
            elif call.exception() is not None:
                self._tracking.failed(name, self.run.run_id, f"{method} raised", call.exception())
        log.debug("run %d: %s took %.3f s", self.run.run_id, method, time.monotonic() - began)


def _overrides(listener: RunListener, method: str) -> bool:
    return getattr(type(listener), method, None) is not getattr(RunListener, method)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
