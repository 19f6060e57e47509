"""Alembic, driven in code: upgrade on open, downgrade for tests and recovery."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.errors import HistoryError
from daemon.history.engine import (
    BUSY_TIMEOUT_MS,
    describe,
    sync_writer_engine,
    unusable,
    writer_engine,
)
from daemon.history.schema import metadata
from daemon.settings import sqlite_path

log = logging.getLogger(__name__)

# The alembic head this code writes. tests/history/test_migrate.py checks it against the
# versions folder; readers compare with it without importing alembic (CLI start-up time).
SCHEMA_REVISION = "20261207_03"
UPGRADE_ATTEMPTS = 6  # 0.05 s doubling: ~1.6 s of retries at most


def migrations_dir() -> Path:
    """`daemon/migrations` inside a wheel, the repo's `migrations/` in an editable install."""
    import daemon

    packaged = Path(daemon.__file__).resolve().parent / "migrations"
    if (packaged / "env.py").exists():
        return packaged
    return Path(daemon.__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None, connection: Any = None):
    """An alembic Config built in code (no alembic.ini to ship or find)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def check_revision(current: str | None, label: str) -> None:
    """Refuse a database written by a flowerd newer than this one (unknown revision)."""
    if current is None or current == SCHEMA_REVISION:
        return
    known = {script.revision for script in _script().walk_revisions()}
    if current not in known:
        raise HistoryError(
            f"{label}: the history database is at schema revision {current!r}, which this "
            f"flowerd does not know (it knows up to {SCHEMA_REVISION!r}); it was written "
            "by a newer flowerd. Upgrade flowerd, or point --db at another file."
        )


def _foreign_tables(sync_conn) -> list[str]:
    names = set(sa.inspect(sync_conn).get_table_names())
    return sorted(names - {"alembic_version"})


def _migrate_sync(sync_conn, label: str, revision: str, probe: bool = False) -> str | None:
    """Check, then bring the schema to `revision`, all inside one transaction that (on
    SQLite) began with BEGIN IMMEDIATE: a second process starting at the same moment waits
    here for the first to commit, then finds the schema already at head. Alembic sees an
    external transaction, so the whole upgrade commits or rolls back as one."""
    with sync_conn.begin():
        _lock_for_migration(sync_conn)
        current = _stored_revision(sync_conn)
        check_revision(current, label)
        if current is None and _foreign_tables(sync_conn):
            raise HistoryError(
                f"{label}: not a flowerd history database (it has tables "
                f"{', '.join(_foreign_tables(sync_conn))} but no flowerd schema)"
            )
        target = SCHEMA_REVISION if revision == "head" else revision
        if current is None and revision == "head" and sync_conn.dialect.name == "sqlite":
            current = _create_at_head(sync_conn)
        elif current != target:  # only then alembic (~50 ms and ~8 MiB a start otherwise)
            from alembic import command

            command.upgrade(alembic_config(connection=sync_conn), revision)
            current = _stored_revision(sync_conn)
        if probe:  # a real write: a read-only file or a full disk shows up now, not later
            sync_conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
        return current


def _create_at_head(sync_conn) -> str:
    """A new SQLite history, made at head from the models and stamped, as alembic's own
    cookbook builds a database from scratch ("create_all, then stamp"): the same schema as
    the twelve migrations in ~10 ms instead of ~160 ms of alembic (its import included).
    Every first start and every CLI command on a new project made one; the test suite
    makes hundreds. tests/history/test_migrate.py holds both ways to the same schema,
    column order included. PostgreSQL histories, made once per deployment, keep the chain."""
    metadata.create_all(sync_conn)
    sync_conn.exec_driver_sql(  # alembic's own DDL for its table (it may be left at base)
        "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
    sync_conn.exec_driver_sql(
        "INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_REVISION,)
    )
    return SCHEMA_REVISION


def _stored_revision(sync_conn) -> str | None:
    """The database's alembic revision, read without importing alembic (one head)."""
    return schema_state(sync_conn)[1]


# any constant: daemons sharing one PostgreSQL take this lock to migrate one at a time
_MIGRATION_LOCK_KEY = 0x666C6F77  # "flow"


def _lock_for_migration(sync_conn) -> None:
    """PostgreSQL: several daemons starting at once on an empty database migrate it once
    -- the first holds this transaction-scoped lock, the others wait for its commit and
    then find the schema at head. (SQLite: BEGIN IMMEDIATE already serialises them.)"""
    if sync_conn.dialect.name == "postgresql":
        sync_conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
        )


async def upgrade(
    url: str,
    revision: str = "head",
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    probe_write: bool = False,
) -> str | None:
    """`flowerd db upgrade`: bring the database to `revision`; returns the revision now.
    Two processes creating a new SQLite file at once can meet SQLITE_BUSY where SQLite
    does not wait (turning on WAL, a lock upgrade it calls a deadlock): retried, bounded."""
    for attempt in range(UPGRADE_ATTEMPTS):
        try:
            return await _upgrade_once(url, revision, busy_timeout_ms, probe_write)
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc) or attempt == UPGRADE_ATTEMPTS - 1:
                raise unusable(url, exc) from None
            log.debug("%s is locked while upgrading (attempt %d); retrying", url, attempt + 1)
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def _upgrade_once(url: str, revision: str, busy_timeout_ms: int, probe: bool) -> str | None:
    if sqlite_path(url) is not None:  # a file: a sync engine in a worker thread
        return await asyncio.to_thread(_upgrade_file, url, revision, busy_timeout_ms, probe)
    engine = writer_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_migrate_sync, describe(url), revision, probe)
    except HistoryError:
        raise
    except sa.exc.OperationalError:
        raise
    except sa.exc.DBAPIError as exc:
        raise unusable(url, exc) from None
    finally:
        await engine.dispose()


def _upgrade_file(url: str, revision: str, busy_timeout_ms: int, probe: bool) -> str | None:
    """_upgrade_once for a SQLite file, on the writer's own kind of engine (history/link.py):
    the same statements and pragmas, without the async layer -- importing
    sqlalchemy.ext.asyncio brings the ORM and aiosqlite, ~30 % of a fresh start's upgrade."""
    engine = sync_writer_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        with engine.connect() as conn:
            return _migrate_sync(conn, describe(url), revision, probe)
    except (HistoryError, sa.exc.OperationalError):
        raise
    except sa.exc.DBAPIError as exc:
        raise unusable(url, exc) from None
    finally:
        engine.dispose()


async def downgrade(url: str, revision: str) -> str | None:
    """Step the schema down (tests, and recovering from a bad upgrade); one transaction
    per migration, as env.py sets up when alembic owns the transactions."""
    from alembic import command

    engine = writer_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(
                lambda sync: command.downgrade(alembic_config(connection=sync), revision)
            )
            await conn.commit()
            return await conn.run_sync(_stored_revision)
    finally:
        await engine.dispose()


def schema_state(conn: sa.Connection) -> tuple[set[str], str | None]:
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" not in tables:
        return tables, None
    return tables, conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
