"""What watching a run's nodes costs (DESIGN.md "Inside a run"): CPU per recorded run
through the whole run path (claim, run hello_world on the async driver, terminal row in
a real SQLite history) -- without node timings, with node timings alone (the default: no
sink configured), and with OpenTelemetry on, exporting every run's spans over OTLP/HTTP
to a receiver in another process (so its CPU is not counted here).

Also the driver call alone (no history): hello_world's `execute` with and without the
node adapters, both drivers -- the hooks' own cost, without the history's noise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_runner import bench_schedule, fire_and_drain

ROOT = Path(__file__).resolve().parent.parent
N_RUNS = 1000
CONCURRENCY = 50
N_CALLS = 3000
RECEIVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


async def _cpu_per_run_us(
    base: Path, mode: str, endpoint: str | None, *, sinks=None, n_runs: int = N_RUNS
) -> float:
    """`sinks`: run with these (bench_sinks) instead of `mode`'s; every run must link."""
    from daemon.history import History
    from daemon.observe.tracking import Tracking
    from daemon.pipeline import Pipelines
    from daemon.runner.runner import Runner
    from daemon.settings import sqlite_url

    tracking = None
    if sinks is not None:
        tracking = Tracking(sinks, timeout_s=60)
    elif mode == "nodes":
        tracking = Tracking()
    elif mode == "otel":
        from daemon.observe import otel

        tracking = Tracking([otel.make(None, {"endpoint": endpoint})], timeout_s=5)
    pm = Pipelines(base, node_hooks=tracking.hooks if tracking else None)
    for path in base.glob("history.db*"):
        path.unlink()
    history = await History.open(sqlite_url(base / "history.db"))
    runner = Runner(pm=pm, history=history, max_concurrent_runs=CONCURRENCY, threads=2)
    runner.tracking = tracking
    _, cpu = await fire_and_drain(pm, runner, bench_schedule(base), n_runs)
    done = await history.list_runs(schedule="bench", status="success", limit=n_runs)
    assert len(done) == n_runs, f"only {len(done)} of {n_runs} runs recorded"
    assert mode == "off" or done[0].nodes, "no node timings recorded"
    assert mode != "otel" or done[0].trace_id, "no trace recorded"
    linking = [s for s in sinks or () if s.name == "hamilton_ui"]
    assert not linking or all(r.links for r in done), "a run without its link"
    runner.close()
    if tracking is not None:
        await tracking.close()
    await history.close()
    return cpu / n_runs * 1e6


def _call_us(watch: bool, sync: bool) -> float:
    """CPU per `execute` of hello_world (no history), with the node adapters recording
    into a run's RunNodes or without any adapter."""
    from daemon.observe import taps
    from daemon.observe.nodes import RunNodes
    from daemon.pipeline import Attempts, Pipelines, RunConfig

    pm = Pipelines(ROOT, node_hooks=taps.HOOKS if watch else None)
    cfg = RunConfig(final_vars=["full_greeting"], async_driver=not sync)

    async def calls_async() -> None:
        for _ in range(N_CALLS):
            with taps.recording(RunNodes()):
                await pm.execute_async("hello_world", cfg, Attempts())

    def calls_sync() -> None:
        for _ in range(N_CALLS):
            with taps.recording(RunNodes()):
                pm.execute_sync("hello_world", cfg, Attempts())

    pm.run("hello_world", cfg) if sync else asyncio.run(pm.run_async("hello_world", cfg))
    cpu = time.process_time()
    calls_sync() if sync else asyncio.run(calls_async())
    return (time.process_time() - cpu) / N_CALLS * 1e6


def main() -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="flowerd-bench-observe-"))
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        endpoint = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
        shutil.copytree(ROOT / "pipelines", base / "pipelines")
        figures: dict[str, list[float]] = {"off": [], "nodes": [], "otel": []}
        for _ in range(3):  # interleaved, so drift on a loaded VM hits all three alike
            for mode in figures:
                figures[mode].append(asyncio.run(_cpu_per_run_us(base, mode, endpoint)))
        calls = {
            (driver, watch): statistics.median(_call_us(watch, driver == "sync") for _ in range(3))
            for driver in ("sync", "async")
            for watch in (False, True)
        }
    finally:
        receiver.kill()
        receiver.wait()
        shutil.rmtree(base, ignore_errors=True)
    per_run = {mode: statistics.median(values) for mode, values in figures.items()}
    print(f"   recorded run, CPU per run (median of 3 x {N_RUNS} runs, async driver):")
    print(f"     no node timings      {per_run['off']:8.0f} µs")
    print(f"     node timings         {per_run['nodes']:8.0f} µs  "
          f"(+{per_run['nodes'] - per_run['off']:.0f} µs)")  # fmt: skip
    print(f"     node timings + OTel  {per_run['otel']:8.0f} µs  "
          f"(+{per_run['otel'] - per_run['off']:.0f} µs, spans sent at run end)")  # fmt: skip
    for driver in ("sync", "async"):
        bare, watched = calls[(driver, False)], calls[(driver, True)]
        print(f"   {driver} execute alone: {bare:.0f} µs, with node adapters {watched:.0f} µs "
              f"(+{watched - bare:.0f} µs for 2 nodes)")  # fmt: skip
    return {
        "cpu_per_run_us_off": per_run["off"],
        "cpu_per_run_us_nodes": per_run["nodes"],
        "cpu_per_run_us_otel": per_run["otel"],
        **{f"execute_{d}_us_{'nodes' if w else 'off'}": v for (d, w), v in calls.items()},
    }


if __name__ == "__main__":
    main()
