"""Run ids are never reused, and pruning keeps what catch-up needs (issue 15, items 2-3)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import history
from daemon.history import SCHEMA_REVISION, History
from tests.contract import flowerd as cli
from tests.pg import ADMIN_URL, pg_url  # noqa: F401 - the fixture

T0 = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)


def indexes(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        found = {
            (row[0], row[1])
            for row in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='runs'"
            )
        }
    conn.close()
    return found


async def finished_runs(h: History, count: int, *, schedule: str = "s", start: int = 0) -> list:
    ids = []
    for minute in range(start, start + count):
        run_id = await h.claim(
            pipeline="p",
            trigger="schedule",
            schedule=schedule,
            scheduled_at=T0 + timedelta(minutes=minute),
            async_driver=True,
        )
        ids.append(run_id)
    await _finished_raw(h, ids)  # the schema may be older than this code's finish write
    return ids


async def _finished_raw(h: History, ids: list[int]) -> None:
    """Finish the runs as the flowerd of the database's schema did: this code's finish
    writes columns (duration_s) that an older schema does not have yet."""
    from daemon.settings import sqlite_path

    path = sqlite_path(h.url)
    if path is not None and "duration_s" not in _columns(path):
        with sqlite3.connect(path) as conn:
            conn.executemany(
                "UPDATE runs SET status = 'success', finished_at = ?, attempts = 1 WHERE id = ?",
                [(T0.strftime("%Y-%m-%d %H:%M:%S.%f"), run_id) for run_id in ids],
            )
        conn.close()
        return
    for run_id in ids:
        await h.finish(run_id, status="success", finished_at=T0, attempts=1)


def _columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        found = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    return found


async def test_upgrade_with_rows_keeps_them_and_ids_continue_past_the_max(
    db_url: str, db_path: Path
):
    await history.upgrade(db_url, "20261130_03")  # the revision before AUTOINCREMENT
    before_indexes = indexes(db_path)
    async with History.open(db_url, migrate=False) as h:
        ids = await finished_runs(h, 5)
    assert await history.upgrade(db_url, "20261130_02") == "20261130_02"
    with sqlite3.connect(db_path) as conn:
        assert (
            "AUTOINCREMENT"
            in conn.execute("SELECT sql FROM sqlite_master WHERE name='runs'").fetchone()[0]
        )
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 5
        conn.execute("DELETE FROM runs")  # every row gone, as after `db prune --older-than 0`
    conn.close()
    # the same indexes, the unique slot key among them
    assert {name for name, _ in indexes(db_path)} == {name for name, _ in before_indexes}
    async with History.open(db_url) as h:
        [new_id] = await finished_runs(h, 1, start=100)
    assert new_id == max(ids) + 1
    assert await history.downgrade(db_url, "20261130_01") == "20261130_01"
    assert await history.upgrade(db_url) == SCHEMA_REVISION


async def test_a_new_database_never_reuses_an_id(db_url: str):
    async with History.open(db_url) as h:
        ids = await finished_runs(h, 3)
        assert await h.prune(before=T0 + timedelta(days=1)) >= 2
        [new_id] = await finished_runs(h, 1, start=10)
    assert new_id == max(ids) + 1


@pytest.mark.skipif(not ADMIN_URL, reason="FLOWERD_TEST_POSTGRES_URL is not set")
async def test_postgres_upgrade_with_rows_and_ids_are_not_reused(pg_url: str):  # noqa: F811
    await history.upgrade(pg_url)  # a sequence never reuses: the rows at the head schema
    async with History.open(pg_url, migrate=False) as h:
        ids = await finished_runs(h, 3)
    assert await history.upgrade(pg_url) == SCHEMA_REVISION
    async with History.open(pg_url) as h:
        assert await h.prune(before=T0 + timedelta(days=1)) == 2
        [new_id] = await finished_runs(h, 1, start=10)
        assert (await h.get_run(new_id)).attempt_errors == []
    assert new_id == max(ids) + 1
    assert await history.downgrade(pg_url, "20261130_01") == "20261130_01"


async def test_reading_an_older_schema_says_to_upgrade(base_dir: Path, db_url: str):
    await history.upgrade(db_url, "20261130_01")
    async with History.open(db_url, migrate=False) as h:
        await finished_runs(h, 1)
    done = await asyncio.to_thread(cli, base_dir, "runs")
    assert done.returncode == 1
    assert "older than this flowerd's" in done.stderr and "flowerd db upgrade" in done.stderr
    assert (await asyncio.to_thread(cli, base_dir, "db", "upgrade")).returncode == 0
    done = await asyncio.to_thread(cli, base_dir, "runs", "--json")
    assert done.returncode == 0, done.stderr
    [run] = json.loads(done.stdout)
    assert run["attempt_errors"] == []
