"""Node timings in flowerd's own history, with no sink configured: `flowerd runs show`
(the table and `nodes` in --json) for both drivers, a failing node and the nodes it
kept from running; the bound (the slowest 1,000 and a count). The API, the page's
timeline, worker processes and Dask: tests/observe/test_otel.py and
tests/pipeline/test_cluster.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.observe.listeners import SKIPPED, SUCCESS
from daemon.observe.nodes import RunNodes, rows
from tests.serve import cli, cli_here, make_project

BREAKS = """
import time


def start() -> int:
    time.sleep(0.02)
    return 1


def boom(start: int) -> int:
    raise ValueError("boom")


def after(boom: int) -> int:
    return boom
"""


@pytest.mark.parametrize("driver", ["--sync", "--async"])
def test_a_failed_node_and_the_nodes_it_kept_from_running(tmp_path: Path, driver: str):
    base = make_project(tmp_path, "", breaks=BREAKS)
    args = ["run", "breaks", "--final-var", "after", "--json"]
    out = cli(base, *(args + ([driver] if driver == "--sync" else [])))
    assert out.returncode != 0
    run = json.loads(out.stdout)
    doc = json.loads(cli_here(base, "runs", "show", str(run["id"]), "--json").stdout)
    assert doc["status"] == "failed"
    by_name = {n["name"]: n for n in doc["nodes"]}
    assert [n["name"] for n in doc["nodes"]] == ["start", "boom", "after"]
    assert by_name["start"]["status"] == "success" and by_name["start"]["duration_s"] >= 0.015
    assert by_name["boom"]["status"] == "failed"
    assert by_name["after"] == {
        "name": "after", "started_at": None, "duration_s": 0.0, "status": "skipped"
    }  # fmt: skip
    assert by_name["start"]["started_at"] <= by_name["boom"]["started_at"]
    assert doc["nodes_omitted"] == 0 and doc["trace_id"] is None
    table = cli_here(base, "runs", "show", str(run["id"])).stdout.split("nodes (3)", 1)[1]
    for name, status in (("start", "success"), ("boom", "failed"), ("after", "skipped")):
        line = next(line for line in table.splitlines() if line.split()[:1] == [name])
        assert line.split()[-1] == status


def test_a_run_keeps_its_slowest_nodes_and_counts_the_rest():
    nodes = RunNodes(limit=3)
    for i in range(10):  # ten nodes, each slower than the one before
        nodes.started(f"n{i}", None)
        nodes._open[(f"n{i}", None)] = (1000.0 + i, nodes._open[(f"n{i}", None)][1] - i)
        nodes.ended(f"n{i}", None, None)
    kept, omitted = nodes.kept()
    assert [n.name for n in kept] == ["n7", "n8", "n9"] and omitted == 7
    assert all(row["status"] == SUCCESS for row in rows(kept))


def test_a_node_still_running_when_the_run_ends_is_skipped_with_its_time():
    nodes = RunNodes()
    nodes.started("slow", None)
    (node,), omitted = nodes.kept()
    assert node.status == SKIPPED and node.started_at is not None and omitted == 0


FANOUT = """
import time

from hamilton.htypes import Collect, Parallelizable


def item(n: int = 3) -> Parallelizable[int]:
    yield from range(1, n + 1)


def squared(item: int) -> int:
    time.sleep(0.05)
    return item * item


def total(squared: Collect[int]) -> int:
    return sum(squared)
"""


class _Heard:
    def __init__(self):
        self.ended = []

    def graph_started(self, graph) -> None:
        pass

    def node_started(self, node) -> None:
        pass

    def node_ended(self, node) -> None:
        self.ended.append(node)


@pytest.mark.parametrize("executor", ["multiprocessing", "threadpool"])
def test_nodes_of_tasks_run_by_another_process_are_timed_as_their_task(tmp_path, executor):
    """Hamilton's multiprocessing executor runs a Parallelizable block's nodes in its own
    processes, where no run is recorded: each is timed as its task (submission to
    return) and told to the listeners (node spans); a thread pool's are timed as they
    run, once."""
    from daemon.observe import taps
    from daemon.pipeline import Attempts, Pipelines, RunConfig

    make_project(tmp_path, "", fanout_sq=FANOUT)
    pm = Pipelines(tmp_path, node_hooks=taps.HOOKS)
    heard = _Heard()
    nodes = RunNodes(heard)
    cfg = RunConfig(async_driver=False, final_vars=["total"],
                    executor={"type": executor, "max_workers": 2})  # fmt: skip
    with taps.recording(nodes):
        assert pm.execute_sync("fanout_sq", cfg, Attempts()) == {"total": 14}
    kept, _ = nodes.kept()
    squared = [n for n in kept if n.name == "squared"]
    assert len(squared) == 3 and len({n.task_id for n in squared}) == 3, kept
    assert all(n.status == SUCCESS and n.duration_s >= 0.045 for n in squared), squared
    assert sorted(n.name for n in heard.ended) == ["item", "squared", "squared", "squared", "total"]
