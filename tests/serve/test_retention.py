"""Pruning keeps the ledger's memory; `db prune` shows and asks; `retention` prunes in the
daemon (issue 15, item 3)."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.history import History
from daemon.settings import load_settings
from tests.contract import FLOWERD, bound
from tests.serve import Served, cli, make_project, runs, wait_for

EVERY_SECOND = """
[tick]
pipeline = "hello_world"
interval = "1s"
catchup = "none"
final_vars = ["full_greeting"]
"""

YEARLY = """
[tick]
pipeline = "hello_world"
cron = "@yearly"
final_vars = ["full_greeting"]
"""

OLD = datetime.now(UTC) - timedelta(days=10)


def seed(base: Path, count: int, *, schedule: str = "tick") -> None:
    async def write() -> None:
        async with History.open(load_settings(base).db_url) as h:
            for n in range(count):
                slot = OLD + timedelta(minutes=n)
                run_id = await h.claim(
                    pipeline="hello_world",
                    trigger="schedule",
                    schedule=schedule,
                    scheduled_at=slot,
                    async_driver=True,
                )
                status = "failed" if n % 2 else "success"
                await h.finish(run_id, status=status, finished_at=slot, attempts=1)

    asyncio.run(write())


def test_prune_dry_run_shows_counts_and_deletes_nothing(tmp_path: Path):
    base = make_project(tmp_path / "p", YEARLY)
    seed(base, 5)
    done = cli(base, "db", "prune", "--older-than", "1d", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "4 run(s) finished before" in done.stdout  # the newest slot stays
    assert "tick" in done.stdout and "success" in done.stdout and "failed" in done.stdout
    assert len(runs(base)) == 5


def test_prune_refuses_to_guess_on_a_pipe_and_deletes_with_yes(tmp_path: Path):
    base = make_project(tmp_path / "p", YEARLY)
    seed(base, 5)
    refused = cli(base, "db", "prune", "--older-than", "1d")
    assert refused.returncode == 1
    assert "--yes" in refused.stderr and "Traceback" not in refused.stderr
    assert len(runs(base)) == 5
    done = cli(base, "db", "prune", "--older-than", "1d", "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 4 run(s)" in done.stdout
    [kept] = runs(base)
    assert kept.scheduled_at == OLD + timedelta(minutes=4)


@pytest.mark.slow  # sized down: tests/history/test_history.py, last_slots after a prune
def test_catch_up_still_knows_the_last_slot_after_a_prune(tmp_path: Path):
    base = make_project(tmp_path / "p", EVERY_SECOND)
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base, status="success")) >= 2, what="two runs")
        assert served.stop() == 0
    done = cli(base, "db", "prune", "--older-than", "0s", "--yes")
    assert done.returncode == 0, done.stderr
    [kept] = runs(base)
    time.sleep(2.5)  # slots pass while no daemon runs
    with Served(base) as served:
        served.wait_ready()
        missed = wait_for(
            lambda: [r for r in runs(base, status="missed") if r.scheduled_at > kept.scheduled_at],
            what="the downtime's slots recorded missed",
        )
        assert served.stop() == 0
    assert all(r.trigger == "catchup" for r in missed)


def test_retention_setting_prunes_in_the_daemon(tmp_path: Path):
    base = make_project(tmp_path / "p", YEARLY)
    seed(base, 7)
    seed(base, 2, schedule="gone")  # a schedule no longer in the files keeps its newest too
    with Served(base, env={"FLOWERD_RETENTION": "1d"}) as served:
        served.wait_ready()
        left = wait_for(lambda: len(runs(base)) == 2 and runs(base), what="the prune")
        assert served.stop() == 0
    assert {r.schedule for r in left} == {"tick", "gone"}
    assert "retention: pruned 7 finished run(s) older than 1d" in served.log


def test_prune_asks_on_a_terminal(tmp_path: Path):
    """A real pseudo-terminal as stdin: the question is asked; 'n' deletes nothing."""
    base = make_project(tmp_path / "p", YEARLY)
    seed(base, 3)
    answers = {"n\n": 3, "y\n": 1}
    for answer, left in answers.items():
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(
                [FLOWERD, "--base-dir", str(base), "db", "prune", "--older-than", "1d"],
                stdin=follower,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.write(leader, answer.encode())
            out, err = proc.communicate(timeout=bound(60))
        finally:
            os.close(leader)
            os.close(follower)
        assert proc.returncode == 0, err
        assert "delete these 2 run(s)?" in out
        assert len(runs(base)) == left
