"""One run's nodes as they run: their timings kept for the history (bounded: at most
MAX_NODES, past that the slowest MAX_NODES and a count), and each event handed on to the
run's listeners (or, in a worker process, sent back to the daemon).

Fed by the Hamilton adapters in daemon.observe.taps; cheap when nothing listens: a
start is one dict write, an end one tuple.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from daemon.observe.listeners import FAILED, SKIPPED, SUCCESS, GraphStart, NodeEnd, NodeStart

MAX_NODES = 1000


class RunNodes:
    """`tell`: the run's listeners' fan-out (node_started / node_ended / graph_started),
    or None. `keep`: keep timings (False in a worker: the daemon keeps them)."""

    def __init__(self, tell: Any = None, *, keep: bool = True, limit: int = MAX_NODES):
        self._tell = tell
        self._keep = keep
        self._limit = limit
        self._open: dict[tuple[str, str | None], tuple[float, float]] = {}
        self._ended: list[NodeEnd] = []
        self.omitted = 0
        self._graph: dict[str, Any] | None = None

    @property
    def listening(self) -> bool:
        """Whether the raw Hamilton hook keywords are wanted (a listener in this process)."""
        return self._tell is not None and getattr(self._tell, "wants_hamilton", True)

    # -- from Hamilton's hooks -------------------------------------------------------
    def graph_started(self, hamilton: dict[str, Any]) -> None:
        self._graph = hamilton
        if self._tell is not None:
            self._tell.graph_started(GraphStart(hamilton=hamilton))

    def started(self, name: str, task_id: str | None, hamilton: dict | None = None) -> None:
        wall = time.time()
        self._open[(name, task_id)] = (wall, time.perf_counter())
        if self._tell is not None:
            self._tell.node_started(
                NodeStart(name=name, started_at=wall, task_id=task_id, hamilton=hamilton)
            )

    def ended(self, name: str, task_id: str | None, error: BaseException | None,
              hamilton: dict | None = None) -> None:  # fmt: skip
        wall, began = self._open.pop((name, task_id), (time.time(), time.perf_counter()))
        self.add(
            NodeEnd(
                name=name,
                started_at=wall,
                duration_s=time.perf_counter() - began,
                status=SUCCESS if error is None else FAILED,
                error=None if error is None else f"{type(error).__name__}: {error}",
                task_id=task_id,
                hamilton=hamilton,
            )
        )

    def graph_failed(self, upstream: Callable[[dict[str, Any]], Iterable[str]]) -> None:
        """The run failed: the nodes it would have run and never started are `skipped`
        (`upstream`: the names a run with the graph's keywords executes)."""
        if self._graph is None:
            return
        seen = {node.name for node in self._ended} | {name for name, _ in self._open}
        for name in upstream(self._graph):
            if name not in seen:
                self.add(NodeEnd(name=name, started_at=None, duration_s=0.0, status=SKIPPED))

    # -- from anywhere (a worker's events, replayed) --------------------------------
    def add(self, node: NodeEnd) -> None:
        if self._tell is not None:
            self._tell.node_ended(node)
        if not self._keep:
            return
        self._ended.append(node)
        if len(self._ended) >= 2 * self._limit:
            self._trim()

    def replay_end(self, node: NodeEnd) -> None:
        self._open.pop((node.name, node.task_id), None)
        self.add(node)

    def replay_start(self, node: NodeStart) -> None:
        self._open[(node.name, node.task_id)] = (node.started_at, time.perf_counter())
        if self._tell is not None:
            self._tell.node_started(node)

    # -- at the run's end ------------------------------------------------------------
    def kept(self) -> tuple[tuple[NodeEnd, ...], int]:
        """The nodes in the order they started (skipped ones last) and how many were
        left out. A node still open (its run was cancelled, or failed around it) is
        `skipped` with the time it had run."""
        now = time.perf_counter()
        for (name, task_id), (wall, began) in list(self._open.items()):
            self.add(NodeEnd(name=name, started_at=wall, duration_s=now - began,
                             status=SKIPPED, task_id=task_id))  # fmt: skip
        self._open.clear()
        if len(self._ended) > self._limit:
            self._trim()
        ordered = sorted(self._ended, key=lambda n: (n.started_at is None, n.started_at or 0.0))
        return tuple(ordered), self.omitted

    def _trim(self) -> None:
        slowest = sorted(self._ended, key=lambda n: n.duration_s, reverse=True)
        self.omitted += len(slowest) - self._limit
        self._ended = slowest[: self._limit]


def rows(nodes: Iterable[NodeEnd]) -> list[dict[str, Any]]:
    return [node.row() for node in nodes]
