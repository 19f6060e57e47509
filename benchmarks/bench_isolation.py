"""What `isolation = "process"` costs per run, against `isolation = "thread"`.

Sequential recorded runs of hello_world through the runner (claim, running, run,
finish; real SQLite history), one at a time so each figure is one run's latency, for
both drivers; then the bare call without history (Pipelines in the daemon vs
WorkerPool.run), and what starting workers costs (the forkserver's first start, which
imports Hamilton once, and a new worker forked from it).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_RUNS = 300


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def _recorded(base: Path, isolation: str, async_driver: bool) -> list[float]:
    from daemon.history import History
    from daemon.pipeline import Pipelines
    from daemon.runner.runner import Runner
    from daemon.schedule import Schedule
    from daemon.settings import sqlite_url

    for path in base.glob("history.db*"):
        path.unlink()
    history = await History.open(sqlite_url(base / "history.db"))
    runner = Runner(pm=Pipelines(base), history=history, max_concurrent_runs=4, threads=2)
    schedule = Schedule(
        id="bench", file=base / "bench.toml", pipeline="hello_world", interval_s=1,
        final_vars=("full_greeting",), inputs={"name": "bench"}, misfire_grace_s=3600,
        overlap="allow", isolation=isolation, async_driver=async_driver,
    )  # fmt: skip
    first = datetime(2020, 1, 1, tzinfo=UTC)
    samples = []
    for i in range(N_RUNS + 20):  # the first 20 warm up (drivers built, worker started)
        started = time.perf_counter()
        await runner.run_slot(schedule, first + timedelta(seconds=i), "catchup")
        if i >= 20:
            samples.append(time.perf_counter() - started)
    ok = len(await history.list_runs(schedule="bench", status="success", limit=N_RUNS + 20))
    assert ok == N_RUNS + 20, f"only {ok} runs succeeded"
    runner.close()
    await history.close()
    return samples


async def _bare(base: Path) -> dict[str, float]:
    from daemon.pipeline import Attempts, Pipelines, RunConfig
    from daemon.runner.workers import WorkerPool

    cfg = RunConfig(final_vars=["full_greeting"], inputs={"name": "bench"}, async_driver=True)
    pm = Pipelines(base)
    pool = WorkerPool(base_dir=pm.base_dir, pipelines_dir=pm.pipelines_dir)
    started = time.perf_counter()
    await pool.run("hello_world", cfg, Attempts())
    cold_s = time.perf_counter() - started
    in_daemon, in_worker, new_worker = [], [], []
    for _ in range(N_RUNS):
        started = time.perf_counter()
        await pm.execute_async("hello_world", cfg, Attempts())
        in_daemon.append(time.perf_counter() - started)
        started = time.perf_counter()
        await pool.run("hello_world", cfg, Attempts())
        in_worker.append(time.perf_counter() - started)
    first_run = []
    for _ in range(10):  # a worker killed and replaced: a fork from the warm forkserver
        await pool._kill(pool._idle[0])
        started = time.perf_counter()
        pool._release(await pool._acquire())
        new_worker.append(time.perf_counter() - started)
        started = time.perf_counter()
        await pool.run("hello_world", cfg, Attempts())  # loads the module, builds the driver
        first_run.append(time.perf_counter() - started)
    pool.close()
    return {
        "cold_s": cold_s,
        "in_daemon_us": _median_us(in_daemon),
        "in_worker_us": _median_us(in_worker),
        "new_worker_us": _median_us(new_worker),
        "first_run_us": _median_us(first_run),
    }


def main() -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="flowerd-bench-iso-"))
    figures: dict[str, float] = {}
    try:
        shutil.copytree(ROOT / "pipelines", base / "pipelines")
        bare = asyncio.run(_bare(base))
        for driver, async_driver in (("async", True), ("sync", False)):
            for isolation in ("thread", "process"):
                samples = asyncio.run(_recorded(base, isolation, async_driver))
                figures[f"{isolation}_{driver}_us"] = _median_us(samples)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"per recorded run, one at a time (hello_world, SQLite history; median of {N_RUNS})")
    for driver in ("async", "sync"):
        thread, process = figures[f"thread_{driver}_us"], figures[f"process_{driver}_us"]
        print(
            f"  {driver:5} driver: thread {thread:7.0f} us   process {process:7.0f} us   "
            f"(+{process - thread:.0f} us per run)"
        )
    print(
        f"  the bare call, no history: in the daemon {bare['in_daemon_us']:.0f} us, "
        f"in a worker {bare['in_worker_us']:.0f} us "
        f"(+{bare['in_worker_us'] - bare['in_daemon_us']:.0f} us: pickle, pipe, thread hop)"
    )
    print(
        f"  starting workers: the first (forkserver imports Hamilton) {bare['cold_s']:.2f} s; "
        f"a replacement (a fork) {bare['new_worker_us'] / 1000:.1f} ms, then its first run "
        f"{bare['first_run_us'] / 1000:.1f} ms (module load, driver build)"
    )
    return {**figures, **bare}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
