"""What a backfill of 1,000 slots of hello_world costs, in seconds.

- `flowerd backfill` as a user runs it, no daemon listening (the CLI's own Runner): the
  whole command, start-up (Hamilton import, history open) included;
- the same through a running `flowerd serve` (a job in the daemon, polled);
- the Job alone in-process, one run at a time (overlap "skip", the default) and with
  overlap "allow" (limit 16: 15 at a time, one slot kept for scheduled runs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOWERD = str(Path(sys.executable).with_name("flowerd"))
N_SLOTS = 1000
FIRST = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULES = """
[hello]
pipeline = "hello_world"
interval = "1m"
final_vars = ["full_greeting"]
inputs = { name = "bench" }

[hello_allow]
pipeline = "hello_world"
interval = "1m"
final_vars = ["full_greeting"]
inputs = { name = "bench" }
overlap = "allow"
"""


def _project(root: Path) -> Path:
    shutil.copytree(ROOT / "pipelines", root / "pipelines")
    (root / "schedules").mkdir()
    (root / "schedules" / "bench.toml").write_text(SCHEDULES)
    return root


def _range(offset_days: int) -> list[str]:
    start = FIRST + timedelta(days=offset_days)
    end = start + timedelta(minutes=N_SLOTS - 1)
    return ["--from", start.isoformat(), "--to", end.isoformat()]


def _cli_s(base: Path, schedule: str, offset_days: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
    started = time.perf_counter()
    done = subprocess.run(
        [FLOWERD, "--base-dir", str(base), "backfill", schedule, *_range(offset_days)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    took = time.perf_counter() - started
    if done.returncode != 0 or f"{N_SLOTS} succeeded" not in done.stdout:
        raise RuntimeError(f"backfill failed: {done.stdout}{done.stderr}")
    return took


def _through_daemon_s(base: Path) -> float:
    from daemon.errors import DaemonNotRunning
    from daemon.serve.control import request
    from daemon.settings import load_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
    serve = subprocess.Popen(
        [FLOWERD, "--base-dir", str(base), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        socket_path = load_settings(base).control_socket
        deadline = time.monotonic() + 60
        while True:
            try:
                request(socket_path, "status")
                break
            except (DaemonNotRunning, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return _cli_s(base, "hello", 20)
    finally:
        serve.terminate()
        serve.wait(timeout=60)


async def _job_s(base: Path, schedule_id: str, offset_days: int) -> float:
    from daemon.history import History
    from daemon.pipeline import Pipelines
    from daemon.runner.backfill import Job, plan_backfill, slots_in
    from daemon.runner.runner import Runner
    from daemon.schedule import load_schedules
    from daemon.settings import sqlite_url

    spec = {s.id: s for s in load_schedules(base / "schedules", default_timezone="UTC")}[
        schedule_id
    ]
    pm = Pipelines(base)
    history = await History.open(sqlite_url(base / "job.db"))
    runner = Runner(pm=pm, history=history, max_concurrent_runs=16, threads=4)
    try:
        start = FIRST + timedelta(days=offset_days)
        end = start + timedelta(minutes=N_SLOTS - 1)
        slots, _ = slots_in(spec, start, end, now=datetime.now(UTC), yes=True)
        started = time.perf_counter()
        plan = await plan_backfill(history, spec, slots, rerun=False, pm=pm)
        job = Job(runner, plan)
        await job.run()
        took = time.perf_counter() - started
        assert job.succeeded == N_SLOTS, job.progress()
        return took
    finally:
        runner.close()
        await history.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = _project(Path(tmp))
        cli_s = _cli_s(base, "hello", 0)
        cli_allow_s = _cli_s(base, "hello_allow", 10)
        daemon_s = _through_daemon_s(base)
        serial_s = asyncio.run(_job_s(base, "hello", 30))
        allow_s = asyncio.run(_job_s(base, "hello_allow", 40))
    print(f"backfill of {N_SLOTS:,} slots of hello_world (async driver):")
    print(f"  flowerd backfill, no daemon (whole command)      {cli_s:6.2f} s")
    print(f"  flowerd backfill, no daemon, overlap = allow     {cli_allow_s:6.2f} s")
    print(f"  flowerd backfill through a running daemon         {daemon_s:6.2f} s")
    print(
        f"  the job in-process, one at a time                 {serial_s:6.2f} s "
        f"({serial_s / N_SLOTS * 1000:.2f} ms/slot)"
    )
    print(
        f"  the job in-process, overlap = allow (15 at once)  {allow_s:6.2f} s "
        f"({allow_s / N_SLOTS * 1000:.2f} ms/slot)"
    )


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT)]
    main()
