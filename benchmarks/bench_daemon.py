"""The real daemon as users run it: a `flowerd serve` subprocess with default settings on a
real SQLite file, the history rows as the source of truth.

Figures:
- bursts of 1 / 100 / 500 interval-1s schedules all due at the same second (half on the
  sync driver, half on the async driver): fire lateness p50 / p99 (started_at -
  scheduled_at), every slot exactly once, daemon CPU per recorded run (utime + stime from
  /proc), RSS; and 100 async-driver schedules for the CPU per async-driver run; the
  largest burst again with max_concurrent_runs = its size (what the default limit of 16
  runs at once costs a burst: the rest of it waits for runs to finish);
- the first run of each of 100 schedules after a restart (lateness p50 / max, against the
  later runs' p50): a first run must be as punctual as the rest (nothing built lazily);
- an idle daemon with 1,000 schedules (CPU %, RSS) and its start to READY (the control
  socket answers);
- history reads on a generated 1,000,000-row database: `flowerd stats` (wall, peak RSS)
  and `flowerd runs --limit 50` (whole command). The generated rows carry the duration a
  daemon stores with each ended row (since 2026-11-30; before, fill_raw's rows had none,
  so `stats` skipped the percentile reads it does on a real history). Measured then, load
  ~5 on this 2-core VM, median of 5: stats 0.52 s whole (History.stats() alone 0.18 s,
  peak 58 MiB), runs 0.33 s, a bare `python -c pass` 0.011 s.

Baselines are measured in the same run (a noisy 2-core VM: compare ratios): raw Hamilton
execute of hello_world, the asyncio timer's own lateness, raw sqlite3 for the reads and a
bare `python -c pass` for whole commands. Prints one table and writes results.json.

    python benchmarks/bench_daemon.py [--quick] [--seconds S] [--rows N] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_http import _cpu_s, _pct  # noqa: E402

FLOWERD = str(Path(sys.executable).with_name("flowerd"))
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024
RESULTS = HERE / "results.json"


# --------------------------------------------------------------------------- serving


def _project(
    base: Path, schedules: int, *, every: str = "1s", mixed: bool = True, extra: str = ""
) -> None:
    (base / "schedules").mkdir(parents=True)
    (base / "pipelines").mkdir()
    for name in ("hello_world.py", "pipeline_setup.py"):
        (base / "pipelines" / name).write_text((ROOT / "pipelines" / name).read_text())
    lines = []
    for i in range(schedules):
        lines += [f"[s{i:04d}]", 'pipeline = "hello_world"', f'interval = "{every}"']
        lines += [extra] if extra else []
        if mixed and i % 2:
            lines.append("async_driver = false")
        lines.append("")
    (base / "schedules" / "burst.toml").write_text("\n".join(lines))


def _serve(base: Path) -> tuple[subprocess.Popen, float]:
    """Start `flowerd serve` with default settings; returns it and its start to READY
    (the control socket answers `status`) in seconds."""
    from daemon.serve.control import request
    from daemon.settings import load_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
    env.pop("NOTIFY_SOCKET", None)
    socket_path = load_settings(base).control_socket
    log = open(base / "serve.log", "wb")  # noqa: SIM115 - the child keeps it
    started = time.perf_counter()
    proc = subprocess.Popen(
        [FLOWERD, "--base-dir", str(base), "serve"],  # default settings: log level INFO too
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"flowerd serve exited {proc.returncode}: {base / 'serve.log'}")
        try:
            request(socket_path, "status")
            return proc, time.perf_counter() - started
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.005)
    proc.kill()
    raise SystemExit("flowerd serve not ready in 60 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024


def _rows(base: Path, since: float) -> list:
    from daemon.history import History
    from daemon.settings import load_settings

    async def query():
        async with History.open(load_settings(base).db_url, readonly=True) as history:
            return await history.list_runs(since=datetime.fromtimestamp(since, UTC), limit=0)

    return asyncio.run(query())


def _slots_once(rows: list) -> bool:
    """Every (schedule, slot) has one row, and each schedule's slots leave no second out."""
    seen: dict[str, set] = {}
    for row in rows:
        slots = seen.setdefault(row.schedule, set())
        if row.scheduled_at in slots:
            return False
        slots.add(row.scheduled_at)
    for slots in seen.values():
        stamps = sorted(s.timestamp() for s in slots)
        if stamps and round(stamps[-1] - stamps[0]) + 1 != len(stamps):
            return False
    return True


