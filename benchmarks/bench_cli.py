"""Process start-up: what a user waits for between Enter and the answer (issue 27 goal 5).

Figures, each a median of whole processes, wall and CPU (utime + stime of the child):
- `flowerd runs --limit 50 --json` and `flowerd stats --json` on a generated history of
  `--rows` rows (default 1,000,000; bench_history.fill_raw, with the durations a daemon
  stores), against a bare `python -c pass` measured in the same run (goal: <= 10x);
- `flowerd --help` (imports and typer alone);
- `flowerd validate` and `flowerd serve` from exec to READY (the control socket answers
  `status`) for the shipped example project (this repository's schedules/ and pipelines/)
  and for a one-schedule project, with the daemon's CPU seconds until READY.

This is a loaded 2-core VM shared with other work: the ratios against `python -c pass`
are the figures that count.

    python benchmarks/bench_cli.py [--quick] [--rows N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_daemon import FLOWERD, _figure, _project, _serve, _stop, print_table  # noqa: E402
from bench_http import _cpu_s  # noqa: E402


def timed(argv: list[str]) -> tuple[float, float, str]:
    """One whole process: wall seconds, CPU seconds, stdout (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def medians(commands: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) of each command, the commands interleaved round by round so a
    burst of load elsewhere falls on all of them alike."""
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            wall, cpu, _ = timed(argv)
            found[name].append((wall, cpu))
    return {
        name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for name, got in found.items()
    }


def history_of(folder: Path, rows: int) -> Path:
    from bench_daemon import _store_durations
    from bench_history import fill_raw

    from daemon import history

    db_path = folder / "history.db"
    asyncio.run(history.upgrade(f"sqlite+aiosqlite:///{db_path}"))
    fill_raw(db_path, rows)
    _store_durations(db_path)
    return db_path


def reads(folder: Path, rows: int, repeat: int) -> dict[str, tuple[float, float]]:
    db_path = history_of(folder, rows)
    (folder / "empty").mkdir()
    common = [FLOWERD, "--base-dir", str(folder / "empty"), "--db", str(db_path)]
    commands = {
        "bare": [sys.executable, "-c", "pass"],
        "runs": [*common, "runs", "--limit", "50", "--json"],
        "stats": [*common, "stats", "--json"],
        "help": [FLOWERD, "--help"],
    }
    json.loads(timed(commands["runs"])[2])  # well-formed, and the page cache is warm
    json.loads(timed(commands["stats"])[2])
    return medians(commands, repeat)


def example_project(folder: Path) -> Path:
    base = folder / "example"
    for part in ("schedules", "pipelines"):
        shutil.copytree(ROOT / part, base / part, ignore=shutil.ignore_patterns("__pycache__"))
    return base


def serve_ready(base: Path, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds from exec to READY; each daemon stopped after."""
    found = []
    for _ in range(repeat):
        proc, wall = _serve(base)
        try:
            found.append((wall, _cpu_s(proc.pid)))
        finally:
            _stop(proc)
    return statistics.median(w for w, _ in found), statistics.median(c for _, c in found)


def measure(rows: int, repeat: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-cli-") as tmp:
        folder = Path(tmp)
        r = reads(folder, rows, repeat)
        bare_wall, bare_cpu = r["bare"]
        one = folder / "one"
        _project(one, 1, every="1h", mixed=False)
        example = example_project(folder)
        for base in (one, example):  # no HTTP port to share with anything else running
            (base / "flowerd.toml").write_text('http = "off"\n')
        validate = medians({"validate": [FLOWERD, "--base-dir", str(example), "validate"]}, repeat)
        serving = {"example": serve_ready(example, repeat), "one": serve_ready(one, repeat)}
    figures = [
        _figure("`python -c pass` wall", bare_wall, "s", None, ""),
        _figure("`python -c pass` CPU", bare_cpu, "s", None, ""),
    ]
    for name, label in (("runs", "`runs --limit 50 --json`"), ("stats", "`stats --json`")):
        wall, cpu = r[name]
        figures += [
            _figure(f"{label} {rows:,} rows, wall", wall, "s", bare_wall, "<= 10x"),
            _figure(f"{label} {rows:,} rows, CPU", cpu, "s", bare_cpu, "<= 10x"),
        ]
    figures += [
        _figure("`flowerd --help` wall", r["help"][0], "s", bare_wall, ""),
        _figure("`validate` example project, wall", validate["validate"][0], "s", bare_wall, ""),
        _figure("`validate` example project, CPU", validate["validate"][1], "s", bare_cpu, ""),
    ]
    for name, label in (("example", "example project"), ("one", "1 schedule")):
        wall, cpu = serving[name]
        figures += [
            _figure(f"`serve` exec->READY, {label}, wall", wall, "s", bare_wall, ""),
            _figure(f"`serve` exec->READY, {label}, CPU", cpu, "s", bare_cpu, ""),
        ]
    return figures


def main(quick: bool = False, rows: int | None = None, repeat: int | None = None) -> list[dict]:
    figures = measure(rows or (2000 if quick else 1_000_000), repeat or (3 if quick else 7))
    print_table(figures)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"   (start-up figures; load {load})")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 rows, 3 repeats")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--repeat", type=int)
    args = parser.parse_args()
    main(args.quick, args.rows, args.repeat)
