"""History write and query speed (DESIGN.md: writes <= 100 us per run amortized under
load; `flowerd runs --schedule S --status failed --limit 50` on 1,000,000 rows: query
<= 20 ms, whole command <= 0.5 s).

The naive figure -- the same three writes per run, each its own SQLAlchemy-async
transaction -- is measured in the same run as the ratio's baseline: this is a noisy
2-core VM, so ratios mean more than absolute times.

    .venv/bin/python benchmarks/bench_history.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import sqlalchemy as sa  # noqa: E402

from daemon import history  # noqa: E402
from daemon.history import History, runs  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAIVE_RUNS = 200
LOAD_LEVELS = (200, 1000)
ROUNDS = 5
SCHEDULES = [f"sched_{i:02d}" for i in range(20)]
FLOWERD = Path(sys.executable).with_name("flowerd")


def url_in(folder: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{folder / name}"


# --------------------------------------------------------------------------- writes


async def naive_us_per_run(folder: Path) -> float:
    """claim + running + finish as three SQLAlchemy-async transactions, one run after
    another (what a first version without the writer task does)."""
    url = url_in(folder, "naive.db")
    await history.upgrade(url)
    engine = history.writer_engine(url)
    try:
        started = time.perf_counter()
        for i in range(NAIVE_RUNS):
            async with engine.begin() as conn:
                run_id = (
                    await conn.execute(
                        sa.insert(runs).returning(runs.c.id), _row(i, schedule="naive")
                    )
                ).scalar_one()
            async with engine.begin() as conn:
                stmt = sa.update(runs).where(runs.c.id == run_id)
                await conn.execute(stmt.values(status="running", started_at=T0))
            async with engine.begin() as conn:
                stmt = sa.update(runs).where(runs.c.id == run_id)
                await conn.execute(stmt.values(status="success", finished_at=T0, attempts=1))
        return (time.perf_counter() - started) / NAIVE_RUNS * 1e6
    finally:
        await engine.dispose()


def _row(i: int, *, schedule: str) -> dict:
    return {
        "schedule": schedule,
        "pipeline": "hello_world",
        "trigger": "schedule",
        "status": "queued",
        "run_at": T0 + timedelta(seconds=i),
        "scheduled_at": T0 + timedelta(seconds=i),
        "async_driver": True,
        "final_vars": ["full_greeting"],
        "inputs": {"name": "World"},
        "host": "bench",
        "pid": 1,
    }


async def grouped_us_per_run(folder: Path, concurrent: int) -> tuple[float, float]:
    """`concurrent` tasks, each claim -> mark_running -> finish through one History;
    the median of ROUNDS rounds, and the commits per round."""
    async with History.open(url_in(folder, f"grouped_{concurrent}.db")) as h:
        next_slot = 0

        async def one_run(slot: int) -> None:
            run_id = await h.claim(
                pipeline="hello_world",
                trigger="schedule",
                schedule="grouped",
                scheduled_at=T0 + timedelta(seconds=slot),
                async_driver=True,
                final_vars=["full_greeting"],
                inputs={"name": "World"},
            )
            await h.mark_running(run_id, started_at=T0)
            await h.finish(run_id, status="success", finished_at=T0, attempts=1)

        timings, commits = [], []
        for _ in range(ROUNDS + 1):  # the first round warms caches and is dropped
            before = h.commits
            started = time.perf_counter()
            await asyncio.gather(*(one_run(next_slot + i) for i in range(concurrent)))
            timings.append((time.perf_counter() - started) / concurrent * 1e6)
            commits.append(h.commits - before)
            next_slot += concurrent
        return statistics.median(timings[1:]), statistics.median(commits[1:])


# --------------------------------------------------------------------------- 1M rows


def fill_raw(path: Path, total_rows: int) -> float:
    """`total_rows` runs straight through sqlite3 executemany (in slot order, as a daemon
    writes them): 20 schedules, ~4 % failed, a few missed. Returns seconds taken."""
    rng = random.Random(7)
    columns = RAW_COLUMNS  # named: columns added later keep their defaults
    sql = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")  # generation only; flowerd itself uses NORMAL
    conn.execute("BEGIN")
    conn.executemany(sql, (_raw_row(i, rng) for i in range(total_rows)))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


RAW_COLUMNS = (
    "schedule pipeline trigger status run_at scheduled_at started_at finished_at attempts "
    "async_driver final_vars inputs result_summary error_type error_message error_traceback "
    "host pid instance_id"
).split()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME text


def _raw_row(i: int, rng: random.Random) -> tuple:
    slot = T0 + timedelta(seconds=30 * i)
    roll = rng.random()
    status = "failed" if roll < 0.04 else ("missed" if roll < 0.05 else "success")
    started = None if status == "missed" else slot + timedelta(milliseconds=rng.randint(1, 9))
    finished = (started or slot) + timedelta(milliseconds=rng.randint(20, 900))
    error = ("ValueError", "bad input", "Traceback ...") if status == "failed" else (None,) * 3
    return (
        SCHEDULES[i % len(SCHEDULES)],
        "hello_world",
        "schedule",
        status,
        _stamp(slot),
        _stamp(slot),
        _stamp(started) if started else None,
        _stamp(finished),
        1,
        1,
        '["full_greeting"]',
        '{"name": "World"}',
        "'Hello, World!'",
        *error,
        "bench",
        4242,
        None,
    )


async def query_ms(url: str) -> tuple[float, int]:
    async with History.open(url, readonly=True) as h:
        timings, found = [], 0
        for _ in range(21):
            started = time.perf_counter()
            found = len(await h.list_runs(schedule=SCHEDULES[3], status="failed", limit=50))
            timings.append((time.perf_counter() - started) * 1000)
        return statistics.median(timings[1:]), found


def command_s(db_path: Path, base_dir: Path) -> tuple[float, int]:
    argv = [str(FLOWERD), "--base-dir", str(base_dir), "--db", str(db_path), "runs"]
    argv += ["--schedule", SCHEDULES[3], "--status", "failed", "--limit", "50", "--json"]
    timings, rows = [], 0
    for _ in range(6):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        timings.append(time.perf_counter() - started)
        rows = len(json.loads(done.stdout))
    return statistics.median(timings[1:]), rows


def query_plan(db_path: Path) -> str:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM runs WHERE schedule = ? AND status = ? "
            "ORDER BY run_at DESC, id DESC LIMIT 50",
            (SCHEDULES[3], "failed"),
        ).fetchall()
    finally:
        conn.close()
    return "; ".join(row[-1] for row in rows)


# --------------------------------------------------------------------------- main


def main(total_rows: int = 1_000_000) -> None:
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-") as tmp:
        folder = Path(tmp)
        _writes(folder)
        _queries(folder, total_rows)


def _writes(folder: Path) -> None:
    gc.collect()
    naive = asyncio.run(naive_us_per_run(folder))
    print(f"   writes, naive (3 SQLAlchemy-async transactions per run): {naive:8.1f} us/run")
    for concurrent in LOAD_LEVELS:
        grouped, commits = asyncio.run(grouped_us_per_run(folder, concurrent))
        verdict = "ok" if grouped <= 100 else "OVER 100 us"
        print(
            f"   writes, one writer task, {concurrent:4d} concurrent runs:   {grouped:8.1f} us/run "
            f"({naive / grouped:4.1f}x faster; {commits:.0f} commits per {3 * concurrent} "
            f"writes) [{verdict}]"
        )


def _queries(folder: Path, total_rows: int) -> None:
    url = url_in(folder, "million.db")
    asyncio.run(history.upgrade(url))
    db_path = folder / "million.db"
    took_s = fill_raw(db_path, total_rows)
    size_mb = db_path.stat().st_size / 1e6
    print(f"   {total_rows:,} rows generated in {took_s:.1f} s ({size_mb:.0f} MB)")
    print(f"   plan: {query_plan(db_path)}")
    ms, found = asyncio.run(query_ms(url))
    verdict = "ok" if ms <= 20 else "OVER 20 ms"
    print(
        f"   query --schedule S --status failed --limit 50: {ms:6.2f} ms ({found} rows) [{verdict}]"
    )
    base_dir = folder / "project"
    base_dir.mkdir()
    wall_s, rows = command_s(db_path, base_dir)
    verdict = "ok" if wall_s <= 0.5 else "OVER 0.5 s"
    print(
        f"   `flowerd runs --schedule S --status failed --limit 50 --json`: {wall_s:.3f} s "
        f"wall ({rows} rows) [{verdict}]"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    main(parser.parse_args().rows)
