"""daemon.history against real SQLite files: the slot ledger, the writer, the queries."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.errors import HistoryError, RunNotFound, UsageError
from daemon.history import (
    SCHEMA_REVISION,
    STATUSES,
    TERMINAL,
    History,
    RunError,
    is_secret_key,
    percentile,
    redact,
)
from tests.contract import CONTRACT_KEYS, bound

T0 = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)


async def one_run(history: History, schedule: str, slot: datetime, status: str = "success"):
    run_id = await history.claim(
        pipeline="hello_world",
        trigger="schedule",
        schedule=schedule,
        scheduled_at=slot,
        async_driver=True,
    )
    await history.mark_running(run_id, started_at=slot + timedelta(seconds=1))
    error = (
        RunError(type="ValueError", message="no", traceback="tb") if status != "success" else None
    )
    await history.finish(
        run_id, status=status, finished_at=slot + timedelta(seconds=3), attempts=1, error=error
    )
    return run_id


async def test_files_are_private_and_schema_at_head(db_url: str, db_path: Path):
    async with History.open(db_url):
        pass
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == (
            SCHEMA_REVISION
        )
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_slot_key_is_unique_and_manual_runs_never_collide(db_url: str):
    async with History.open(db_url, instance_id="i-1") as history:
        first = await history.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
        again = await history.claim(
            pipeline="p", trigger="catchup", schedule="s", scheduled_at=T0, async_driver=False
        )
        slot = await history.record_slot(
            schedule="s", pipeline="p", scheduled_at=T0, status="missed"
        )
        manual = [await history.claim(pipeline="p", trigger="manual", async_driver=True)]
        manual.append(await history.claim(pipeline="p", trigger="manual", async_driver=True))
        same_batch = await asyncio.gather(
            *(
                history.claim(
                    pipeline="p",
                    trigger="schedule",
                    schedule="s",
                    scheduled_at=T0 + timedelta(minutes=1),
                    async_driver=True,
                )
                for _ in range(5)
            )
        )
        assert isinstance(first, int)
        assert again is None and slot is None
        assert None not in manual and manual[0] != manual[1]
        assert sum(1 for run_id in same_batch if run_id is not None) == 1
        record = await history.get_run(first)
    assert record.trigger == "schedule" and record.status == "queued"
    assert record.instance_id == "i-1" and record.pid == os.getpid() and record.host


async def test_record_round_trip_and_json_contract(db_url: str):
    async with History.open(db_url) as history:
        run_id = await history.claim(
            pipeline="hello_world",
            trigger="schedule",
            schedule="nightly",
            scheduled_at=T0,
            async_driver=False,
            final_vars=["full_greeting"],
            inputs={"name": "World", "db": {"password": "hunter2"}, "apiKey": "k", "n": 3},
        )
        await history.mark_running(run_id, started_at=T0 + timedelta(seconds=0.25))
        await history.finish(
            run_id,
            status="failed",
            finished_at=T0 + timedelta(seconds=2.25),
            attempts=3,
            error=RunError(type="KeyError", message="'x'", traceback="Traceback ..."),
        )
        record = await history.get_run(run_id)
    doc = json.loads(json.dumps(record.to_json()))
    assert CONTRACT_KEYS <= set(doc)
    assert doc["scheduled_at"] == "2026-11-24T02:30:00+00:00"
    assert doc["started_at"] == "2026-11-24T02:30:00.250000+00:00"
    assert doc["duration_s"] == 2.0 and doc["lateness_s"] == 0.25
    assert doc["attempts"] == 3 and doc["async_driver"] is False
    assert doc["error"] == {"type": "KeyError", "message": "'x'", "traceback": "Traceback ..."}
    assert doc["inputs"] == {"name": "World", "db": {"password": "***"}, "apiKey": "***", "n": 3}
    assert doc["final_vars"] == ["full_greeting"]
    assert record.scheduled_at.tzinfo is not None


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("apiKey", True),
        ("AUTH_TOKEN", True),
        ("client-secret", True),
        ("key", True),
        ("name", False),
        ("keyword", False),
        ("monkey", False),
        ("tokens_per_batch", False),
    ],
)
def test_secret_looking_keys(key: str, secret: bool):
    assert is_secret_key(key) is secret


def test_redact_makes_inputs_json_safe():
    assert redact({"when": T0, "xs": (1, 2), "token": 5}) == {
        "when": repr(T0),
        "xs": [1, 2],
        "token": "***",
    }


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


async def test_group_commit_200_concurrent_runs_nothing_lost(db_url: str):
    async with History.open(db_url) as history:
        await one_run(history, "warm", T0)
        commits_before = history.commits
        ids = await asyncio.wait_for(
            asyncio.gather(*(one_run(history, "g", T0 + timedelta(seconds=i)) for i in range(200))),
            timeout=bound(30),
        )
        commits = history.commits - commits_before
        rows = await history.list_runs(schedule="g", limit=0)
    assert len(set(ids)) == 200
    assert len(rows) == 200 and {row.status for row in rows} == {"success"}
    assert all(row.finished_at and row.started_at for row in rows)
    assert commits < 60, f"{commits} commits for 600 writes: not grouped"


async def test_finish_lands_even_if_the_calling_task_is_cancelled(db_url: str, db_path: Path):
    async with History.open(db_url) as history:
        run_id = await history.claim(pipeline="p", trigger="manual", async_driver=True)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer now waits for the lock
        try:
            task = asyncio.create_task(
                history.finish(run_id, status="cancelled", finished_at=T0, attempts=0)
            )
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.sleep(0.05)
            assert not task.done(), "finish() must wait for its row before re-raising"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=bound(10))
        record = await history.get_run(run_id)
    assert record.status == "cancelled" and record.finished_at == T0


async def test_close_drains_queued_writes(db_url: str):
    history = await History.open(db_url)
    run_id = await history.claim(pipeline="p", trigger="manual", async_driver=True)
    pending = asyncio.ensure_future(
        history.finish(run_id, status="success", finished_at=T0, attempts=1)
    )
    await asyncio.sleep(0)  # queued, not yet committed
    await history.close()
    await asyncio.wait_for(pending, timeout=bound(5))
    async with History.open(db_url, readonly=True) as reader:
        assert (await reader.get_run(run_id)).status == "success"
    with pytest.raises(HistoryError, match="closed"):
        await history.claim(pipeline="p", trigger="manual", async_driver=True)


async def test_reap_crashed_turns_leftovers_into_crashed_rows(db_url: str, db_path: Path):
    async with History.open(db_url, instance_id="dead-1") as dead:
        queued = await dead.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
        running = await dead.claim(pipeline="p", trigger="manual", async_driver=True)
        await dead.mark_running(running, started_at=T0)
        alive = await dead.claim(pipeline="p", trigger="manual", async_driver=True)
        done = await one_run(dead, "s", T0 + timedelta(minutes=1))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with sqlite3.connect(db_path) as conn:  # a `flowerd run` still alive on this host
            conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (sleeper.pid, alive))
        conn.close()
        async with History.open(db_url, instance_id="new") as history:
            started = time.perf_counter()
            reaped = await history.reap_crashed(now=T0 + timedelta(hours=1))
            took_s = time.perf_counter() - started
            states = {i: (await history.get_run(i)).status for i in (queued, running, alive, done)}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(r.id for r in reaped) == sorted([queued, running])
    assert states == {queued: "crashed", running: "crashed", alive: "queued", done: "success"}
    error = reaped[0].error
    assert error.type == "Crashed"
    assert f"pid {os.getpid()}" in error.message and "instance dead-1" in error.message
    assert reaped[0].finished_at == T0 + timedelta(hours=1)
    assert took_s < 1.0


async def test_last_slots_and_pause_survive_a_restart(db_url: str):
    async with History.open(db_url) as history:
        await one_run(history, "a", T0)
        await one_run(history, "a", T0 + timedelta(minutes=5))
        await history.record_slot(
            schedule="b", pipeline="p", scheduled_at=T0, status="skipped", trigger="schedule"
        )
        await history.claim(
            pipeline="p",
            trigger="manual",
            schedule="a",
            scheduled_at=T0 + timedelta(days=1),
            async_driver=True,
        )
        await history.set_paused("a", True)
        await history.set_paused("a", True)
        await history.set_paused("b", True)
        await history.set_paused("b", False)
    async with History.open(db_url) as history:
        assert await history.last_slots() == {"a": T0 + timedelta(minutes=5), "b": T0}
        assert await history.paused() == {"a"}


async def test_list_runs_filters_newest_first(db_url: str):
    async with History.open(db_url) as history:
        for i in range(6):
            await one_run(
                history,
                "even" if i % 2 == 0 else "odd",
                T0 + timedelta(hours=i),
                "failed" if i == 4 else "success",
            )
        manual = await history.claim(
            pipeline="other",
            trigger="manual",
            async_driver=True,
            started_at=T0 + timedelta(hours=10),
            status="running",
        )
        newest = await history.list_runs()
        assert [r.id for r in newest][0] == manual
        assert [r.scheduled_at for r in newest[1:]] == sorted(
            (r.scheduled_at for r in newest[1:]), reverse=True
        )
        assert len(await history.list_runs(schedule="even")) == 3
        assert [r.status for r in await history.list_runs(schedule="even", status="failed")] == [
            "failed"
        ]
        assert [r.id for r in await history.list_runs(pipeline="other")] == [manual]
        assert [r.id for r in await history.list_runs(trigger="manual")] == [manual]
        window = await history.list_runs(
            since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)
        )
        assert [r.scheduled_at for r in window] == [T0 + timedelta(hours=h) for h in (2, 1)]
        assert len(await history.list_runs(limit=2)) == 2
        assert len(await history.list_runs(limit=0)) == 7
        with pytest.raises(UsageError, match="did you mean 'failed'"):
            await history.list_runs(status="fialed")
        with pytest.raises(UsageError, match="unknown trigger"):
            await history.list_runs(trigger="cron")
        with pytest.raises(RunNotFound, match="no run 999"):
            await history.get_run(999)


async def test_stats_per_schedule_and_pipeline(db_url: str):
    async with History.open(db_url) as history:
        for i, status in enumerate(["success", "success", "failed", "timed_out"]):
            await one_run(history, "s", T0 + timedelta(minutes=i), status)
        await history.record_slot(
            schedule="s",
            pipeline="hello_world",
            scheduled_at=T0 + timedelta(hours=1),
            status="missed",
        )
        rows = await history.stats()
        recent = await history.stats(since=T0 + timedelta(minutes=2))
    by = {(row["kind"], row["name"]): row for row in rows}
    sched = by["schedule", "s"]
    assert (sched["runs"], sched["successes"], sched["failures"], sched["missed"]) == (4, 2, 2, 1)
    assert sched["success_rate"] == 0.5
    assert sched["p50_s"] == pytest.approx(2.0, abs=0.002)
    assert sched["p95_s"] == pytest.approx(2.0, abs=0.002)
    assert sched["last_status"] == "missed"
    assert sched["last_at"] == "2026-11-24T03:30:00+00:00"
    assert by["pipeline", "hello_world"]["runs"] == 4
    assert {row["name"]: row["runs"] for row in recent if row["kind"] == "schedule"} == {"s": 2}


async def test_stats_percentiles_count_only_rows_with_a_duration(db_url: str, db_path: Path):
    """p50 / p95 rank among the rows that have a duration: a name's rows less those
    without one (missed, cancelled before it started, still running or queued)."""
    async with History.open(db_url) as history:
        for i in range(23):
            slot = T0 + timedelta(minutes=i)
            run_id = await history.claim(
                pipeline="hello_world", trigger="schedule", schedule="s", scheduled_at=slot,
                async_driver=True, started_at=slot, status="running",
            )  # fmt: skip
            took = timedelta(seconds=(i * 7919) % 23 + 0.5)  # not in slot order
            await history.finish(run_id, status="success", finished_at=slot + took, attempts=1)
        for minutes, status in ((30, "missed"), (31, "cancelled"), (32, "skipped")):
            await history.record_slot(
                schedule="s", pipeline="hello_world", status=status,
                scheduled_at=T0 + timedelta(minutes=minutes),
            )  # fmt: skip
        await history.claim(
            pipeline="hello_world", trigger="schedule", schedule="s", async_driver=True,
            scheduled_at=T0 + timedelta(minutes=33), started_at=T0, status="running",
        )  # fmt: skip
        await history.claim(pipeline="hello_world", trigger="manual", async_driver=True)
        since = T0 + timedelta(minutes=5)
        found = {
            window: {(r["kind"], r["name"]): r for r in await history.stats(since=window)}
            for window in (None, since)
        }
    with sqlite3.connect(db_path) as conn:
        for window in (None, since):
            stamp = (window or T0 - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
            durations = sorted(
                value
                for (value,) in conn.execute(
                    "SELECT duration_s FROM runs WHERE duration_s IS NOT NULL AND run_at >= ?",
                    (stamp,),
                )
            )
            assert len(durations) == (23 if window is None else 18)
            for key in (("schedule", "s"), ("pipeline", "hello_world")):
                row = found[window][key]
                assert row["p50_s"] == pytest.approx(percentile(durations, 50), abs=0.001)
                assert row["p95_s"] == pytest.approx(percentile(durations, 95), abs=0.001)
    assert found[None]["pipeline", "hello_world"]["runs"] == 24  # 23 + the cancelled slot


async def test_prune_deletes_only_old_finished_runs(db_url: str):
    async with History.open(db_url) as history:
        for i in range(7):
            await one_run(history, "old", T0 + timedelta(seconds=i))
        await one_run(history, "new", T0 + timedelta(days=40))
        stuck = await history.claim(pipeline="p", trigger="manual", async_driver=True)
        deleted = await history.prune(before=T0 + timedelta(days=1), chunk_rows=3)
        left = {r.schedule for r in await history.list_runs(limit=0)}
        assert (await history.get_run(stuck)).status == "queued"
        last = await history.last_slots()
    assert deleted == 6  # "old" keeps its newest slot: catch-up starts from it
    assert left == {"old", "new", None}
    assert last["old"] == T0 + timedelta(seconds=6)


async def test_bad_write_arguments_are_refused_before_queueing(db_url: str):
    async with History.open(db_url) as history:
        with pytest.raises(UsageError, match="unknown status"):
            await history.claim(pipeline="p", trigger="manual", async_driver=True, status="ok")
        with pytest.raises(UsageError, match="unknown trigger"):
            await history.claim(pipeline="p", trigger="cron", async_driver=True)
        with pytest.raises(UsageError):
            await history.finish(1, status="running", finished_at=T0, attempts=0)
        with pytest.raises(ValueError, match="aware"):
            await history.mark_running(1, started_at=datetime(2026, 1, 1))
    assert set(STATUSES) - TERMINAL == {"queued", "running"}


async def test_readonly_without_a_database_is_empty_and_creates_nothing(db_url, db_path):
    async with History.open(db_url, readonly=True) as history:
        assert await history.list_runs() == []
        assert await history.stats() == []
        assert await history.last_slots() == {}
        with pytest.raises(RunNotFound):
            await history.get_run(1)
        with pytest.raises(HistoryError, match="read-only"):
            await history.claim(pipeline="p", trigger="manual", async_driver=True)
    assert not db_path.exists() and not db_path.parent.exists()


@pytest.mark.parametrize("readonly", [True, False])
async def test_corrupt_file_is_refused_naming_it(db_url, db_path: Path, readonly: bool):
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match=str(db_path)):
        await History.open(db_url, readonly=readonly)


@pytest.mark.parametrize("readonly", [True, False])
async def test_foreign_sqlite_file_is_refused(db_url, db_path: Path, readonly: bool):
    db_path.parent.mkdir()
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(HistoryError, match="not a flowerd history database"):
        await History.open(db_url, readonly=readonly)


@pytest.mark.parametrize("readonly", [True, False])
async def test_database_from_a_newer_flowerd_is_refused(db_url, db_path: Path, readonly: bool):
    async with History.open(db_url) as history:
        await one_run(history, "s", T0)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '29991231_01'")
    conn.close()
    with pytest.raises(HistoryError, match="newer flowerd") as caught:
        await History.open(db_url, readonly=readonly)
    assert str(db_path) in str(caught.value)
    with sqlite3.connect(db_path) as conn:  # never silently written
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == (
            "29991231_01"
        )
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    conn.close()


OPEN_AT_ONCE = """
import asyncio, sys, time
from daemon.history import History
async def main():
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    async with History.open(sys.argv[1]) as history:
        await history.claim(pipeline="p", trigger="manual", async_driver=True)
