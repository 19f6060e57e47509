"""`make bench`: every benchmark in this folder, each printing its own figures.

Ratios against raw Hamilton / raw SQLAlchemy measured in the same run are the figures
that count; this is a noisy 2-core VM, so absolute times drift between runs.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

SUITES = [
    "bench_pipeline",
    "bench_history",
    "bench_runner",
    "bench_runlogs",
    "bench_backfill",
    "bench_isolation",
    "bench_http",
    "bench_upstream",
    "bench_webhooks",
    "bench_scale",
    "bench_daemon",
    "bench_cli",
    "bench_events",
    "bench_observe",
    "bench_sinks",
]


def main() -> None:
    for name in SUITES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"({name}: not present)")
            continue
        started = time.perf_counter()
        print(f"== {name}")
        module.main()
        print(f"   ({time.perf_counter() - started:.1f} s)\n")


if __name__ == "__main__":
    main()
