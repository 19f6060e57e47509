"""Engines: flowerd's connection settings for SQLite and PostgreSQL.

SQLite by default (aiosqlite); PostgreSQL (asyncpg) is a different URL: everything
SQLite-specific (pragmas, file modes, `mode=ro`, `BEGIN IMMEDIATE`) happens only when the
dialect is sqlite.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:  # imported when first used: sqlalchemy.ext.asyncio pulls in the ORM
    from sqlalchemy.ext.asyncio import AsyncEngine

from daemon.errors import HistoryError
from daemon.settings import sqlite_path

BUSY_TIMEOUT_MS = 10_000  # readers, `flowerd run`, migrations from the CLI
# The daemon's writer waits less per attempt: it holds its rows and retries anyway, and a
# shorter wait lets a stop (or a start-up) that meets a locked database end promptly.
WRITER_BUSY_TIMEOUT_MS = 2_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def describe(url: str) -> str:
    """How messages name a database: its file, or its URL without the password."""
    path = sqlite_path(url)
    return str(path) if path else make_url(url).render_as_string(hide_password=True)


def make_engine(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> AsyncEngine:
    """The async engine with flowerd's connection settings. SQLite: the pragmas on every
    connect, and SQLAlchemy emits `BEGIN IMMEDIATE` itself (the sqlite3 module would not
    BEGIN before DDL, and a deferred BEGIN that later writes can fail with SQLITE_BUSY
    without waiting for busy_timeout)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    if is_sqlite(url):
        _sqlite_events(engine.sync_engine, readonly=False, busy_timeout_ms=busy_timeout_ms)
    else:
        from daemon.history.schema import with_postgresql

        with_postgresql()
    return engine


def make_reader(url: str) -> sa.Engine | AsyncEngine:
    """The engine readers use. SQLite: the file opened read-only (`mode=ro`), so a reader
    can never take the write lock; it is a *sync* engine whose queries History runs in a
    worker thread -- the same Core statements, but `flowerd runs` skips importing
    sqlalchemy.ext.asyncio, the ORM and aiosqlite (~70 ms of its 0.5 s budget).
    Other databases: the async engine."""
    path = sqlite_path(url)
    if path is None:
        return make_engine(url)
    ro_url = URL.create(
        "sqlite+pysqlite", database=f"file:{quote(str(path))}", query={"mode": "ro", "uri": "true"}
    )
    engine = sa.create_engine(ro_url)
    _sqlite_events(engine, readonly=True)
    return engine


def _sqlite_events(
    engine: sa.Engine, *, readonly: bool, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not readonly:
            cursor.execute("PRAGMA journal_mode")  # switching needs an exclusive lock:
            if cursor.fetchone()[0] != "wal":  # only a new file's first connection does
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def prepare_sqlite_file(path: Path) -> None:
    """Create the database's directory 0700 and the file 0600 before SQLite does (SQLite
    would create the file with the umask's mode; its -wal/-shm copy the file's mode)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)


def sync_writer_engine(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sa.Engine:
    """A SQLite file's writer as a *sync* pysqlite engine (see history/link.py: the
    writer's transactions run in one thread of their own), file and directory private."""
    path = sqlite_path(url)
    prepare_sqlite_file(path)
    engine = sa.create_engine(make_url(url).set(drivername="sqlite+pysqlite"))
    _sqlite_events(engine, readonly=False, busy_timeout_ms=busy_timeout_ms)
    return engine


def writer_engine(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> AsyncEngine:
    """make_engine() for writing; a SQLite file and its directory are created private."""
    path = sqlite_path(url)
    if path is not None:
        prepare_sqlite_file(path)
    return make_engine(url, busy_timeout_ms=busy_timeout_ms)


def unusable(url: str, exc: BaseException) -> HistoryError:
    reason = getattr(exc, "orig", None) or exc
    path = sqlite_path(url) if "://" in url else None
    if path is not None and is_corrupt(str(reason)):  # found by a read after the open
        return HistoryError(f"the history database {path} {corrupt_advice(path, str(reason))}")
    return HistoryError(f"{describe(url)}: cannot use the history database: {reason}")


def is_corrupt(reason: str) -> bool:
    return "malformed" in reason or "not a database" in reason


def corrupt_advice(path: Path, detail: str) -> str:
    """What to do with a corrupt SQLite history, however it was found."""
    return (
        f"is corrupt ({detail.strip().rstrip('.')}). Restore it from a backup, or move it "
        f"away to start a new history; `sqlite3 {path} .recover` may save its rows"
    )
