"""`executor = { type = "dask", address = ... }`: runs on a real Dask cluster.

A real `dask scheduler` and two `dask worker` processes on 127.0.0.1 (random free
ports); the pipelines ask `distributed.get_worker()` where each node ran."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("hamilton.plugins.h_dask", exc_type=ImportError)

from daemon.errors import PipelineError  # noqa: E402
from daemon.pipeline import (
    Pipelines,  # noqa: E402
    cluster,  # noqa: E402
)
from tests.contract import bound, flowerd  # noqa: E402
from tests.serve import Served, make_project, runs, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(420)
DASK = str(Path(sys.executable).with_name("dask"))
WORKERS = ("w1", "w2")

NODES = """
import os


def here() -> dict:
    from distributed import get_worker

    return {"worker": get_worker().name, "pid": os.getpid()}


def there(here: dict) -> dict:
    from distributed import get_worker

    return {"first": here, "second": {"worker": get_worker().name, "pid": os.getpid()}}
"""
FANOUT = """
import time

from hamilton.htypes import Collect, Parallelizable


def item(count: int = 20) -> Parallelizable[int]:
    yield from range(count)


def worked(item: int, pause_s: float = 0.1) -> dict:
    from distributed import get_worker

    time.sleep(pause_s)
    return {"item": item, "worker": get_worker().name}


def all_work(worked: Collect[dict]) -> list:
    return sorted(worked, key=lambda w: w["item"])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    address: str
    dashboard_port: int
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen]

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        # a worker still inside a task waits for it before it exits (one suite run spent
        # 30 s here): the cluster is the test's alone, so after a short grace it is killed
        for proc in [*self.workers.values(), self.scheduler]:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=bound(10))


def _start_cluster(tmp: Path) -> Cluster:
    port, dashboard = _free_port(), _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp / "dask.log", "ab")  # noqa: SIM115 - the processes write it
    common = {"stdout": log, "stderr": subprocess.STDOUT, "cwd": tmp}
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", f"127.0.0.1:{dashboard}"],
        **common,
    )  # fmt: skip
    workers = {
        name: subprocess.Popen(
            [
                DASK,
                "worker",
                address,
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--local-directory",
                str(tmp / name),
            ],
            **common,
        )  # fmt: skip
        for name in WORKERS
    }
    log.close()  # the processes hold their own copies
    made = Cluster(address, dashboard, scheduler, workers)
    try:
        from distributed import Client

        with Client(address, timeout=bound(30), set_as_default=False) as client:
            client.wait_for_workers(len(WORKERS), timeout=bound(60))
    except BaseException:
        made.stop()
        log_text = (tmp / "dask.log").read_text()
        raise AssertionError(f"the Dask cluster did not start:\n{log_text}") from None
    return made


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    made = _start_cluster(tmp_path_factory.mktemp("dask"))
    yield made
    cluster.close_all()
    made.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, "", dask_nodes=NODES, dask_fanout=FANOUT)


def _executor(address: str) -> dict:
    return {"type": "dask", "address": address}


def test_every_node_runs_on_the_workers(project: Path, dask_cluster: Cluster):
    pm = Pipelines(base_dir=project)
    result = pm.run("dask_nodes", executor=_executor(dask_cluster.address), final_vars=["there"])
    ran = result["there"]
    print(f"\ngraph adapter: nodes ran on {ran}")
    for where in (ran["first"], ran["second"]):
        assert where["worker"] in WORKERS and where["pid"] != os.getpid()
    again = pm.run("dask_nodes", executor=_executor(dask_cluster.address), final_vars=["here"])
    assert again["here"]["worker"] in WORKERS
    assert len(cluster._clients) == 1  # one client per address, reused by every run


def test_a_fan_out_of_20_spreads_over_the_workers(project: Path, dask_cluster: Cluster):
    pm = Pipelines(base_dir=project)
    result = pm.run("dask_fanout", executor=_executor(dask_cluster.address))
    work = result["all_work"]
    spread = {name: sum(w["worker"] == name for w in work) for name in WORKERS}
    print(f"\nfan-out of 20: items per worker {spread}")
    assert [w["item"] for w in work] == list(range(20))
    assert all(spread.values()), spread  # both workers took items


def test_an_unreachable_scheduler_fails_the_run_naming_it(project: Path):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    pm = Pipelines(base_dir=project)
    started = time.monotonic()
    with pytest.raises(PipelineError, match=f"Dask scheduler at {address} cannot be reached"):
        pm.run("dask_nodes", executor=_executor(address))
    took = time.monotonic() - started
    print(f"\nunreachable scheduler: failed after {took:.1f} s")
    assert took < cluster.DASK_CONNECT_S + 5


