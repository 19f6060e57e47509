"""One run's nodes as they run: their timings kept for the history (bounded: at most
MAX_NODES, past that the slowest MAX_NODES and a count), and each event handed on to the
run's listeners (or, in a worker process, sent back to the daemon).

Fed by the Hamilton adapters in daemon.observe.taps. Cheap when nothing listens: a start
is one dict write, an end one tuple; the event objects (NodeStart / NodeEnd) are made
only for listeners, and the history's rows once, at the run's end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from daemon.observe.listeners import FAILED, SKIPPED, SUCCESS, GraphStart, NodeEnd, NodeStart

MAX_NODES = 1000


class _Ended(NamedTuple):
    name: str
    started_at: float | None
    duration_s: float
    status: str
    error: str | None
    task_id: str | None

    def event(self, hamilton: dict | None = None) -> NodeEnd:
        return NodeEnd(**self._asdict(), hamilton=hamilton)


class RunNodes:
    """`tell`: the run's listeners' fan-out (node_started / node_ended / graph_started),
    or None. `keep`: keep timings (False in a worker: the daemon keeps them)."""

    def __init__(self, tell: Any = None, *, keep: bool = True, limit: int = MAX_NODES):
        self._tell = tell
        self._keep = keep
        self._limit = limit
        self._open: dict[tuple[str, str | None], tuple[float, float]] = {}
        self._ended: list[_Ended] = []
        self.omitted = 0
        self._graph: dict[str, Any] | None = None
        self._tasks: dict[str, tuple[float, float]] = {}  # submitted, not returned
        self._seen: set[tuple[str, str]] = set()  # (node, task) a hook here saw start

    @property
    def listening(self) -> bool:
        """Whether the raw Hamilton hook keywords are wanted (a listener in this process)."""
        return self._tell is not None and getattr(self._tell, "wants_hamilton", True)

    @property
    def hamilton_run_id(self) -> str | None:
        return self._graph.get("run_id") if self._graph else None

    # -- from Hamilton's hooks -------------------------------------------------------
    def graph_started(self, hamilton: dict[str, Any]) -> None:
        self._graph = hamilton
        if self._tell is not None:
            self._tell.graph_started(GraphStart(hamilton=hamilton))

    def started(self, name: str, task_id: str | None, hamilton: dict | None = None) -> None:
        wall = time.time()
        self._open[(name, task_id)] = (wall, time.perf_counter())
        if task_id is not None and task_id in self._tasks:
            self._seen.add((name, task_id))
        if self._tell is not None:
            self._tell.node_started(
                NodeStart(name=name, started_at=wall, task_id=task_id, hamilton=hamilton)
            )

    def ended(self, name: str, task_id: str | None, error: BaseException | None,
              hamilton: dict | None = None) -> None:  # fmt: skip
        now = time.perf_counter()
        wall, began = self._open.pop((name, task_id), (time.time(), now))
        if error is None:
            self._add(_Ended(name, wall, now - began, SUCCESS, None, task_id), hamilton)
        else:
            why = f"{type(error).__name__}: {error}"
            self._add(_Ended(name, wall, now - began, FAILED, why, task_id), hamilton)

    # -- tasks of Hamilton's dynamic execution (Parallelizable), from its task hooks ----
    def task_submitted(self, task_id: str) -> None:
        self._tasks[task_id] = (time.time(), time.perf_counter())

    def task_returned(self, task_id: str, names: Iterable[str], error: BaseException | None):
        """Nodes of the task that no hook here saw run it in another process (Hamilton's
        multiprocessing executor, Dask's workers): they are timed as their task, from its
        submission to its return; a task that failed fails each (which one raised is not
        known here)."""
        wall, began = self._tasks.pop(task_id, (None, 0.0))
        if wall is None:
            return
        for name in names:
            if (name, task_id) in self._seen:
                self._seen.discard((name, task_id))
                continue
            self._open[(name, task_id)] = (wall, began)
            if self._tell is not None:
                self._tell.node_started(NodeStart(name=name, started_at=wall, task_id=task_id))
            self.ended(name, task_id, error)

    def graph_failed(self, upstream: Callable[[dict[str, Any]], Iterable[str]]) -> None:
        """The run failed: the nodes it would have run and never started are `skipped`
        (`upstream`: the names a run with the graph's keywords executes)."""
        if self._graph is None:
            return
        seen = {node.name for node in self._ended} | {name for name, _ in self._open}
        for name in upstream(self._graph):
            if name not in seen:
                self._add(_Ended(name, None, 0.0, SKIPPED, None, None))

    def _add(self, node: _Ended, hamilton: dict | None = None) -> None:
        if self._tell is not None:
            self._tell.node_ended(node.event(hamilton))
        if not self._keep:
            return
        self._ended.append(node)
        if len(self._ended) >= 2 * self._limit:
            self._trim()

    # -- a worker's events, replayed in the daemon -----------------------------------
    def replay_start(self, node: NodeStart) -> None:
        self._open[(node.name, node.task_id)] = (node.started_at, time.perf_counter())
        if self._tell is not None:
            self._tell.node_started(node)

    def replay_end(self, node: NodeEnd) -> None:
        self._open.pop((node.name, node.task_id), None)
        fields = (node.name, node.started_at, node.duration_s, node.status, node.error)
        self._add(_Ended(*fields, node.task_id), node.hamilton)

    # -- at the run's end ------------------------------------------------------------
    def kept(self) -> tuple[list[_Ended], int]:
        """The nodes in the order they started (skipped ones last) and how many were
        left out. A node still open (its run was cancelled, or failed around it) is
        `skipped` with the time it had run."""
        now = time.perf_counter()
        for (name, task_id), (wall, began) in list(self._open.items()):
            self._add(_Ended(name, wall, now - began, SKIPPED, None, task_id))
        self._open.clear()
        if len(self._ended) > self._limit:
            self._trim()
        ordered = sorted(self._ended, key=_start_order)
        return ordered, self.omitted

    def _trim(self) -> None:
        slowest = sorted(self._ended, key=lambda n: n.duration_s, reverse=True)
        self.omitted += len(slowest) - self._limit
        self._ended = slowest[: self._limit]


def _start_order(node: _Ended) -> tuple[bool, float]:
    return (node.started_at is None, node.started_at or 0.0)


def events(nodes: Iterable[_Ended]) -> tuple[NodeEnd, ...]:
    return tuple(node.event() for node in nodes)


def rows(nodes: Iterable[_Ended]) -> list[dict[str, Any]]:
    """As the history keeps them (run JSON `nodes`)."""
    return [
        {
            "name": node.name,
            "started_at": (
                datetime.fromtimestamp(node.started_at, UTC).isoformat()
                if node.started_at is not None
                else None
            ),
            "duration_s": round(node.duration_s, 6),
            "status": node.status,
        }
        for node in nodes
    ]
