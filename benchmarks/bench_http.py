"""The cost of the HTTP server: a real `flowerd serve` with `--http off` and with
`--http 127.0.0.1:0` while a client scrapes /metrics every 5 s and loads the page
every 10 s (Prometheus plus an open browser tab), on a burst of interval-1s schedules.

Figures per mode: fire lateness p50 / p99 (started_at - scheduled_at, from the history
rows: the source of truth), daemon CPU per recorded run (utime + stime from /proc), and
the idle daemon's CPU (the same daemon with its schedules paused, so only the HTTP
server's own ticks and the scrapes remain).

    python benchmarks/bench_http.py [--schedules N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOWERD = str(Path(sys.executable).with_name("flowerd"))
TICKS_S = os.sysconf("SC_CLK_TCK")
SCRAPE_S = 5  # a brisk Prometheus scrape_interval (the default is 60 s)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_S


def _pause_all(base: Path, schedules: int) -> None:
    from daemon.serve.control import request
    from daemon.settings import load_settings

    socket_path = load_settings(base).control_socket
    for i in range(schedules):
        request(socket_path, "pause", schedule=f"s{i:03d}")


def _wait_ready(base: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"flowerd serve exited {proc.returncode}")
        done = subprocess.run(
            [FLOWERD, "--base-dir", str(base), "status", "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if done.returncode == 0:
            return json.loads(done.stdout)
        time.sleep(0.2)
    raise SystemExit("flowerd serve not ready in 60 s")


def _client(url: str, stop: threading.Event, counts: dict) -> None:
    """Prometheus every SCRAPE_S, and a browser tab on the page (it reloads every 10 s)."""
    tick = 0
    while not stop.wait(1.0):
        paths = (["/metrics"] if tick % SCRAPE_S == 0 else []) + (["/"] if tick % 10 == 0 else [])
        for path in paths:
            with urllib.request.urlopen(url + path, timeout=10) as answer:
                answer.read()
            counts[path] = counts.get(path, 0) + 1
        tick += 1


def _lateness_ms(base: Path, since: float) -> tuple[list[float], int]:
    from datetime import UTC, datetime

    from daemon.history import History
    from daemon.settings import load_settings

    async def query():
        async with History.open(load_settings(base).db_url, readonly=True) as history:
            return await history.list_runs(
                since=datetime.fromtimestamp(since, UTC), status="success", limit=0
            )

    rows = asyncio.run(query())
    return sorted(r.lateness_s * 1000 for r in rows if r.lateness_s is not None), len(rows)


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


def measure(http: str, scraped: bool, schedules: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-http-") as tmp:
        base = Path(tmp)
        from bench_daemon import _project  # one project builder for the daemon benches

        _project(base, schedules, mixed=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
        log = open(base / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [FLOWERD, "--base-dir", str(base), "--log-level", "WARNING", "serve", "--http", http],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            url = _wait_ready(base, proc)["http"]
            time.sleep(3)  # drivers built, first slots past
            stop, counts = threading.Event(), {}
            client = threading.Thread(target=_client, args=(url, stop, counts)) if scraped else None
            since, cpu0 = time.time(), _cpu_s(proc.pid)
            if client:
                client.start()
            time.sleep(seconds)
            cpu1 = _cpu_s(proc.pid)
            _pause_all(base, schedules)
            time.sleep(2)
            idle0 = _cpu_s(proc.pid)
            time.sleep(seconds / 2)
            idle_cpu_pct = (_cpu_s(proc.pid) - idle0) / (seconds / 2) * 100
            stop.set()
            if client:
                client.join()
            lateness, recorded = _lateness_ms(base, since)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    return {
        "http": http + (" + client" if scraped else ""),
        "runs": recorded,
        "p50_ms": _pct(lateness, 50),
        "p99_ms": _pct(lateness, 99),
        "cpu_per_run_us": (cpu1 - cpu0) / max(recorded, 1) * 1e6,
        "idle_cpu_pct": idle_cpu_pct,
        "requests": sum(counts.values()),
    }


def main(schedules: int = 100, seconds: float = 20.0) -> list[dict]:
    modes = [("off", False), ("127.0.0.1:0", False), ("127.0.0.1:0", True)]
    results = [measure(http, scraped, schedules, seconds) for http, scraped in modes]
    print(
        f"   {schedules} interval-1s schedules, {seconds:g} s each; "
        f"client: /metrics every {SCRAPE_S} s, / every 10 s"
    )
    print(f"   {'http':<21} {'runs':>6} {'p50 ms':>8} {'p99 ms':>8} {'CPU/run µs':>11} "
          f"{'idle CPU %':>10} {'requests':>9}")  # fmt: skip
    for r in results:
        print(
            f"   {r['http']:<21} {r['runs']:>6} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['cpu_per_run_us']:>11.0f} {r['idle_cpu_pct']:>10.2f} {r['requests']:>9}"
        )
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    main(args.schedules, args.seconds)
