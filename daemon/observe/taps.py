"""The Hamilton adapters that feed a run's `RunNodes` (daemon.observe.nodes): handed down
to daemon.pipeline (which never imports this package) and put in every driver it builds.

One adapter for each driver: `SyncTap` (sync node hooks: the sync driver, its executors,
Dask's graph adapter -- whose hooks run here, around each task's submission) and
`AsyncTap` (async node hooks: Hamilton's async driver calls only those per node). Drivers
are built once and shared by runs, so the adapters hold no run: they find it in the
context (`current`, set by the run's task or the worker serving it) or, on a thread of
Hamilton's own executors where that context is not, by Hamilton's run id.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from hamilton.lifecycle import base as lifecycle

from daemon.observe.listeners import NodeEnd, NodeStart
from daemon.observe.nodes import RunNodes

current: contextvars.ContextVar[RunNodes | None] = contextvars.ContextVar(
    "flowerd_run_nodes", default=None
)
_by_hamilton_run: dict[str, RunNodes] = {}


@contextlib.contextmanager
def recording(nodes: RunNodes) -> Iterator[RunNodes]:
    """Node events of runs started in this context go to `nodes`."""
    token = current.set(nodes)
    try:
        yield nodes
    finally:
        current.reset(token)


def _run(run_id: str) -> RunNodes | None:
    nodes = current.get()
    return nodes if nodes is not None else _by_hamilton_run.get(run_id)


def _upstream(graph_kwargs: dict[str, Any]) -> list[str]:
    graph = graph_kwargs["graph"]
    nodes, _ = graph.get_upstream_nodes(
        graph_kwargs["final_vars"], graph_kwargs.get("inputs"), graph_kwargs.get("overrides")
    )
    return [n.name for n in nodes if n.user_defined is False and n.callable is not None]


class _GraphHooks(lifecycle.BasePreGraphExecute, lifecycle.BasePostGraphExecute):
    def pre_graph_execute(self, *, run_id: str, **kwargs: Any) -> None:
        nodes = current.get()
        if nodes is None:
            return
        _by_hamilton_run[run_id] = nodes
        nodes.graph_started({"run_id": run_id, **kwargs})

    def post_graph_execute(self, *, run_id: str, success: bool, **_: Any) -> None:
        nodes = _by_hamilton_run.pop(run_id, None)
        if nodes is not None and not success:
            nodes.graph_failed(_upstream)

    def __reduce__(self):  # one per process: a pickled driver (executors) finds its own
        return (_instance, (type(self).__name__,))


class SyncTap(
    _GraphHooks,
    lifecycle.BasePreNodeExecute,
    lifecycle.BasePostNodeExecute,
    lifecycle.BasePreTaskSubmission,
    lifecycle.BasePostTaskReturn,
):
    """Node hooks, and (dynamic execution only) task hooks: a task's nodes that ran in
    another process, where no run is recorded, are timed as their task here."""

    def pre_node_execute(self, *, run_id: str, node_, kwargs, task_id=None) -> None:
        nodes = _run(run_id)
        if nodes is not None:
            nodes.started(
                node_.name,
                task_id,
                _hook(nodes, run_id=run_id, node_=node_, kwargs=kwargs, task_id=task_id),
            )

    def post_node_execute(self, *, run_id: str, node_, error, task_id=None, **more) -> None:
        nodes = _run(run_id)
        if nodes is not None:
            hook = _hook(nodes, run_id=run_id, node_=node_, error=error, task_id=task_id, **more)
            nodes.ended(node_.name, task_id, error, hook)

    def pre_task_submission(self, *, run_id: str, task_id: str, **_: Any) -> None:
        nodes = _run(run_id)
        if nodes is not None:
            nodes.task_submitted(task_id)

    def post_task_return(self, *, run_id: str, task_id: str, nodes, error, **_: Any) -> None:
        run = _run(run_id)
        if run is not None:
            run.task_returned(task_id, [node_.name for node_ in nodes], error)


class AsyncTap(_GraphHooks):
    """The async driver's tap. Hamilton calls async node hooks through `asyncio.gather`,
    which costs each node two more turns of the event loop per hook (+170 µs a node,
    measured); so instead each function node of the driver's graph is timed where it
    runs: its callable is wrapped, once per graph, by `_timed` (which does nothing but
    call it when no run is recorded in its context)."""

    def pre_graph_execute(self, *, run_id: str, graph, **kwargs: Any) -> None:
        if not getattr(graph, _WRAPPED, False):
            for node_ in graph.nodes.values():
                if not node_.user_defined and node_.callable is not None:
                    node_._callable = _timed(node_)
            setattr(graph, _WRAPPED, True)
        super().pre_graph_execute(run_id=run_id, graph=graph, **kwargs)


_WRAPPED = "_flowerd_timed"


def _timed(node_) -> Callable[..., Any]:
    fn, name = node_.callable, node_.name
    if inspect.iscoroutinefunction(fn):

        async def timed_async(**kwargs: Any) -> Any:
            nodes = current.get()
            if nodes is None:
                return await fn(**kwargs)
            nodes.started(name, None, _hook(nodes, node_=node_, kwargs=kwargs, task_id=None))
            try:
                result = await fn(**kwargs)
            except BaseException as exc:
                nodes.ended(name, None, exc, _hook(nodes, node_=node_, error=exc, result=None))
                raise
            nodes.ended(name, None, None, _hook(nodes, node_=node_, error=None, result=result))
            return result

        return functools.update_wrapper(timed_async, fn)

    def timed(**kwargs: Any) -> Any:  # a sync node under the async driver: on the loop
        nodes = current.get()
        if nodes is None:
            return fn(**kwargs)
        nodes.started(name, None, _hook(nodes, node_=node_, kwargs=kwargs, task_id=None))
        try:
            result = fn(**kwargs)
        except BaseException as exc:
            nodes.ended(name, None, exc, _hook(nodes, node_=node_, error=exc, result=None))
            raise
        nodes.ended(name, None, None, _hook(nodes, node_=node_, error=None, result=result))
        return result

    return functools.update_wrapper(timed, fn)


def _hook(nodes: RunNodes, **hamilton: Any) -> dict | None:
    """The raw hook keywords, for listeners that drive Hamilton adapters of their own
    (only when someone listens)."""
    if not nodes.listening:
        return None
    hamilton.setdefault("run_id", nodes.hamilton_run_id)
    hamilton.setdefault("task_id", None)
    return hamilton


class NodeHooks:
    """What daemon.pipeline is handed (its `NodeHooks` protocol): the adapter for a
    driver mode. One per process (`HOOKS`); pickles by name into worker processes."""

    def __init__(self) -> None:
        self._taps = {"sync": SyncTap(), "async": AsyncTap()}

    def adapter(self, mode: str) -> Any:
        return self._taps[mode]

    @contextlib.contextmanager
    def forwarding(self, send: Callable[[tuple], None]) -> Iterator[None]:
        """In a worker process, around one run: its node events go to `send` as
        ("node", (kind, fields)) messages, for the daemon's `RunTrack.relay`."""
        with recording(RunNodes(_Forward(send), keep=False)):
            yield

    def __reduce__(self):
        return (_hooks, ())


class _Forward:
    wants_hamilton = False  # nothing of Hamilton's crosses the process boundary

    def __init__(self, send: Callable[[tuple], None]):
        self._send = send

    def graph_started(self, graph) -> None:
        """Hamilton's run id and final vars (plain names): the daemon joins them to its
        own copy of the graph to report the run (`RunTrack.in_worker`)."""
        hamilton = graph.hamilton
        final_vars = [v if isinstance(v, str) else getattr(v, "__name__", str(v))
                      for v in hamilton.get("final_vars") or ()]  # fmt: skip
        self._send(("node", ("graph", {"run_id": hamilton["run_id"], "final_vars": final_vars})))

    def node_started(self, node: NodeStart) -> None:
        self._send(("node", ("start", _fields(node))))

    def node_ended(self, node: NodeEnd) -> None:
        self._send(("node", ("end", _fields(node))))


def _fields(event: NodeStart | NodeEnd) -> dict[str, Any]:
    fields = {name: getattr(event, name) for name in event.__slots__}
    fields["hamilton"] = None
    return fields


HOOKS = NodeHooks()


def _hooks() -> NodeHooks:
    return HOOKS


def _instance(kind: str) -> Any:
    return HOOKS.adapter("sync" if kind == "SyncTap" else "async")
