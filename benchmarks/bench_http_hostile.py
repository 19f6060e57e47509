"""Hostile HTTP clients against a real `flowerd serve` with a 1-second schedule
(issue 29, items 2 and 3).

reads: ~100,000 rows in the history; 8 clients ask, over and over, for the largest
    answers (`/api/runs?limit=0`, `/runs?limit=10000000`). Figures: the daemon's peak RSS
    (VmHWM), the 1-second schedule's lateness p99 (started_at - scheduled_at) and its
    slots that were `skipped` or `missed`.
slow: 100 connections each sending one header byte per second; /healthz probed every
    5 s. Figures: probes answered 200, and how many slow connections the server closed.

    .venv/bin/python benchmarks/bench_http_hostile.py [--rows 100000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

FLOWERD = str(Path(sys.executable).with_name("flowerd"))
LARGEST = ("/api/runs?limit=0", "/runs?limit=10000000")
SCHEDULE = '[tick]\npipeline = "hello_world"\ninterval = "1s"\n'


def _serve(base: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
    log = open(base / "serve.log", "ab")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen(
        [FLOWERD, "--base-dir", str(base), "serve", "--http", "127.0.0.1:0"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    from bench_http import _wait_ready

    return proc, _wait_ready(base, proc)["http"]


def _project(base: Path, rows: int) -> None:
    """The repo's pipelines, one 1-second schedule, and `rows` old runs of 20 others."""
    import shutil

    from bench_history import fill_raw

    from daemon.settings import load_settings

    shutil.copytree(ROOT / "pipelines", base / "pipelines")
    (base / "schedules").mkdir()
    proc, _ = _serve(base)  # creates and migrates the history
    proc.terminate()
    proc.wait(timeout=60)
    (base / "schedules" / "tick.toml").write_text(SCHEDULE)
    db = load_settings(base).db_url.split(":///", 1)[1]
    fill_raw(Path(db), rows)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reader(url: str, stop: threading.Event, counts: dict) -> None:
    i = 0
    while not stop.is_set():
        path = LARGEST[i % len(LARGEST)]
        i += 1
        try:
            with urllib.request.urlopen(url + path, timeout=120) as answer:
                size = len(answer.read())
            counts["ok"] = counts.get("ok", 0) + 1
            counts["bytes"] = max(counts.get("bytes", 0), size)
        except (OSError, urllib.error.URLError):
            counts["error"] = counts.get("error", 0) + 1


def _tick_rows(base: Path, since: float, until: float) -> list:
    from daemon.history import History
    from daemon.settings import load_settings

    async def query():
        async with History.open(load_settings(base).db_url, readonly=True) as history:
            return await history.list_runs(
                schedule="tick",
                since=datetime.fromtimestamp(since, UTC),
                until=datetime.fromtimestamp(until, UTC),
                limit=0,
            )

    return asyncio.run(query())


def _pct(values: list[float], pct: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


def reads(base: Path, seconds: float, clients: int = 8) -> dict:
    proc, url = _serve(base)
    try:
        time.sleep(3)  # the driver built, the first slots past
        stop, counts = threading.Event(), {}
        threads = [
            threading.Thread(target=_reader, args=(url, stop, counts)) for _ in range(clients)
        ]
        since = time.time()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        until = time.time() - 2  # slots that may still be starting are not counted
        stop.set()
        for thread in threads:
            thread.join()
        peak = _peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    rows = _tick_rows(base, since, until)
    late_ms = [r.lateness_s * 1000 for r in rows if r.lateness_s is not None]
    blocked = [line for line in (base / "serve.log").read_text().splitlines() if "blocked" in line]
    return {
        "slots": len(rows),
        "not_run": sum(r.status in ("skipped", "missed") for r in rows),
        "p50_ms": _pct(late_ms, 50),
        "p99_ms": _pct(late_ms, 99),
        "peak_rss_mib": peak,
        "answers": counts.get("ok", 0),
        "errors": counts.get("error", 0),
        "largest_answer_bytes": counts.get("bytes", 0),
        "loop_blocked_lines": len(blocked),
    }


def _slow_client(port: int, stop: threading.Event, closed: list) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    line = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    try:
        for byte in line:
            if stop.wait(1.0):
                return
            sock.sendall(bytes([byte]))
    except OSError:
        closed.append(1)
    finally:
        sock.close()


def slow(base: Path, seconds: float, connections: int = 100) -> dict:
    proc, url = _serve(base)
    port = int(url.rsplit(":", 1)[1])
    stop, closed, answers = threading.Event(), [], []
    threads = [
        threading.Thread(target=_slow_client, args=(port, stop, closed)) for _ in range(connections)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(5)
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=10) as answer:
                    answers.append(answer.status)
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)
            except OSError as exc:
                answers.append(repr(exc))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "probes": len(answers),
        "ok": sum(a == 200 for a in answers),
        "answers": answers,
        "slow_closed_by_server": len(closed),
    }


def main(rows: int, seconds: float, which: str, clients: int = 8) -> None:
    with tempfile.TemporaryDirectory(prefix="flowerd-hostile-") as tmp:
        base = Path(tmp)
        _project(base, rows)
        if which in ("reads", "both"):
            print("reads:", reads(base, seconds, clients), flush=True)
        if which in ("slow", "both"):
            print("slow:", slow(base, seconds), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=("reads", "slow", "both"), default="both")
    parser.add_argument("--clients", type=int, default=8, help="readers (0: a control run)")
    args = parser.parse_args()
    main(args.rows, args.seconds, args.only, args.clients)
