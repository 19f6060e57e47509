"""Recorded runs per second through the whole run path: claim the slot row, mark it
running, run hello_world on Hamilton's async driver, write the terminal row -- with a
real SQLite history (group commit) and real Hamilton, many slots in flight at once.

Baseline in the same process: raw `await async_driver.execute` of the same module with
no history at all. Goal: >= 1,000 recorded runs/s on this 2-core VM.
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
N_RUNS = 3000
CONCURRENCY = 500


async def _raw_runs_per_s(module) -> float:
    from hamilton import async_driver

    driver = await async_driver.Builder().with_modules(module).build()
    started = time.perf_counter()
    for _ in range(N_RUNS):
        await driver.execute(["full_greeting"], inputs={"name": "bench"})
    return N_RUNS / (time.perf_counter() - started)


def bench_schedule(base: Path):
    """The one schedule the in-process runner benches fire: hello_world, catch-up slots."""
    from daemon.schedule import Schedule

    return Schedule(
        id="bench", file=base / "bench.toml", pipeline="hello_world", interval_s=1,
        final_vars=("full_greeting",), inputs={"name": "bench"}, misfire_grace_s=3600,
        overlap="allow",
    )  # fmt: skip


async def fire_and_drain(pm, runner, schedule, n_runs: int) -> tuple[float, float]:
    """`n_runs` slots of `schedule` fired at once through `runner`, then drained: the
    (wall, CPU) seconds it took, the driver built beforehand."""
    await pm.run_async("hello_world", final_vars=["full_greeting"])  # build once
    first = datetime(2020, 1, 1, tzinfo=UTC)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n_runs):
        runner.fire(schedule, first + timedelta(seconds=i), "catchup")
    await runner.drain(grace_s=600)
    return time.perf_counter() - wall, time.process_time() - cpu


async def _recorded_runs_per_s(base: Path) -> tuple[float, int]:
    from daemon.history import History
    from daemon.pipeline import Pipelines
    from daemon.runner.runner import Runner
    from daemon.settings import sqlite_url

    pm = Pipelines(base)
    history = await History.open(sqlite_url(base / "history.db"))
    runner = Runner(pm=pm, history=history, max_concurrent_runs=CONCURRENCY, threads=2)
    elapsed_s, _ = await fire_and_drain(pm, runner, bench_schedule(base), N_RUNS)
    recorded = len(await history.list_runs(schedule="bench", status="success", limit=N_RUNS))
    runner.close()
    await history.close()
    return N_RUNS / elapsed_s, recorded


def main() -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="flowerd-bench-"))
    try:
        shutil.copytree(ROOT / "pipelines", base / "pipelines")
        recorded_rates = []
        for _ in range(3):
            for path in base.glob("history.db*"):
                path.unlink()
            rate, recorded = asyncio.run(_recorded_runs_per_s(base))
            assert recorded == N_RUNS, f"only {recorded} of {N_RUNS} runs recorded"
            recorded_rates.append(rate)
        module = sys.modules["hello_world"]
        raw_rate = asyncio.run(_raw_runs_per_s(module))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rate = statistics.median(recorded_rates)
    print(
        f"recorded runs through the runner ({N_RUNS} slots, {CONCURRENCY} in flight, "
        "async driver, SQLite history)"
    )
    print(f"  raw Hamilton async execute, no history : {raw_rate:8.0f} runs/s")
    print(
        f"  flowerd: claim + running + run + finish: {rate:8.0f} runs/s  "
        f"(median of 3; goal >= 1000)  all {N_RUNS} rows recorded"
    )
    print(
        f"  cost per recorded run: {1e6 / rate:.0f} us vs {1e6 / raw_rate:.0f} us raw "
        f"({raw_rate / rate:.2f}x)"
    )
    return {"recorded_runs_per_s": rate, "raw_runs_per_s": raw_rate}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