def burst(
    schedules: int, seconds: float, *, mixed: bool = True, warm_s: float = 3, settings: str = ""
) -> dict:
    """`settings`: flowerd.toml text (default settings when empty)."""
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-daemon-") as tmp:
        base = Path(tmp)
        _project(base, schedules, mixed=mixed)
        if settings:
            (base / "flowerd.toml").write_text(settings)
        proc, _ = _serve(base)
        try:
            time.sleep(warm_s)  # drivers built, first slots past
            # from the next whole second on: every slot in the window is one full burst
            since = int(time.time()) + 1
            time.sleep(since - time.time())
            cpu0 = _cpu_s(proc.pid)
            time.sleep(seconds)
            cpu1, rss = _cpu_s(proc.pid), _rss_mib(proc.pid)
            time.sleep(1.5)  # the last burst recorded
        finally:
            _stop(proc)
        rows = [r for r in _rows(base, since - 0.5) if r.scheduled_at.timestamp() < since + seconds]
    lateness = sorted(r.lateness_s * 1000 for r in rows if r.lateness_s is not None)
    return {
        "runs": len(rows),
        "cpu_pct": (cpu1 - cpu0) / seconds * 100,
        "p50_ms": _pct(lateness, 50),
        "p99_ms": _pct(lateness, 99),
        "cpu_per_run_us": (cpu1 - cpu0) / max(len(rows), 1) * 1e6,
        "rss_mib": rss,
        "once": _slots_once(rows),
        "all_ok": all(r.status == "success" for r in rows),
    }


RATE_STEP_US = 20_000  # each schedule of the sustained search fires ~50 times a second


def _rate_project(base: Path, rate: int) -> list[int]:
    """`rate` slots a second, spread over the second: rate/50 async-driver hello_world
    schedules, each of an interval of 20 ms plus its own few µs (interval slots lie on
    multiples of the step since the epoch: steps apart by a µs lie at unrelated phases
    now, so the slots do not come as one burst). `overlap = "allow"`: a slot is never
    skipped for the run before it. Returns the steps (µs)."""
    steps = [RATE_STEP_US + i for i in range(max(1, round(rate * RATE_STEP_US / 1e6)))]
    (base / "schedules").mkdir(parents=True)
    (base / "pipelines").mkdir()
    for name in ("hello_world.py", "pipeline_setup.py"):
        (base / "pipelines" / name).write_text((ROOT / "pipelines" / name).read_text())
    lines = []
    for i, step in enumerate(steps):
        lines += [f"[r{i:04d}]", 'pipeline = "hello_world"', f"interval = {step / 1e6!r}",
                  'overlap = "allow"', ""]  # fmt: skip
    (base / "schedules" / "rate.toml").write_text("\n".join(lines))
    return steps


