"""History on PostgreSQL: the same code, a different URL (asyncpg).

Runs when FLOWERD_TEST_POSTGRES_URL names a server whose user may create databases
(.ci/run starts the machine's PostgreSQL and sets it); skipped otherwise. Each test gets
a database of its own."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.history import History, RunError
from tests import pg
from tests.contract import flowerd_here
from tests.serve import Served, make_project, wait_for

pytestmark = [pg.needs_postgres, pytest.mark.timeout(300)]
pg_url = pg.pg_url  # a fresh database per test
T0 = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)


async def test_slot_ledger_and_group_commit(pg_url: str):
    async with History.open(pg_url) as history:
        claims = await asyncio.gather(
            *(
                history.claim(
                    pipeline="p",
                    trigger="schedule",
                    schedule="s",
                    scheduled_at=T0 + timedelta(seconds=i % 100),
                    async_driver=True,
                )  # fmt: skip
                for i in range(200)
            )
        )
        ids = [c for c in claims if c is not None]
        assert len(ids) == 100 and history.commits < 20  # each slot once, grouped commits
        await asyncio.gather(
            *(history.mark_running(i, started_at=T0 + timedelta(seconds=1)) for i in ids)
        )
        await asyncio.gather(
            *(
                history.finish(
                    i,
                    status="failed",
                    finished_at=T0 + timedelta(seconds=3),
                    attempts=1,
                    error=RunError(type="ValueError", message="no"),
                )  # fmt: skip
                for i in ids
            )
        )
        rows = await history.list_runs(schedule="s", status="failed", limit=0)
        assert len(rows) == 100 and rows[0].duration_s == 2.0
        stats = await history.stats()
        json.dumps(stats)  # PostgreSQL's numeric durations come back as floats
        assert stats[0]["p50_s"] == 2.0 and stats[0]["failures"] == 100


async def test_crashed_rows_are_reaped(pg_url: str):
    async with History.open(pg_url) as history:
        run_id = await history.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
    async with History.open(pg_url) as history:  # a daemon starting up finds it
        (crashed,) = await history.reap_crashed(now=T0)
        assert crashed.id == run_id and crashed.status == "crashed"
        assert f"pid {os.getpid()}" in crashed.error.message
        assert (await history.get_run(run_id)).finished_at == T0


def test_the_daemon_on_postgresql(tmp_path: Path, pg_url: str):
    base = make_project(
        tmp_path, '[tick]\npipeline = "hello_world"\ninterval = "1s"\nasync_driver = false\n'
    )
    env = {"FLOWERD_DATABASE_URL": pg_url}
    with Served(base, env=env) as served:
        served.wait_ready()

        def succeeded() -> int:
            done = flowerd_here(base, "runs", "--status", "success", "--json", env=env)
            return len(json.loads(done.stdout)) >= 2

        wait_for(succeeded, what="two runs recorded in PostgreSQL")
        assert served.stop() == 0
    done = flowerd_here(base, "stats", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["schedules"][0]["successes"] >= 2
