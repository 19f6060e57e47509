"""The alembic environment: one head, upgrade from empty, down and up with rows present."""

from __future__ import annotations

import ast
import contextlib
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from daemon import history
from daemon.history import SCHEMA_REVISION, History, alembic_config, make_engine, metadata

T0 = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    conn.close()
    return names


def test_single_head_and_the_code_knows_it():
    heads = script().get_heads()
    assert heads == [SCHEMA_REVISION]


def test_migrations_dir_is_found_from_the_package():
    assert (history.migrations_dir() / "env.py").exists()
    assert (history.migrations_dir() / "versions").is_dir()


def test_revision_files_are_date_prefixed_and_say_why():
    for path in (history.migrations_dir() / "versions").glob("*.py"):
        assert re.match(r"\d{4}_\d{2}_\d{2}_", path.name), path.name
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and "Why:" in doc, f"{path.name}: its docstring must say why it exists"


async def test_upgrade_from_empty(db_url: str, db_path: Path):
    """Through every migration (a revision named: a new history at "head" is made from the
    models, below)."""
    assert await history.upgrade(db_url, SCHEMA_REVISION) == SCHEMA_REVISION
    assert {"runs", "paused_schedules", "alembic_version"} <= tables(db_path)
    assert await history.upgrade(db_url) == SCHEMA_REVISION  # idempotent


def _shape(path: Path) -> dict:
    """What of a SQLite schema behaves: each table's columns in order (name, type, not
    null, default, key), its AUTOINCREMENT, each index's columns, uniqueness and WHERE,
    and the alembic revision -- not how the CREATE statements happen to be spelled."""
    with contextlib.closing(sqlite3.connect(path)) as conn:

        def sql_of(name: str) -> str:
            return (
                conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
                or ""
            )

        shape: dict = {"revision": conn.execute("SELECT * FROM alembic_version").fetchall()}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            indexes = {
                name: (
                    unique,
                    partial,
                    [row[2] for row in conn.execute(f"PRAGMA index_info('{name}')")],
                    sql_of(name).partition(" WHERE ")[2],
                )
                for _, name, unique, _, partial in conn.execute(f"PRAGMA index_list('{table}')")
            }
            columns = [row[1:] for row in conn.execute(f"PRAGMA table_xinfo('{table}')")]
            shape[table] = (columns, "AUTOINCREMENT" in sql_of(table), indexes)
    return shape


async def test_a_new_history_is_made_at_head_with_the_migrations_schema(tmp_path: Path):
    """A new SQLite history is made from the models and stamped (~10 ms, no alembic): the
    same tables, columns in the same order, indexes and revision as the migrations make."""
    made, migrated = tmp_path / "made.db", tmp_path / "migrated.db"
    assert await history.upgrade(f"sqlite+aiosqlite:///{made}") == SCHEMA_REVISION
    migrated_url = f"sqlite+aiosqlite:///{migrated}"
    assert await history.upgrade(migrated_url, SCHEMA_REVISION) == SCHEMA_REVISION
    assert _shape(made) == _shape(migrated)
    assert await history.downgrade(f"sqlite+aiosqlite:///{made}", "20261207_01") == "20261207_01"
    assert "audit_log" not in tables(made)  # the models' schema steps down like the chain's


async def test_models_match_the_migrations(db_url: str):
    await history.upgrade(db_url, SCHEMA_REVISION)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_downgrade_and_upgrade_with_rows_present(db_url: str, db_path: Path):
    async with History.open(db_url) as h:
        for minute in range(3):
            run_id = await h.claim(
                pipeline="p",
                trigger="schedule",
                schedule="s",
                scheduled_at=T0.replace(minute=minute),
                async_driver=True,
            )
            await h.finish(run_id, status="success", finished_at=T0, attempts=1)
        await h.set_paused("s", True)
    assert await history.downgrade(db_url, "base") is None
    assert tables(db_path) == {"alembic_version"}
    assert await history.upgrade(db_url) == SCHEMA_REVISION
    async with History.open(db_url) as h:
        assert await h.list_runs() == []
        run_id = await h.claim(pipeline="p", trigger="manual", async_driver=True)
        assert (await h.get_run(run_id)).status == "queued"


def test_env_py_runs_standalone_from_a_url(db_url: str, db_path: Path):
    """`alembic upgrade head` through env.py alone (own engine, one transaction per
    migration), as a maintainer running alembic by hand would."""
    from alembic import command

    command.upgrade(alembic_config(db_url), "head")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == (
            SCHEMA_REVISION
        )
    conn.close()
    command.downgrade(alembic_config(db_url), "base")
    assert tables(db_path) == {"alembic_version"}


