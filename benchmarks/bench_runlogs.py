"""What keeping each run's log costs per run: recorded runs through the runner (claim,
running, run, finish; SQLite history, group commit) of hello_world, and of the same
pipeline logging ten lines, each with and without run-log capture (daemon/tell/runlogs.py:
the capture handler, the stdout proxy, the lines written through the writer).

Without capture the ten lines go nowhere (a NullHandler), so the difference is the
capture and the writing of the lines alone.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_RUNS = 1500
CONCURRENCY = 200
ROUNDS = 7

TEN_LINES = """
import logging

logger = logging.getLogger(__name__)


def greeting(salutation: str = "Hello") -> str:
    return salutation


def full_greeting(greeting: str, name: str = "World") -> str:
    for i in range(10):
        logger.info("greeting %s, line %d", name, i)
    return f"{greeting}, {name}!"
"""


async def _per_run_us(base: Path, pipeline: str, capture: bool) -> float:
    from daemon.history import History
    from daemon.pipeline import Pipelines
    from daemon.runner.runner import Runner
    from daemon.schedule import Schedule
    from daemon.settings import sqlite_url
    from daemon.tell.runlogs import RunLogs

    for path in base.glob("history.db*"):
        path.unlink()
    pm = Pipelines(base)
    history = await History.open(sqlite_url(base / "history.db"))
    runner = Runner(pm=pm, history=history, max_concurrent_runs=CONCURRENCY, threads=2)
    keeper = RunLogs(history, max_bytes=1024 * 1024)
    if capture:
        await keeper.attach(runner.events).start()
    schedule = Schedule(
        id="bench", file=base / "bench.toml", pipeline=pipeline, interval_s=1,
        final_vars=("full_greeting",), inputs={"name": "bench"}, misfire_grace_s=3600,
        overlap="allow",
    )  # fmt: skip
    await pm.run_async(pipeline, final_vars=["full_greeting"])  # build once
    first = datetime(2020, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    for i in range(N_RUNS):
        runner.fire(schedule, first + timedelta(seconds=i), "catchup")
    await runner.drain(grace_s=600)
    await keeper.close()
    elapsed_s = time.perf_counter() - started
    done = await history.list_runs(schedule="bench", status="success", limit=N_RUNS)
    assert len(done) == N_RUNS, f"only {len(done)} of {N_RUNS} runs recorded"
    if capture:
        lines = await history.log_lines(done[0].id)
        assert len(lines) >= (12 if pipeline == "hello_logs" else 2), lines
    runner.close()
    await history.close()
    return elapsed_s / N_RUNS * 1e6


def main() -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="flowerd-bench-"))
    root = logging.getLogger()
    saved_level, null = root.level, logging.NullHandler()
    root.setLevel(logging.INFO)  # as in the daemon: the lines are made, then handled
    root.addHandler(null)
    try:
        shutil.copytree(ROOT / "pipelines", base / "pipelines")
        (base / "pipelines" / "hello_logs.py").write_text(TEN_LINES)
        cases = [(p, c) for p in ("hello_world", "hello_logs") for c in (False, True)]
        times: dict[tuple, list[float]] = {case: [] for case in cases}
        for _ in range(ROUNDS):  # interleaved: a noisy neighbour hits every case alike
            for case in cases:
                times[case].append(asyncio.run(_per_run_us(base, *case)))
        figures = {case: statistics.median(found) for case, found in times.items()}
    finally:
        root.removeHandler(null)
        root.setLevel(saved_level)
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"run-log capture: cost per recorded run ({N_RUNS} runs, {CONCURRENCY} in flight, "
        f"async driver, SQLite; median of {ROUNDS})"
    )
    out = {}
    for pipeline, what in (("hello_world", "hello_world"), ("hello_logs", "+ 10 log lines")):
        off, on = figures[(pipeline, False)], figures[(pipeline, True)]
        print(
            f"  {what:<15} without capture {off:6.0f} us   with {on:6.0f} us   "
            f"capture costs {on - off:+5.0f} us per run"
        )
        out[f"{pipeline}_capture_us"] = on - off
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