asyncio.run(main())
"""


def test_two_processes_bringing_a_new_database_to_head_at_once(db_url: str, db_path: Path):
    start_at = str(time.time() + 1.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, db_url, start_at],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [proc.communicate(timeout=bound(30))[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    conn.close()


READER = """
import asyncio, sys, time
from daemon.history import History
async def main():
    queries = locked = 0
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        try:
            async with History.open(sys.argv[1], readonly=True) as history:
                await history.list_runs(schedule="w", status="success", limit=20)
                await history.list_runs(limit=50)
            queries += 1
        except Exception as exc:
            if "locked" not in str(exc):
                raise
            locked += 1
    print(queries, locked)
asyncio.run(main())
"""


async def test_readers_in_other_processes_never_see_a_locked_database(db_url: str):
    async with History.open(db_url) as history:
        await one_run(history, "w", T0 - timedelta(days=1))
        readers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", READER, db_url, "3.0", stdout=asyncio.subprocess.PIPE
            )
            for _ in range(4)
        ]
        written = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while loop.time() < deadline:
            await asyncio.gather(
                *(one_run(history, "w", T0 + timedelta(seconds=written + i)) for i in range(50))
            )
            written += 50
        outputs = [await asyncio.wait_for(r.communicate(), timeout=bound(30)) for r in readers]
    results = [tuple(map(int, out.split())) for out, _ in outputs]
    assert [r.returncode for r in readers] == [0, 0, 0, 0]
    assert all(locked == 0 for _, locked in results), results
    assert all(queries > 0 for queries, _ in results), results
    assert written >= 200


async def test_slot_rows_queued_together_share_commits(tmp_path):
    """Catch-up queues its missed rows before awaiting any: one commit per batch."""
    import asyncio

    from daemon.history import History

    async with History.open(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}") as history:
        before = history.commits
        writes = [
            history.slot_write(
                schedule="s",
                pipeline="p",
                scheduled_at=T0 + timedelta(minutes=i),
                status="missed",
                trigger="catchup",
            )
            for i in range(500)
        ]
        ids = await asyncio.gather(*writes)
        assert len(set(ids)) == 500
        assert history.commits - before <= 2


async def test_rows_held_at_close_go_to_the_spool_and_the_next_open_writes_them(tmp_path):
    """A close while the database is locked spools what is held (a claim that never
    landed becomes a `cancelled` row: its pipeline never started); the next open writes
    it first. The long end-to-end version: tests/trials/test_faults.py (slow)."""
    import asyncio

    from daemon.history import History

    path = tmp_path / "h.db"
    url = f"sqlite+aiosqlite:///{path}"
    history = await History.open(url)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    claim = asyncio.ensure_future(
        history.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
    )
    await asyncio.sleep(2.5)  # past the writer's 2 s busy wait: an outage, held
    assert "unavailable" in history.health()
    await history.close(timeout_s=0.5)
    assert history.spooled == 1 and path.with_name("h.db.spool").exists()
    with pytest.raises(HistoryError):
        await claim
    locker.execute("ROLLBACK")
    locker.close()
    async with History.open(url) as again:
        [row] = await again.list_runs()
    assert row.status == "cancelled" and "never started" in row.error.message
    assert not path.with_name("h.db.spool").exists()


async def test_last_successes_are_each_schedules_newest_success_in_one_query(db_url: str):
    """What the metrics seed at start-up for many schedules (daemon.http.metrics):
    the same answer as asking each schedule for its newest success."""
    from daemon.http.metrics import SEED_ONE_BY_ONE, Metrics

    async with History.open(db_url) as history:
        await one_run(history, "a", T0)
        await one_run(history, "a", T0 + timedelta(hours=1))
        await one_run(history, "a", T0 + timedelta(hours=2), status="failed")
        await one_run(history, "b", T0, status="failed")
        await one_run(history, "c", T0 + timedelta(minutes=5))
        found = await history.last_successes()
        assert found == {
            "a": T0 + timedelta(hours=1, seconds=3),
            "c": T0 + timedelta(minutes=5, seconds=3),
        }
        few, many = Metrics(), Metrics()
        await few.seed(history, ["a", "b", "c"])
        filler = [f"x{i}" for i in range(SEED_ONE_BY_ONE)]
        await many.seed(history, ["a", "b", "c", *filler])
        assert few.last_success == {k: v for k, v in many.last_success.items() if k in "abc"}
        assert few.last_success["a"] == found["a"].timestamp()
