"""The start of the reliability suite: kill the daemon at random, fuzz its input.

Invariants, whatever happens: every slot of a schedule is exactly one row (no slot
lost, none run twice) and, once a daemon has started again, no row is left active."""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.contract import bound, sized
from tests.serve import Served, make_project, rows_where, runs, wait_for

pytestmark = pytest.mark.timeout(300)

SLEEPY = """
import asyncio

async def slept(seconds: float = 1.5) -> float:
    await asyncio.sleep(seconds)
    return seconds
"""


def test_random_kill_9_loses_no_slot_and_runs_none_twice(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [tick]
        pipeline = "hello_world"
        interval = "1s"
        catchup = "all"

        [sleepy]
        pipeline = "sleepy"
        interval = "1s"
        overlap = "allow"
        catchup = "latest"
        """,
        sleepy=SLEEPY,
    )
    rng = random.Random(20261124)
    for life in range(sized(2, 8)):  # lives killed mid-run
        with Served(base) as served:
            served.wait_ready()
            wait_for(
                lambda: rows_where(base, status="running", schedule="sleepy"),
                what="a sleepy run in flight",
            )
            # the first life is killed at once, inside a 1.5 s run, so that at least one kill
            # lands mid-run even when the sized-down trial has only two lives
            time.sleep(0.0 if life == 0 else rng.uniform(0.0, 1.5))
            served.kill()
    with Served(base) as served:  # a last, clean life: reaps, catches up, drains
        served.wait_ready()
        time.sleep(1.5)
        assert served.stop() == 0
    rows = runs(base)
    assert not [r for r in rows if r.status in ("queued", "running")]
    assert any(r.status == "crashed" for r in rows)  # the kills did land mid-run
    for schedule in ("tick", "sleepy"):
        slots = sorted(r.scheduled_at for r in rows if r.schedule == schedule)
        assert len(slots) == len(set(slots)), f"{schedule}: a slot has two rows"
        gaps = {b - a for a, b in zip(slots, slots[1:], strict=False)}
        assert gaps == {timedelta(seconds=1)}, f"{schedule}: slots missing: {gaps}"


SLOW_RUN = SLEEPY.replace("1.5", "4.0")


def test_kill_9_while_catch_up_runs_leaves_no_slot_undecided(tmp_path: Path):
    """The catch-up of a restart runs its slots one after the other; a live slot fires
    meanwhile and is claimed. A kill -9 then, before the second catch-up slot has run:
    the next start reads its last slot past the gap -- so every catch-up slot must have
    its row (claimed `queued`) before any live slot is claimed, or it is never decided."""
    base = make_project(
        tmp_path,
        """
        [slow]
        pipeline = "slow"
        interval = "1s"
        catchup = "all"
        overlap = "allow"
        """,
        slow=SLOW_RUN,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: runs(base), what="the first slot's row")
        served.kill()
    time.sleep(2.5)  # slots pass with no daemon: the next start catches up two or more
    with Served(base) as served:
        served.wait_ready()  # catch-up is decided before the control socket answers
        wait_for(lambda: rows_where(base, trigger="schedule", status="running"),
                 what="a live slot's run")  # fmt: skip
        served.kill()  # the first catch-up run (4 s) is still going
    with Served(base, env={"FLOWERD_SHUTDOWN_GRACE": "1"}) as served:  # queued: cancelled
        served.wait_ready()
        assert served.stop() == 0
    slots = sorted(r.scheduled_at for r in runs(base, schedule="slow"))
    assert len(slots) == len(set(slots)), "a slot has two rows"
    gaps = {b - a for a, b in zip(slots, slots[1:], strict=False)}
    assert gaps == {timedelta(seconds=1)}, f"slots missing: {gaps}"
    # the trial did what it says: the outage left slots to catch up, and the kill landed
    assert len(runs(base, schedule="slow", trigger="catchup")) >= 2
    assert runs(base, schedule="slow", status="crashed")


def test_a_stderr_nobody_reads_never_stops_the_slots(tmp_path: Path):
    """stderr is a pipe whose reader hangs (a stuck journald, a full pipe): the daemon's
    lines wait in their own thread, and every slot still runs and is recorded."""
    import subprocess

    from tests.contract import FLOWERD

    schedules = "".join(f'[s{i}]\npipeline = "hello_world"\ninterval = "1s"\n' for i in range(60))
    base = make_project(tmp_path, schedules)
    proc = subprocess.Popen(
        [FLOWERD, "--base-dir", str(base), "--log-level", "DEBUG", "serve", "--http", "off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # never read: 64 KiB of lines fill it within seconds
        env={k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")},
    )
    try:
        wait_for(lambda: len(runs(base)) >= 60, timeout_s=30, what="the first slots")
        time.sleep(8)  # ~30 KB of lines a second: the pipe has long been full by now
        since = time.time() - 3
        recent = [r for r in runs(base) if r.scheduled_at.timestamp() >= since]
        assert len(recent) >= 100, f"{len(recent)} slots in the last 3 s: the loop is stuck"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=bound(30))
        proc.stderr.close()
