"""What a run tells its listeners -- the seam every sink plugs into.

A sink (`Sink`) is made once per daemon from its settings section; for each run it may
give a `RunListener` (`open_run`), which then hears, in this order:

    run_started(RunStart)      once, before the pipeline runs (in a thread: may block, bounded)
    graph_started(GraphStart)  Hamilton's pre_graph_execute, when the run's driver runs here
    node_started(NodeStart)    a node is about to run
    node_ended(NodeEnd)        it ran (status success | failed | skipped)
    run_ended(RunEnd)          once, before the run's row is final (in a thread, bounded by
                               `tracking_timeout_s`: flush here)

Node events come on whatever thread runs the node (the event loop under the async
driver): a listener's node methods must be quick and never block. With `isolation =
"process"` they are sent back from the worker as they happen and replayed here on the
event loop, so `hamilton` (the raw hook keyword arguments: `node_`, `kwargs`, `run_id`,
...) is None -- unless the listener `wants_graph`: then they are made here from the
daemon's copy of the graph (no `kwargs`, `result` None, `error` the worker's text); on
Dask it is what Hamilton's Dask adapter gives locally. A listener that raises is counted
in `flowerd_tracking_errors_total{sink}` and said in the run's log; the run goes on
(fail-open). After `run_ended`, its `trace_id` and `links` go into the run's row.

Imports no Hamilton, no SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStart:
    run_id: int
    schedule: str | None  # the schedule's id; None for a run without one
    pipeline: str
    slot: datetime | None  # the slot (scheduled_at); None for a manual run
    trigger: str  # schedule | manual | backfill | rerun | ...
    started_at: datetime
    traceparent: str | None = None  # W3C, from whoever asked for the run (a webhook)
    spec: Any = None  # the Schedule record (per-schedule switches: `otel = false`)


@dataclass(frozen=True, kw_only=True, slots=True)
class GraphStart:
    hamilton: dict[str, Any]  # pre_graph_execute's keywords: run_id, graph, final_vars, ...


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeStart:
    name: str
    started_at: float  # epoch seconds
    task_id: str | None = None
    hamilton: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeEnd:
    name: str
    started_at: float | None  # epoch seconds; None for a node skipped
    duration_s: float
    status: str  # success | failed | skipped
    error: str | None = None  # "Type: message" of a failed node
    task_id: str | None = None
    hamilton: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunEnd:
    run_id: int
    status: str  # the row's status: success | failed | timed_out | cancelled
    finished_at: datetime
    error: Any = None  # the row's RunError, or None
    nodes: tuple[NodeEnd, ...] = ()  # what the run's node timings kept (bounded)


class RunListener:
    """One run's listener; every method is optional (the defaults do nothing)."""

    trace_id: str | None = None  # 32 hex digits: the run's trace (run JSON `trace_id`)
    links: dict[str, str] | None = None  # run JSON `links`, e.g. {"hamilton_ui": URL}
    wants_graph = False  # True: feed it the graph and hook keywords of a worker's run too

    def run_started(self, run: RunStart) -> None:
        pass

    def graph_started(self, graph: GraphStart) -> None:
        pass

    def node_started(self, node: NodeStart) -> None:
        pass

    def node_ended(self, node: NodeEnd) -> None:
        pass

    def run_ended(self, end: RunEnd) -> None:
        pass


class Sink(Protocol):
    """A tracking destination made from its settings section (one per daemon)."""

    name: str  # the counter's `sink` label: hamilton_ui | otel | openlineage

    def open_run(self, run: RunStart) -> RunListener | None:
        """This run's listener, or None when the run is not reported here (e.g. its
        schedule says `otel = false`). Called on the event loop: quick; put slow set-up
        in the listener's run_started."""

    def close(self) -> None:
        """The daemon stops: flush and let go (in a thread, bounded)."""