def _rate_step(rate: int, seconds: float, warm_s: float) -> dict:
    """One step of the search: the rows of the slots due in a window of `seconds`."""
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-rate-") as tmp:
        base = Path(tmp)
        steps = _rate_project(base, rate)
        proc, _ = _serve(base)
        try:
            time.sleep(warm_s)
            since = int(time.time()) + 1
            time.sleep(since - time.time())
            cpu0 = _cpu_s(proc.pid)
            time.sleep(seconds)
            cpu1 = _cpu_s(proc.pid)
            time.sleep(1.5)  # the last slots recorded
        finally:
            _stop(proc)
        rows = _rows(base, since - 0.5)
    rows = [r for r in rows if since <= r.scheduled_at.timestamp() < since + seconds]
    begin_us, end_us = since * 1_000_000, int((since + seconds) * 1_000_000)
    expected = sum(-(-end_us // step) - -(-begin_us // step) for step in steps)
    keys = {(r.schedule, r.scheduled_at) for r in rows}
    lateness = sorted(r.lateness_s * 1000 for r in rows if r.lateness_s is not None)
    return {
        "rate": round(sum(1e6 / step for step in steps)),
        "expected": expected,
        "runs": len(rows),
        "once": len(keys) == len(rows) == expected,
        "all_ok": all(r.status == "success" for r in rows),
        "p50_ms": _pct(lateness, 50),
        "p99_ms": _pct(lateness, 99),
        "cpu_pct": (cpu1 - cpu0) / seconds * 100,
        "cpu_per_run_us": (cpu1 - cpu0) / max(len(rows), 1) * 1e6,
    }


def sustained(
    start: int, seconds: float, *, most: int = 4000, factor: float = 1.5, warm_s: float = 3
) -> dict:
    """The highest rate of interval slots (slots/s) the daemon keeps up with at default
    settings (`_rate_project`: slots spread over each second, not a burst). The rate
    grows by `factor` from `start` until a step fails -- a slot without its one row, a
    run not `success`, or fire lateness p99 over 100 ms -- or `most` is passed. Returns
    the highest passing step's figures (rate 0: none passed) and the first failing one's."""
    passed: dict = {"rate": 0}
    failed: dict = {}
    k = start
    while k <= most:
        step = _rate_step(k, seconds, warm_s)
        ok = step["once"] and step["all_ok"] and step["p99_ms"] <= 100
        print(f"   sustained {step['rate']:>5} slots/s: {step['runs']} runs of "
              f"{step['expected']}, p50 {step['p50_ms']:.1f} p99 {step['p99_ms']:.1f} ms, "
              f"daemon CPU {step['cpu_pct']:.0f} %, {'pass' if ok else 'FAIL'}",
              flush=True)  # fmt: skip
        if not ok:
            failed = step
            break
        passed = step
        k = int(k * factor)
    return {"passed": passed, "failed": failed}


def first_runs(schedules: int, every_s: int, later: int) -> dict:
    """The lateness of each schedule's first run in a process against its later runs
    (ms): a daemon restarted just after a slot boundary on a history that knows its
    schedules, so its first slots come after READY and are fired by a running scheduler
    -- anything a first run does lazily (driver build, imports, threads) shows. A slot
    due before READY (a start-up slower than `every_s`) is left out, and so is the
    schedule: its first run came during start-up."""
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-first-") as tmp:
        base = Path(tmp)
        _project(base, schedules, every=f"{every_s}s", extra='catchup = "none"')
        proc, _ = _serve(base)
        _stop(proc)
        time.sleep(every_s - time.time() % every_s + 0.02)  # just after a slot
        restarted = time.time()
        proc, _ = _serve(base)
        ready_at = time.time()
        try:
            first_slot = (ready_at // every_s + 1) * every_s
            time.sleep(max(0.0, first_slot + every_s * later + 1.5 - time.time()))
        finally:
            _stop(proc)
        rows = [r for r in _rows(base, restarted) if r.trigger == "schedule"]
    by_schedule: dict[str, list] = {}
    for row in sorted(rows, key=lambda r: r.scheduled_at):
        by_schedule.setdefault(row.schedule, []).append(row)
    first, rest = [], []
    for slots in by_schedule.values():
        if slots[0].scheduled_at.timestamp() > ready_at and slots[0].lateness_s is not None:
            first.append(slots[0].lateness_s * 1000)
            rest += [r.lateness_s * 1000 for r in slots[1:] if r.lateness_s is not None]
    first.sort()
    rest.sort()
    return {
        "first_p50_ms": _pct(first, 50),
        "first_max_ms": first[-1] if first else float("nan"),
        "later_p50_ms": _pct(rest, 50),
        "schedules": len(first),
    }


def idle(schedules: int, seconds: float) -> dict:
    """An idle daemon's CPU and RSS; start to READY on a new project (the history is
    created and migrated) and on a restart (what systemd does: the history is current)."""
    with tempfile.TemporaryDirectory(prefix="flowerd-bench-idle-") as tmp:
        base = Path(tmp)
        _project(base, schedules, every="1d")  # fires at 00:00 UTC only
        proc, first_s = _serve(base)
        _stop(proc)
        proc, ready_s = _serve(base)
        try:
            time.sleep(2)
            cpu0 = _cpu_s(proc.pid)
            time.sleep(seconds)
            cpu_pct = (_cpu_s(proc.pid) - cpu0) / seconds * 100
            rss = _rss_mib(proc.pid)
        finally:
            _stop(proc)
    return {"first_s": first_s, "ready_s": ready_s, "cpu_pct": cpu_pct, "rss_mib": rss}


# --------------------------------------------------------------------------- baselines


def raw_hamilton_us() -> tuple[float, float]:
    """Median raw driver.execute of hello_world, sync and async (µs)."""
    from bench_pipeline import _amedian_us, _median_us
    from hamilton import async_driver, driver

    sys.path.insert(0, str(ROOT / "pipelines"))
    import hello_world

    raw = driver.Builder().with_modules(hello_world).build()
    sync_us = _median_us(lambda: raw.execute(["full_greeting"], inputs={"name": "b"}), 500)

    async def run_async() -> float:
        adriver = await async_driver.Builder().with_modules(hello_world).build()
        return await _amedian_us(lambda: adriver.execute(["full_greeting"], inputs={}), 500)

    return sync_us, asyncio.run(run_async())


def timer_lateness_ms(seconds: float) -> tuple[float, float]:
    """How late asyncio's own timer wakes at whole seconds (p50, p99 ms): the floor."""

    async def sample() -> list[float]:
        late: list[float] = []
        end = time.time() + seconds
        while time.time() < end:
            due = int(time.time()) + 1
            await asyncio.sleep(due - time.time())
            late.append((time.time() - due) * 1000)
        return sorted(late)

    late = asyncio.run(sample())
    return _pct(late, 50), _pct(late, 99)


# --------------------------------------------------------------------------- reads


# a fork+exec child starts from its parent's peak RSS (Linux keeps ru_maxrss across exec),
# so the peak is read through a small trampoline process rather than from this big one
_PEAK = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _run_measured(argv: list[str]) -> tuple[float, str]:
    """One command: wall seconds and stdout."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, done.stdout


def _median_command(argv: list[str], repeat: int) -> tuple[float, float, str]:
    """Median wall seconds, peak RSS (MiB) and the stdout of `argv`."""
    measured = [_run_measured(argv) for _ in range(repeat)]
    peak = subprocess.run(
        [sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, check=True
    )
    return statistics.median(m[0] for m in measured), int(peak.stdout) / 1024, measured[-1][1]


async def _stats_query_s(url: str, repeat: int) -> float:
    """`History.stats()` alone, in this process (no imports, no start-up): median s."""
    from daemon.history import History

    async with History.open(url, readonly=True) as history:
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            await history.stats()
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _store_durations(db_path: Path) -> None:
    """The duration a daemon stores with each ended row (fill_raw writes rows as an older
    schema did): without it `stats` had no percentiles to read. The migration's UPDATE."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute(
        "UPDATE runs SET duration_s = ROUND((julianday(finished_at) - julianday(started_at))"
        " * 86400.0, 3) WHERE started_at IS NOT NULL AND finished_at IS NOT NULL"
    )
    conn.execute("ANALYZE")
    conn.close()


def reads(total_rows: int, repeat: int) -> dict:
    from bench_history import fill_raw

    from daemon import history

    with tempfile.TemporaryDirectory(prefix="flowerd-bench-reads-") as tmp:
        folder = Path(tmp)
        db_path = folder / "million.db"
        asyncio.run(history.upgrade(f"sqlite+aiosqlite:///{db_path}"))
        fill_raw(db_path, total_rows)
        _store_durations(db_path)
        (folder / "project").mkdir()
        common = [FLOWERD, "--base-dir", str(folder / "project"), "--db", str(db_path)]
        stats_s, stats_mib, out = _median_command([*common, "stats", "--json"], repeat)
        json.loads(out)  # well-formed
        runs_s, _, out = _median_command([*common, "runs", "--limit", "50", "--json"], repeat)
        json.loads(out)
        bare_s, bare_mib, _ = _median_command([sys.executable, "-c", "pass"], repeat)
        query_s = asyncio.run(_stats_query_s(f"sqlite+aiosqlite:///{db_path}", repeat))
        started = time.perf_counter()
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        conn.execute("SELECT schedule, status, count(*) FROM runs GROUP BY 1, 2").fetchall()
        conn.close()
        raw_scan_s = time.perf_counter() - started
    return {
        "stats_s": stats_s,
        "stats_query_s": query_s,
        "stats_mib": stats_mib,
        "runs_s": runs_s,
        "bare_s": bare_s,
        "bare_mib": bare_mib,
        "raw_scan_s": raw_scan_s,
    }


# --------------------------------------------------------------------------- main


def _figure(name: str, value: float, unit: str, baseline: float | None, goal: str) -> dict:
    ratio = value / baseline if baseline else None
    return {
        "figure": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 4),
        "ratio": None if ratio is None else round(ratio, 2),
        "goal": goal,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def measure(
    *,
    sizes: tuple[int, ...],
    seconds: float,
    idle_n: int,
    rows: int,
    warm_s: float = 3,
    sustained_from: int = 200,
    sustained_most: int = 4000,
    quick_rate: bool = False,
) -> list[dict]:
    sync_us, async_us = raw_hamilton_us()
    timer_p50, timer_p99 = timer_lateness_ms(min(seconds, 5))
    figures = []
    for n in sizes:
        b = burst(n, seconds, warm_s=warm_s)
        figures += [
            _figure(f"burst {n}: fire lateness p50", b["p50_ms"], "ms", timer_p50, "<= 5"),
            _figure(
                f"burst {n}: fire lateness p99",
                b["p99_ms"],
                "ms",
                timer_p99,
                "<= 2" if n == 1 else "<= 20" if n <= 100 else "<= 100",
            ),  # fmt: skip
            _figure(
                f"burst {n}: CPU per run (mixed)",
                b["cpu_per_run_us"],
                "us",
                (sync_us + async_us) / 2,
                "",
            ),  # fmt: skip
            _figure(f"burst {n}: RSS", b["rss_mib"], "MiB", None, ""),
            _figure(f"burst {n}: runs recorded", b["runs"], "runs", None, ""),
            _figure(
                f"burst {n}: every slot once, all success",
                float(b["once"] and b["all_ok"]),
                "bool",
                None,
                "1",
            ),  # fmt: skip
        ]
    n = max(sizes)  # where the concurrency limit (default 16) puts the rest of a burst
    b = burst(n, seconds, warm_s=warm_s, settings=f"max_concurrent_runs = {n}\n")
    figures += [
        _figure(f"burst {n}, limit {n}: fire lateness p50", b["p50_ms"], "ms", timer_p50, ""),
        _figure(f"burst {n}, limit {n}: fire lateness p99", b["p99_ms"], "ms", timer_p99, ""),
    ]
    n_async = max(sizes[1:] or sizes)
    b = burst(n_async, seconds, mixed=False, warm_s=warm_s)
    figures.append(
        _figure(
            f"burst {n_async} async: CPU per run", b["cpu_per_run_us"], "us", async_us, "<= 300"
        )  # fmt: skip
    )
    # what the default log level costs: at INFO each run's log keeps flowerd's two lines
    b = burst(n_async, seconds, mixed=False, warm_s=warm_s, settings='log_level = "WARNING"\n')
    figures.append(
        _figure(
            f"burst {n_async} async, WARNING: CPU per run",
            b["cpu_per_run_us"],
            "us",
            async_us,
            "",
        )  # fmt: skip
    )
    figures += _rate_figures(
        sustained(sustained_from, seconds if quick_rate else min(seconds, 10),
                  most=sustained_most, warm_s=warm_s),
        timer_p99,
    )  # fmt: skip
    n = max(sizes[1:] or sizes)
    f = first_runs(n, every_s=2 if seconds < 5 else 5, later=2 if seconds < 5 else 4)
    figures += [
        _figure(f"first run of {n} schedules: lateness p50", f["first_p50_ms"], "ms",
                f["later_p50_ms"], "<= 2x later runs"),
        _figure(f"first run of {n} schedules: lateness max", f["first_max_ms"], "ms",
                f["later_p50_ms"], ""),
        _figure(f"first run of {n}: schedules that ran", f["schedules"], "runs", None, f"{n}"),
    ]  # fmt: skip
    i = idle(idle_n, seconds)
    figures += [
        _figure(f"idle {idle_n} schedules: CPU", i["cpu_pct"], "%", None, "<= 0.5"),
        _figure(f"idle {idle_n} schedules: RSS", i["rss_mib"], "MiB", None, "<= 130"),
        _figure(f"start to READY, {idle_n} schedules", i["ready_s"], "s", None, "<= 1"),
        _figure(f"first start to READY (new history), {idle_n}", i["first_s"], "s", None, ""),
    ]
    r = reads(rows, 3 if rows < 100_000 else 5)
    figures += [
        _figure(
            f"History.stats() query, {rows:,} rows",
            r["stats_query_s"],
            "s",
            r["raw_scan_s"],
            "<= 0.3",
        ),  # fmt: skip
        _figure(
            f"`flowerd stats` whole command, {rows:,} rows",
            r["stats_s"],
            "s",
            r["raw_scan_s"],
            "<= 0.3",
        ),  # fmt: skip
        _figure(
            f"`flowerd stats` peak RSS, {rows:,} rows",
            r["stats_mib"],
            "MiB",
            r["bare_mib"],
            "<= 100",
        ),  # fmt: skip
        _figure(
            f"`flowerd runs --limit 50`, {rows:,} rows", r["runs_s"], "s", r["bare_s"], "<= 0.25"
        ),  # fmt: skip
    ]
    return figures


def _rate_figures(rate: dict, timer_p99: float) -> list[dict]:
    best, over = rate["passed"], rate["failed"]
    return [
        _figure("sustained: highest rate, p99 <= 100 ms, all once", best["rate"], "slots/s",
                None, ">= 1000"),
        _figure("sustained: lateness p99 at that rate", best.get("p99_ms", 0.0), "ms",
                timer_p99, "<= 100"),
        _figure("sustained: daemon CPU at that rate", best.get("cpu_pct", 0.0), "%", None, ""),
        _figure("sustained: CPU per run at that rate", best.get("cpu_per_run_us", 0.0), "us",
                None, ""),
        _figure("sustained: next step (failed): p99", over.get("p99_ms", 0.0), "ms", None,
                f"at {over.get('rate', '-')}/s: {over.get('runs', 0)} of "
                f"{over.get('expected', 0)} runs"),
    ]  # fmt: skip


def measure_hot(*, seconds: float, warm_s: float = 3, rate_from: int = 200) -> list[dict]:
    """Issue 27's goals 2-4 alone (`--hot`): the burst of 100 at the default limit against
    the timer, CPU per async run against raw Hamilton, and the sustained rate."""
    _, async_us = raw_hamilton_us()
    timer_p50, timer_p99 = timer_lateness_ms(min(seconds, 5))
    b = burst(100, seconds, warm_s=warm_s)
    a = burst(100, seconds, mixed=False, warm_s=warm_s)
    figures = [
        _figure("burst 100: fire lateness p50", b["p50_ms"], "ms", timer_p50, ""),
        _figure("burst 100: fire lateness p99", b["p99_ms"], "ms", timer_p99, "<= 10x timer"),
        _figure("burst 100: every slot once, all success", float(b["once"] and b["all_ok"]),
                "bool", None, "1"),
        _figure("burst 100 async: CPU per run", a["cpu_per_run_us"], "us", async_us,
                "<= 3x raw"),
    ]  # fmt: skip
    figures += _rate_figures(sustained(rate_from, min(seconds, 10), warm_s=warm_s), timer_p99)
    return figures


def print_table(figures: list[dict]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"   load average at the end: {load} ({os.cpu_count()} cores)")
    print(f"   {'figure':<44} {'value':>10} {'unit':<5} {'baseline':>9} {'ratio':>7}  goal")
    for f in figures:
        base = "" if f["baseline"] is None else f"{f['baseline']:9.3f}"
        ratio = "" if f["ratio"] is None else f"{f['ratio']:6.2f}x"
        print(
            f"   {f['figure']:<44} {f['value']:>10.3f} {f['unit']:<5} {base:>9} {ratio:>7}  "
            f"{f['goal']}"
        )


def main(
    quick: bool = False,
    seconds: float | None = None,
    rows: int | None = None,
    out=RESULTS,
    hot: bool = False,
) -> list[dict]:
    if hot:
        figures = measure_hot(seconds=seconds or 10, rate_from=rows or 200)
    elif quick:
        figures = measure(
            sizes=(4,), seconds=seconds or 1.5, idle_n=20, rows=rows or 2000, warm_s=1,
            sustained_from=20, sustained_most=20, quick_rate=True,
        )  # fmt: skip
    else:
        figures = measure(
            sizes=(1, 100, 500), seconds=seconds or 30, idle_n=1000, rows=rows or 1_000_000
        )
    print_table(figures)
    load = os.getloadavg()
    Path(out).write_text(json.dumps({"load_average": load, "figures": figures}, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny N, a few seconds")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rows", type=int)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--hot", action="store_true",
        help="issue 27's goals 2-4 alone: burst 100, CPU per async run, sustained rate "
        "(--rows: the first rate tried, default 200)",
    )  # fmt: skip
    args = parser.parse_args()
    main(args.quick, args.seconds, args.rows, args.out, args.hot)