def test_env_py_imports_only_what_it_should():
    tree = ast.parse((history.migrations_dir() / "env.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(name.startswith(("hamilton", "apscheduler")) for name in imported)


def _insert_old_row(conn: sqlite3.Connection, trigger: str, minute: int, schedule="s") -> None:
    conn.execute(
        "INSERT INTO runs (schedule, pipeline, trigger, status, run_at, scheduled_at, "
        "attempts, async_driver, final_vars, inputs, host, pid) VALUES "
        "(?, 'p', ?, 'success', ?, ?, 1, 1, '[]', '{}', 'h', 1)",
        (
            schedule,
            trigger,
            f"2026-11-24 02:{minute:02d}:00.000000",
            f"2026-11-24 02:{minute:02d}:00.000000",
        ),
    )


async def test_rerun_of_and_the_partial_slot_key_with_rows(db_url: str, db_path: Path):
    """20261130_01 -> 20261130_03 with rows: kept; a rerun (and a manual run) may repeat a
    slot, a slot row may not; down again: the rerun loses its slot, the rest is kept."""
    assert await history.upgrade(db_url, "20261130_01") == "20261130_01"
    with sqlite3.connect(db_path) as conn:
        for minute in range(3):
            _insert_old_row(conn, "schedule", minute)
        _insert_old_row(conn, "manual", 5)
    conn.close()
    assert await history.upgrade(db_url, "20261130_03") == "20261130_03"
    async with History.open(db_url) as h:
        old = await h.list_runs()
        assert len(old) == 4 and all(r.rerun_of is None for r in old)
        slot = T0.replace(minute=1)
        again = await h.claim(
            pipeline="p",
            trigger="rerun",
            schedule="s",
            scheduled_at=slot,
            async_driver=True,
            rerun_of=old[-2].id,
        )
        manual = await h.claim(
            pipeline="p", trigger="manual", schedule="s", scheduled_at=slot, async_driver=True
        )
        assert again is not None and manual is not None
        for trigger in ("schedule", "catchup", "backfill"):
            assert (
                await h.claim(
                    pipeline="p",
                    trigger=trigger,
                    schedule="s",
                    scheduled_at=slot,
                    async_driver=True,
                )
                is None
            )
        assert (await h.get_run(again)).rerun_of == old[-2].id
        assert await h.reruns_of(old[-2].id) == [again]
        await h.finish(again, status="success", finished_at=T0, attempts=1)
        await h.finish(manual, status="success", finished_at=T0, attempts=1)
    assert await history.downgrade(db_url, "20261130_01") == "20261130_01"
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT trigger, scheduled_at FROM runs ORDER BY id").fetchall()
        assert len(rows) == 6 and rows[4][0] == "rerun" and rows[4][1] is None
        try:
            _insert_old_row(conn, "backfill", 0)
            raise AssertionError("the unique slot key is back")
        except sqlite3.IntegrityError:
            pass
    conn.close()
    assert await history.upgrade(db_url) == SCHEMA_REVISION


async def test_paused_reason_with_rows(db_url: str, db_path: Path):
    """20261130_05 -> 20261130_06 with a schedule paused by hand: kept, reason null; a
    self-pause keeps its reason; down again drops only the column."""
    assert await history.upgrade(db_url, "20261130_05") == "20261130_05"
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO paused_schedules (schedule, paused_at) VALUES ('byhand', ?)",
            (T0.isoformat(),),
        )
    conn.close()
    assert await history.upgrade(db_url, "20261130_06") == "20261130_06"
    async with History.open(db_url) as h:
        await h.set_paused("flaky", True, "paused itself: 2 runs in a row")
        assert await h.paused_reasons() == {
            "byhand": None,
            "flaky": "paused itself: 2 runs in a row",
        }
    assert await history.downgrade(db_url, "20261130_05") == "20261130_05"
    with sqlite3.connect(db_path) as conn:
        names = [r[0] for r in conn.execute("SELECT schedule FROM paused_schedules ORDER BY 1")]
    conn.close()
    assert names == ["byhand", "flaky"]
    assert await history.upgrade(db_url) == SCHEMA_REVISION


async def test_daemon_leases_upgrade_keeps_the_rows(db_url: str, db_path: Path):
    """20261130_05 adds the `daemons` lease table to a history that has runs."""
    async with History.open(db_url) as h:
        run_id = await h.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
    assert await history.downgrade(db_url, "20261130_01") == "20261130_01"
    assert "daemons" not in tables(db_path)
    assert await history.upgrade(db_url) == SCHEMA_REVISION
    async with History.open(db_url, instance_id="d1") as h:
        assert (await h.get_run(run_id)).status == "queued"
        await h.register_daemon()
        assert [d["id"] for d in await h.daemons(30.0)] == ["d1"]


async def test_run_duration_is_backfilled_and_kept_with_rows(db_url: str, db_path: Path):
    """20261130_03 -> 20261130_07 with rows: each ended run gets finished_at - started_at,
    a run that never started none; stats read them; new rows store theirs; down again."""
    assert await history.upgrade(db_url, "20261130_03") == "20261130_03"
    with sqlite3.connect(db_path) as conn:
        for minute in range(3):
            _insert_old_row(conn, "schedule", minute)
        conn.execute(
            "UPDATE runs SET started_at = run_at, finished_at = datetime(run_at, '+2 seconds') "
            "WHERE id < 3"
        )
        conn.execute("ANALYZE")  # a database analyzed before: statistics are redone
    conn.close()
    assert await history.upgrade(db_url, "20261130_07") == "20261130_07"
    with sqlite3.connect(db_path) as conn:
        durations = [row[0] for row in conn.execute("SELECT duration_s FROM runs ORDER BY id")]
        assert durations == [2.0, 2.0, None]
        stats = {row[1] for row in conn.execute("SELECT * FROM sqlite_stat1")}
        assert "ix_runs_schedule_duration_s" in stats
    conn.close()
    async with History.open(db_url) as h:
        run_id = await h.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
        await h.mark_running(run_id, started_at=T0)
        await h.finish(run_id, status="success", finished_at=T0.replace(second=5), attempts=1)
        assert (await h.stats())[0]["p95_s"] == 5.0
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT duration_s FROM runs WHERE id = ?", (run_id,)).fetchone() == (
            5.0,
        )
    conn.close()
    assert await history.downgrade(db_url, "20261130_03") == "20261130_03"
    with sqlite3.connect(db_path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    assert "duration_s" not in columns
