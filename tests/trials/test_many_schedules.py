"""Many schedules (issue 27 goal 1): a real `flowerd serve` with hundreds of daily
schedules and a few every-second ones, reloaded by SIGHUP with one daily file and one
ticking schedule changed while they tick (and one daily file edited keeping its size
and mtime): every slot across the reload is one row, none lost, none doubled.
And benchmarks/bench_schedules.py, sized down, runs and reports."""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

from tests.contract import sized
from tests.serve import Served, make_project, runs, wait_for

REPO = Path(__file__).resolve().parent.parent.parent
TICKS = ("tick_a", "tick_b", "tick_c", "tick_changed")


def _daily(first: int, count: int) -> str:
    return "\n".join(
        f'[d{i:05d}]\npipeline = "hello_world"\ncron = "{i % 60} {i % 24} * * *"\n'
        f'async_driver = false\nfinal_vars = ["full_greeting"]\ninputs = {{ name = "c{i}" }}\n'
        for i in range(first, first + count)
    )


def _ticks(name_of_changed: str) -> str:
    return "\n".join(
        f'[{tick}]\npipeline = "hello_world"\ninterval = "1s"\nasync_driver = false\n'
        f'inputs = {{ name = "{name_of_changed if tick == "tick_changed" else tick}" }}\n'
        for tick in TICKS
    )


def _slots(base: Path, schedule: str) -> list:
    return sorted(r.scheduled_at for r in runs(base, schedule=schedule) if r.trigger == "schedule")


def _edit_keeping_size_and_mtime(path: Path) -> None:
    """One table's input changed, the file's size and mtime as they were: an edit within
    one tick of the file clock. The reload must see it all the same."""
    stat = path.stat()
    text = path.read_text()
    path.write_text(text.replace('name = "c', 'name = "x', 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_a_reload_of_many_schedules_keeps_every_slot_once(tmp_path: Path):
    count, per_file = sized(300, 2_000), 100
    base = make_project(tmp_path)
    for first in range(0, count, per_file):
        (base / "schedules" / f"daily_{first:05d}.toml").write_text(_daily(first, per_file))
    (base / "schedules" / "ticks.toml").write_text(_ticks("before"))
    with Served(base) as served:
        served.wait_ready(timeout_s=60)
        wait_for(lambda: all(len(_slots(base, t)) >= 2 for t in TICKS), what="ticks before")
        (base / "schedules" / "daily_00000.toml").write_text(_daily(0, per_file - 1))
        (base / "schedules" / "ticks.toml").write_text(_ticks("after"))
        _edit_keeping_size_and_mtime(base / "schedules" / f"daily_{per_file:05d}.toml")
        served.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded:" in served.log, what="the reload")
        after = {tick: len(_slots(base, tick)) + 3 for tick in TICKS}
        wait_for(
            lambda: all(len(_slots(base, tick)) >= after[tick] for tick in TICKS),
            what="three more slots of each tick after the reload",
        )
        assert served.stop() == 0
    assert (
        f"1 removed (d{per_file - 1:05d}), 2 changed (d{per_file:05d}, tick_changed)" in served.log
    ), served.log
    for tick in TICKS:
        slots = _slots(base, tick)
        assert len(slots) == len(set(slots)), f"{tick}: a slot run twice"
        pairs = zip(slots, slots[1:], strict=False)
        gaps = [(a, b) for a, b in pairs if b - a != timedelta(seconds=1)]
        assert not gaps, f"{tick}: slots lost across the reload: {gaps}"


def test_the_bench_runs_sized_down(tmp_path: Path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_schedules
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    figures = bench_schedules.bench_layout(40, 20, idle_s=0.5, timeout_s=60)
    assert figures["json_count"] == 40
    assert figures["reload_summary"].startswith("0 added, 0 removed, 1 changed")
    for key in bench_schedules.GOALS:
        assert figures[key] >= 0
