"""The real-daemon benchmark's smoke mode: it runs end to end against a real `flowerd
serve` and writes well-formed results. Timings are never asserted (a noisy shared VM)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.contract import bound
from tests.serve import REPO

pytestmark = pytest.mark.timeout(600)  # ~45 s idle; several times that on a loaded VM

KEYS = {"figure", "value", "unit", "baseline", "ratio", "goal", "date"}


def test_one_burst_of_the_bench_runs_every_slot_once():
    """make test's sized-down smoke of the bench: one burst (one `flowerd serve`, where
    the whole quick mode starts eight) gives well-formed figures and every slot once."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_daemon
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    burst = bench_daemon.burst(4, 1.5, warm_s=1)
    assert burst["runs"] >= 4 and burst["once"] and burst["all_ok"], burst
    figure = bench_daemon._figure("burst 4: fire lateness p50", burst["p50_ms"], "ms", 1.0, "")
    assert set(figure) == KEYS and isinstance(figure["value"], int | float)


def test_one_step_of_the_sustained_rate_search_keeps_every_slot_once():
    """The sustained-rate search (issue 27 goal 4) sized down to one step: one schedule of
    a 20 ms interval, 50 slots a second for 2 s; the step is reported with its rows
    counted and checked (~8 s idle). Whether it passes its p99 is timing, not asserted."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_daemon
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    rate = bench_daemon.sustained(50, 2, most=50, warm_s=1)
    step = rate["failed"] or rate["passed"]
    assert step["rate"] == 50 and step["expected"] == 100, rate
    assert step["once"] and step["all_ok"] and step["runs"] == 100, rate
    assert rate["passed"]["rate"] in (0, 50)


@pytest.mark.slow  # ~45 s idle, eight daemons: sized down above; `make soak` runs it
def test_bench_daemon_quick_mode_writes_well_formed_results(tmp_path):
    out = tmp_path / "results.json"
    done = _bench(
        [sys.executable, str(REPO / "benchmarks" / "bench_daemon.py"), "--quick"]
        + ["--rows", "300", "--out", str(out)]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "load average" in done.stdout
    results = json.loads(out.read_text())
    assert len(results["load_average"]) == 3
    figures = results["figures"]
    assert {f["figure"].split(":")[0] for f in figures} >= {"burst 4", "burst 4 async"}
    for figure in figures:
        assert set(figure) == KEYS
        assert isinstance(figure["value"], int | float)
        assert figure["figure"] in done.stdout
    once = [f for f in figures if "every slot once" in f["figure"]]
    assert once and all(f["value"] == 1 for f in once)  # correctness, not timing


def _bench(argv: list[str]) -> subprocess.CompletedProcess:
    """Run the bench in a process group of its own and end that whole group afterwards:
    a bench cut short by its timeout must not leave its `flowerd serve` daemons running
    (one was found still holding port 8787 after such a cut)."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=bound(150))
    except subprocess.TimeoutExpired:
        _end_group(proc.pid)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the bench did not finish in {bound(150):.0f} s: {stderr[-3000:]}")
    finally:
        _end_group(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _end_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