def test_the_daemons_row_says_where_the_run_ran(project: Path, dask_cluster: Cluster):
    (project / "schedules" / "test.toml").write_text(
        '[on_dask]\npipeline = "dask_nodes"\ncron = "0 0 1 1 *"\nasync_driver = false\n'
        f'executor = {{ type = "dask", address = "{dask_cluster.address}" }}\n'
    )
    (project / "flowerd.toml").write_text('http = "off"\n')
    with Served(project) as served:
        served.wait_ready(timeout_s=60)
        served.ask("trigger", schedule="on_dask")
        (row,) = wait_for(
            lambda: [r for r in runs(project) if r.status not in ("queued", "running")],
            timeout_s=60,
            what="the Dask run's row",
        )
        assert served.stop() == 0
    assert row.status == "success", row.error
    link = f"http://127.0.0.1:{dask_cluster.dashboard_port}/status"
    assert f"Dask cluster {dask_cluster.address}, dashboard {link}" in row.result_summary
    print(f"\ndaemon run {row.id}: {json.dumps(row.result)}; summary {row.result_summary}")
    assert row.result["there"]["first"]["worker"] in WORKERS
    assert f"executing on Dask cluster {dask_cluster.address}" in served.log
    # node timings on Dask: what Hamilton's Dask adapter gives here (each node's task)
    assert [n["name"] for n in row.nodes] == ["here", "there"]
    assert {n["status"] for n in row.nodes} == {"success"}


def _wait_until_busy(address: str, name: str) -> None:
    """Until the worker `name` is computing one of the run's tasks (bounded)."""
    from distributed import Client

    with Client(address, timeout=bound(30), set_as_default=False) as probe:

        def busy() -> bool:
            workers = probe.scheduler_info()["workers"]
            (where,) = [a for a, w in workers.items() if w["name"] == name]
            return bool(probe.processing().get(where))

        wait_for(busy, timeout_s=60, interval_s=0.05, what=f"worker {name} at work")


@pytest.mark.slow
def test_a_worker_killed_mid_run_dask_reruns_its_work(project: Path, tmp_path: Path):
    """Dask, not flowerd, handles a lost worker: the scheduler gives the dead worker's
    tasks (and results it held) to the live one, and the run succeeds."""
    own = _start_cluster(tmp_path)
    try:
        pm = Pipelines(base_dir=project)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(
                pm.run,
                "dask_fanout",
                executor=_executor(own.address),
                inputs={"pause_s": 0.5},
            )
            _wait_until_busy(own.address, "w2")
            own.workers["w2"].send_signal(signal.SIGKILL)
            result = running.result(timeout=bound(120))
    finally:
        own.stop()
    work = result["all_work"]
    spread = {name: sum(w["worker"] == name for w in work) for name in WORKERS}
    print(f"\nworker w2 killed mid-run: items per worker in the result {spread}")
    assert [w["item"] for w in work] == list(range(20))
    assert spread["w1"] > 10  # w1 did its own share and took over what w2 lost


def test_a_cluster_that_is_down_fails_its_runs_not_the_daemon(
    project: Path, dask_cluster: Cluster
):
    """One schedule on a live cluster, one on an address where nothing listens: `serve`
    starts, the live one's runs succeed, the other's fail naming the address (within the
    connect bound), and `flowerd validate` only warns."""
    down = "tcp://127.0.0.1:9"
    (project / "schedules" / "test.toml").write_text(
        '[on_dask]\npipeline = "dask_nodes"\ninterval = "2s"\nasync_driver = false\n'
        'final_vars = ["here"]\ncatchup = "none"\n'
        f'executor = {{ type = "dask", address = "{dask_cluster.address}" }}\n'
        '[on_nothing]\npipeline = "dask_nodes"\ninterval = "2s"\nasync_driver = false\n'
        'final_vars = ["here"]\ncatchup = "none"\n'
        f'executor = {{ type = "dask", address = "{down}" }}\n'
    )
    (project / "flowerd.toml").write_text('http = "off"\n')
    checked = flowerd(project, "validate")
    assert checked.returncode == 0, checked.stderr
    assert f"[on_nothing] the Dask scheduler at {down} cannot be reached now" in checked.stderr
    with Served(project) as served:
        served.wait_ready(timeout_s=60)

        def ended(schedule: str, status: str) -> list:
            return [r for r in runs(project, schedule=schedule) if r.status == status]

        good = wait_for(lambda: ended("on_dask", "success"), timeout_s=60, what="a success")
        failed = wait_for(lambda: ended("on_nothing", "failed"), timeout_s=60, what="a failure")
        assert served.proc.poll() is None  # the daemon carries on
        assert served.stop() == 0
    rows = runs(project)
    print(f"\nlive cluster: {len(good)} success; dead one: {failed[0].error.message}")
    assert not [r for r in rows if r.schedule == "on_dask" and r.status == "failed"]
    assert f"Dask scheduler at {down} cannot be reached" in failed[0].error.message
    took = (failed[0].finished_at - failed[0].started_at).total_seconds()
    assert took < cluster.DASK_CONNECT_S + 10, took
