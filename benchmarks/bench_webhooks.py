"""Webhook -> run start: a real `flowerd serve` (default settings, SQLite, HTTP on
127.0.0.1) takes signed deliveries one at a time, as an idle daemon would.

Figures, each p50 / p99 over DELIVERIES:
- accepted: the client sends the POST -> it has the 202 (the event row durable);
- start: the client sends the POST -> the run's `started_at` (same clock: one machine);
- seen -> start: the event's `received_at` -> `started_at`, what the metric
  `flowerd_event_start_seconds` observes.
Goal (DESIGN.md, "Events"): an accepted webhook starts its run within 50 ms (p99, idle daemon).
The file and interval-slot figures beside it are benchmarks/bench_events.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DELIVERIES = 200
GAP_S = 0.05  # between deliveries: each finds the daemon idle
SECRET = "bench webhook secret"
PIPELINE = """
def size(payload: dict) -> int:
    return len(payload)
"""


def _project(base: Path, secret_ref: str) -> None:
    (base / "schedules").mkdir(parents=True)
    (base / "pipelines").mkdir()
    (base / "pipelines" / "sized.py").write_text(PIPELINE)
    (base / "flowerd.toml").write_text('http = "127.0.0.1:0"\n')
    (base / "schedules" / "hooks.toml").write_text(
        '[hook]\npipeline = "sized"\nfinal_vars = ["size"]\n'
        f'on_webhook = {{ secret = "{secret_ref}" }}\n'
    )


def _deliver(url: str) -> list[tuple[int, float, float]]:
    """(run id, sent at (epoch s), accepted after (s)) per delivery."""
    from daemon.incoming.webhooks import sign

    sent = []
    for n in range(DELIVERIES):
        body = json.dumps({"n": n, "ref": "refs/heads/main"}).encode()
        headers = {"X-Flowerd-Signature": sign(SECRET, body), "Idempotency-Key": f"bench-{n}"}
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        at, started = time.time(), time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 202, answer.status
            run_id = json.loads(answer.read())["run_id"]
        sent.append((run_id, at, time.perf_counter() - started))
        time.sleep(GAP_S)
    return sent


def _percentiles(values_s: list[float]) -> str:
    ms = sorted(v * 1000 for v in values_s)
    p99 = ms[max(0, int(len(ms) * 0.99) - 1)]
    return f"p50 {statistics.median(ms):6.2f} ms, p99 {p99:6.2f} ms, max {ms[-1]:6.2f} ms"


def measure(secret_from: str) -> dict[str, list[float]]:
    """The figures with the secret in an environment variable ("env") or a file ("file")."""
    from bench_daemon import _rows, _serve, _stop

    from daemon.serve.control import request
    from daemon.settings import load_settings

    base = Path(tempfile.mkdtemp(prefix="flowerd-bench-webhooks-"))
    (base / "secret").write_text(SECRET)
    os.environ["BENCH_HOOK_SECRET"] = SECRET  # the daemon inherits it
    _project(base, f"file:{base / 'secret'}" if secret_from == "file" else "env:BENCH_HOOK_SECRET")
    proc, _ = _serve(base)
    try:
        url = request(load_settings(base).control_socket, "status")["http"] + "/hooks/hook"
        since = time.time() - 1
        sent = _deliver(url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = {r.id: r for r in _rows(base, since) if r.started_at is not None}
            if len(rows) >= DELIVERIES:
                break
            time.sleep(0.2)
    finally:
        _stop(proc)
        shutil.rmtree(base, ignore_errors=True)
    assert len(rows) == DELIVERIES, f"{len(rows)} of {DELIVERIES} runs started"
    assert all(r.status == "success" for r in rows.values()), "a webhook run did not succeed"
    return {
        "accepted": [accepted for _, _, accepted in sent],
        "start": [_epoch(rows[run_id].started_at) - at for run_id, at, _ in sent],
        "seen -> start": [
            _epoch(rows[run_id].started_at) - _epoch(rows[run_id].scheduled_at)
            for run_id, _, _ in sent
        ],
    }


def _epoch(moment: datetime | None) -> float:
    assert moment is not None
    return moment.timestamp()


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(f"webhook deliveries: {DELIVERIES}, one at a time, {GAP_S * 1000:g} ms apart")
    for secret_from in ("env", "file"):
        for name, values in measure(secret_from).items():
            print(f"  secret {secret_from:<4} {name:<14} {_percentiles(values)}")
    print("  (goal: an accepted webhook starts its run within 50 ms, p99)")


if __name__ == "__main__":
    main()
