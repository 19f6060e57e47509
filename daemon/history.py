"""The run history: one row per run, written by one writer task, read by the CLI.

The only module (with migrations/env.py) that imports SQLAlchemy. SQLite by default
(aiosqlite); PostgreSQL (asyncpg) is a different URL: everything SQLite-specific
(pragmas, file modes, `mode=ro`, `BEGIN IMMEDIATE`) happens only when the dialect is sqlite.

Writes: every write call is queued to a single writer task that owns the write
connection. It takes everything queued since its last commit and writes it in one
transaction with a handful of Core statements (one multi-row INSERT, one executemany per
UPDATE kind), so 1000 concurrent runs cost a few commits, not 3000 (group commit). Each
call returns after the commit that holds its own row.

Reads never take the write lock: on SQLite they go through a second engine that opens
the file read-only (`mode=ro`), so the CLI can never block the daemon's writer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:  # imported when first used: sqlalchemy.ext.asyncio pulls in the ORM
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from daemon.durations import iso
from daemon.errors import HistoryError, RunNotFound, UsageError, did_you_mean
from daemon.settings import sqlite_path

log = logging.getLogger(__name__)

STATUSES = (
    "queued",
    "running",
    "success",
    "failed",
    "timed_out",
    "cancelled",
    "skipped",
    "missed",
    "crashed",
)
ACTIVE = frozenset({"queued", "running"})
TERMINAL = frozenset(STATUSES) - ACTIVE
FAILURES = frozenset({"failed", "timed_out", "crashed"})
TRIGGERS = ("schedule", "catchup", "manual")

# The alembic head this code writes. tests/test_migrations.py checks it against the
# versions folder; readers compare with it without importing alembic (CLI start-up time).
SCHEMA_REVISION = "20261124_01"

BUSY_TIMEOUT_MS = 10_000
UPGRADE_ATTEMPTS = 6  # 0.05 s doubling: ~1.6 s of retries at most
MAX_BATCH_OPS = 2_000
PRUNE_CHUNK_ROWS = 5_000
CANCELLED_WRITE_WAIT_S = 10.0
SUMMARY_MAX_CHARS = 2_000
MESSAGE_MAX_CHARS = 10_000
TRACEBACK_MAX_CHARS = 100_000
REDACTED = "***"
_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "passphrase", "token", "secret", "key", "apikey", "credentials"}
)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class RunError:
    type: str
    message: str
    traceback: str | None = None

    def to_json(self) -> dict:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    id: int
    schedule: str | None
    pipeline: str
    trigger: str
    status: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    async_driver: bool
    final_vars: list[str] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    result_summary: str | None = None
    error: RunError | None = None
    host: str = ""
    pid: int = 0
    instance_id: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def lateness_s(self) -> float | None:
        if self.started_at is None or self.scheduled_at is None:
            return None
        return (self.started_at - self.scheduled_at).total_seconds()

    @property
    def at(self) -> datetime | None:
        """When the run happened, for display: its slot, else when it started or ended."""
        return self.scheduled_at or self.started_at or self.finished_at

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "schedule": self.schedule,
            "pipeline": self.pipeline,
            "trigger": self.trigger,
            "status": self.status,
            "scheduled_at": iso(self.scheduled_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "async_driver": self.async_driver,
            "error": self.error.to_json() if self.error else None,
            "lateness_s": self.lateness_s,
            "final_vars": list(self.final_vars),
            "inputs": self.inputs,
            "result_summary": self.result_summary,
            "host": self.host,
            "pid": self.pid,
            "instance_id": self.instance_id,
        }


# --------------------------------------------------------------------------- schema


class UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out. SQLite keeps no offset (the column
    holds UTC wall time as text, which sorts correctly); PostgreSQL gets timestamptz."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the history stores aware times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("schedule", sa.String(200)),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # when the run happened: its slot, else when it was queued; filters and ordering use it
    sa.Column("run_at", UTCDateTime, nullable=False),
    sa.Column("scheduled_at", UTCDateTime),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("async_driver", sa.Boolean, nullable=False),
    sa.Column("final_vars", sa.JSON, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("result_summary", sa.Text),
    sa.Column("error_type", sa.String(200)),
    sa.Column("error_message", sa.Text),
    sa.Column("error_traceback", sa.Text),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("instance_id", sa.String(64)),
    sa.UniqueConstraint("schedule", "scheduled_at"),  # the slot key
    sa.Index(None, "run_at"),
    sa.Index(None, "schedule", "run_at"),
    sa.Index(None, "schedule", "status", "run_at"),
    sa.Index(None, "pipeline", "run_at"),
    sa.Index(None, "status", "run_at"),
)

paused_schedules = sa.Table(
    "paused_schedules",
    metadata,
    sa.Column("schedule", sa.String(200), primary_key=True),
    sa.Column("paused_at", UTCDateTime, nullable=False),
)


# --------------------------------------------------------------------------- engines


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def describe(url: str) -> str:
    """How messages name a database: its file, or its URL without the password."""
    path = sqlite_path(url)
    return str(path) if path else make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> AsyncEngine:
    """The async engine with flowerd's connection settings. SQLite: the pragmas on every
    connect, and SQLAlchemy emits `BEGIN IMMEDIATE` itself (the sqlite3 module would not
    BEGIN before DDL, and a deferred BEGIN that later writes can fail with SQLITE_BUSY
    without waiting for busy_timeout)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    if is_sqlite(url):
        _sqlite_events(engine.sync_engine, readonly=False)
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


def _sqlite_events(engine: sa.Engine, *, readonly: bool) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
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


# --------------------------------------------------------------------------- migrations


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


def _check_revision(current: str | None, label: str) -> None:
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


def _current_revision(sync_conn) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def _migrate_sync(sync_conn, label: str, revision: str) -> str | None:
    """Check, then bring the schema to `revision`, all inside one transaction that (on
    SQLite) began with BEGIN IMMEDIATE: a second process starting at the same moment waits
    here for the first to commit, then finds the schema already at head. Alembic sees an
    external transaction, so the whole upgrade commits or rolls back as one."""
    from alembic import command

    with sync_conn.begin():
        current = _current_revision(sync_conn)
        _check_revision(current, label)
        if current is None and _foreign_tables(sync_conn):
            raise HistoryError(
                f"{label}: not a flowerd history database (it has tables "
                f"{', '.join(_foreign_tables(sync_conn))} but no flowerd schema)"
            )
        if current != revision:
            command.upgrade(alembic_config(connection=sync_conn), revision)
        return _current_revision(sync_conn)


async def upgrade(url: str, revision: str = "head") -> str | None:
    """`flowerd db upgrade`: bring the database to `revision`; returns the revision now.
    Two processes creating a new SQLite file at once can meet SQLITE_BUSY where SQLite
    does not wait (turning on WAL, a lock upgrade it calls a deadlock): retried, bounded."""
    for attempt in range(UPGRADE_ATTEMPTS):
        try:
            return await _upgrade_once(url, revision)
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc) or attempt == UPGRADE_ATTEMPTS - 1:
                raise _unusable(url, exc) from None
            log.debug("%s is locked while upgrading (attempt %d); retrying", url, attempt + 1)
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def _upgrade_once(url: str, revision: str) -> str | None:
    engine = writer_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_migrate_sync, describe(url), revision)
    except HistoryError:
        raise
    except sa.exc.OperationalError:
        raise
    except sa.exc.DBAPIError as exc:
        raise _unusable(url, exc) from None
    finally:
        await engine.dispose()


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
            return await conn.run_sync(_current_revision)
    finally:
        await engine.dispose()


def writer_engine(url: str) -> AsyncEngine:
    """make_engine() for writing; a SQLite file and its directory are created private."""
    path = sqlite_path(url)
    if path is not None:
        prepare_sqlite_file(path)
    return make_engine(url)


def _unusable(url: str, exc: BaseException) -> HistoryError:
    reason = getattr(exc, "orig", None) or exc
    return HistoryError(f"{describe(url)}: cannot use the history database: {reason}")


# --------------------------------------------------------------------------- value shaping


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


@functools.lru_cache(maxsize=1024)  # the same few input names, run after run
def is_secret_key(key: str) -> bool:
    """`password`, `db_password`, `apiKey`, `AUTH_TOKEN`, `client-secret` ... are secrets."""
    words = _words(str(key))
    return any(w in _SECRET_WORDS for w in words) or "".join(words).endswith(
        ("password", "token", "secret", "apikey")
    )


def redact(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe copy of run inputs with the values of secret-looking keys replaced."""
    if depth > 20:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_secret_key(str(k)) else redact(v, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, depth=depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _clip(repr(value), 200)


def _without_none(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}


def _clip(text: str | None, max_chars: int) -> str | None:
    if text is None or len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…"


def _check_status(status: str, allowed: frozenset[str] | tuple[str, ...] = STATUSES) -> str:
    if status not in allowed:
        raise UsageError(
            f"unknown status {status!r}{did_you_mean(status, allowed)}; "
            f"statuses: {', '.join(s for s in STATUSES if s in allowed)}"
        )
    return status


def _check_trigger(trigger: str) -> str:
    if trigger not in TRIGGERS:
        raise UsageError(
            f"unknown trigger {trigger!r}{did_you_mean(trigger, TRIGGERS)}; "
            f"triggers: {', '.join(TRIGGERS)}"
        )
    return trigger


def _aware(moment: datetime | None, name: str) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment


def _error_columns(error: RunError | None) -> dict:
    return {
        "error_type": _clip(error.type, 200) if error else None,
        "error_message": _clip(error.message, MESSAGE_MAX_CHARS) if error else None,
        "error_traceback": _clip(error.traceback, TRACEBACK_MAX_CHARS) if error else None,
    }


def record_of(row: Mapping) -> RunRecord:
    error = None
    if row["error_type"] is not None or row["error_message"] is not None:
        error = RunError(
            type=row["error_type"] or "Error",
            message=row["error_message"] or "",
            traceback=row["error_traceback"],
        )
    return RunRecord(
        id=row["id"],
        schedule=row["schedule"],
        pipeline=row["pipeline"],
        trigger=row["trigger"],
        status=row["status"],
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        async_driver=bool(row["async_driver"]),
        final_vars=list(row["final_vars"] or []),
        inputs=dict(row["inputs"] or {}),
        result_summary=row["result_summary"],
        error=error,
        host=row["host"],
        pid=row["pid"],
        instance_id=row["instance_id"],
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- the writer


@dataclass(eq=False, slots=True)
class _Op:
    """One queued write. kind: 'insert' (row values), 'running' / 'finish' (update
    values), 'call' (an async function of the connection, run in order after the rest).
    `written` turns true once the writer is done with it; `landed` is created only when
    the caller was cancelled and waits for that moment."""

    kind: str
    values: Any
    future: asyncio.Future
    written: bool = False
    landed: asyncio.Future | None = None


_SLOT_KEY = ("schedule", "scheduled_at")


def _slot_key(values: dict) -> tuple | None:
    if values.get("schedule") is None or values.get("scheduled_at") is None:
        return None
    return values["schedule"], values["scheduled_at"]


def _by_shape(ops: list[_Op]) -> list[list[_Op]]:
    """Ops grouped by the columns they set, for one executemany per group. Writes leave
    out their None values: fewer bound parameters is the cheapest speed-up there is."""
    groups: dict[tuple, list[_Op]] = {}
    for op in ops:
        groups.setdefault(tuple(op.values), []).append(op)
    return list(groups.values())


def _dialect_insert(conn: AsyncConnection):
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise HistoryError(f"history databases on {name} are not supported (sqlite, postgresql)")
    return insert


async def _insert_slots(conn: AsyncConnection, ops: list[_Op], results: dict) -> None:
    """Rows with a slot key, in one INSERT .. ON CONFLICT DO NOTHING RETURNING: a slot
    already in the table (or twice in this batch) gets no id. RETURNING order is not
    guaranteed, so ids are matched back by the slot key, which is unique."""
    first: dict[tuple, _Op] = {}
    for op in ops:
        key = _slot_key(op.values)
        if key in first:
            results[id(op)] = None
        else:
            first[key] = op
    stmt = (
        _dialect_insert(conn)(runs)
        .on_conflict_do_nothing(index_elements=list(_SLOT_KEY))
        .returning(runs.c.id, runs.c.schedule, runs.c.scheduled_at)
    )
    rows = (await conn.execute(stmt, [op.values for op in first.values()])).all()
    ids = {(row.schedule, row.scheduled_at): row.id for row in rows}
    for key, op in first.items():
        results[id(op)] = ids.get(key)


async def _insert_rows(conn: AsyncConnection, ops: list[_Op], results: dict) -> None:
    for group in _by_shape([op for op in ops if _slot_key(op.values) is not None]):
        await _insert_slots(conn, group, results)
    stmt = sa.insert(runs).returning(runs.c.id)
    for op in ops:  # manual runs: rare, and they never collide
        if _slot_key(op.values) is None:
            results[id(op)] = (await conn.execute(stmt, op.values)).scalar_one()


@functools.lru_cache(maxsize=64)  # one Core statement per shape, so SQLAlchemy's cache hits
def _update_stmt(params: tuple[str, ...], only_active: bool) -> sa.Update:
    """UPDATE runs SET <col> = :b_<col> ... WHERE id = :b_id, for executemany."""
    stmt = sa.update(runs).where(runs.c.id == sa.bindparam("b_id"))
    if only_active:  # a late mark_running never revives a finished row
        # (no IN: executemany refuses its expanding parameter)
        stmt = stmt.where(sa.or_(*(runs.c.status == status for status in sorted(ACTIVE))))
    columns = [name[2:] for name in params if name != "b_id"]
    return stmt.values({column: sa.bindparam(f"b_{column}") for column in columns})


async def _apply(conn: AsyncConnection, batch: list[_Op]) -> list[Any]:
    """Write one batch inside the caller's transaction; results in batch order.
    Inserts first, then all mark_running, then all finish (one executemany, i.e. one
    driver call, per shape), then the other writes in the order they came."""
    by_kind: dict[str, list[_Op]] = {"insert": [], "running": [], "finish": [], "call": []}
    for op in batch:
        by_kind[op.kind].append(op)
    results: dict[int, Any] = {}
    if by_kind["insert"]:
        await _insert_rows(conn, by_kind["insert"], results)
    for kind in ("running", "finish"):
        for group in _by_shape(by_kind[kind]):
            stmt = _update_stmt(tuple(group[0].values), kind == "running")
            await conn.execute(stmt, [op.values for op in group])
    for op in by_kind["call"]:
        results[id(op)] = await op.values(conn)
    return [results.get(id(op)) for op in batch]


class _Writer:
    """The single writer task and its queue."""

    def __init__(self, engine: AsyncEngine, label: str):
        self.engine = engine
        self.label = label
        self.queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.commits = 0
        self.closed = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    def submit(self, kind: str, values: Any) -> _Op:
        if self.closed or self.task is None or self.task.done():
            raise HistoryError(f"{self.label}: the history is closed")
        op = _Op(kind, values, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(op)
        return op

    async def stop(self) -> None:
        if self.task is None or self.closed:
            return
        self.closed = True
        self.queue.put_nowait(None)
        await asyncio.shield(self.task)

    async def _run(self) -> None:
        try:
            async with self.engine.connect() as conn:
                while batch := await self._next_batch():
                    await self._commit(conn, batch)
                    if batch[-1] is None:
                        break
        finally:
            self._fail_queued()

    async def _next_batch(self) -> list[_Op | None]:
        """Everything queued now (at least one op; None at the end means stop)."""
        batch = [await self.queue.get()]
        while batch[-1] is not None and len(batch) < MAX_BATCH_OPS and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _commit(self, conn: AsyncConnection, batch: list[_Op | None]) -> None:
        ops = [op for op in batch if op is not None]
        if not ops:
            return
        try:
            async with conn.begin():
                results = await _apply(conn, ops)
        except (sa.exc.IntegrityError, sa.exc.StatementError) as exc:
            if len(ops) > 1:  # one bad row must not fail the others: write them one by one
                for op in ops:
                    await self._commit(conn, [op])
                return
            _settle(ops[0], exc=_unusable(self.label, exc))
            return
        except Exception as exc:
            for op in ops:
                _settle(op, exc=_unusable(self.label, exc))
            return
        self.commits += 1
        for op, result in zip(ops, results, strict=True):
            _settle(op, result=result)

    def _fail_queued(self) -> None:
        self.closed = True
        while not self.queue.empty():
            op = self.queue.get_nowait()
            if op is not None:
                _settle(op, exc=HistoryError(f"{self.label}: the history was closed"))


def _settle(op: _Op, *, result: Any = None, exc: BaseException | None = None) -> None:
    op.written = True
    for future in (op.future, op.landed):
        if future is None or future.done():
            continue  # the caller was cancelled (and its await cancelled op.future)
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


async def _await_write(op: _Op) -> Any:
    """Wait for the commit that holds this write. If the caller is cancelled meanwhile,
    the write is already queued and lands anyway: wait (bounded) for it, so the row is
    durable when the cancellation goes on, then re-raise the CancelledError.
    (Like asyncio.shield, without a second future and callback per write: the writer
    never looks at op.future before writing, so cancelling it loses nothing.)"""
    try:
        return await op.future
    except asyncio.CancelledError:
        if not op.written:
            op.landed = asyncio.get_running_loop().create_future()
            await asyncio.wait([op.landed], timeout=CANCELLED_WRITE_WAIT_S)
        raise


# --------------------------------------------------------------------------- History


class _Opening:
    """`await History.open(...)` or `async with History.open(...) as history:`."""

    def __init__(self, opener: Awaitable[History]):
        self._opener = opener
        self._history: History | None = None

    def __await__(self):
        return self._opener.__await__()

    async def __aenter__(self) -> History:
        self._history = await self._opener
        return self._history

    async def __aexit__(self, *exc_info) -> None:
        if self._history is not None:
            await self._history.close()


class History:
    """The run history. Build with `await History.open(url)`; `close()` when done."""

    def __init__(
        self,
        url: str,
        *,
        reader: AsyncEngine | None,
        writer: _Writer | None,
        instance_id: str | None,
    ):
        self.url = url
        self.label = describe(url)
        self.instance_id = instance_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._reader = reader
        self._writer = writer
        self._empty = False  # a reader found a database with no tables yet

    # -- life cycle ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        *,
        readonly: bool = False,
        migrate: bool = True,
        instance_id: str | None = None,
    ) -> _Opening:
        if readonly:
            return _Opening(cls._open_readonly(url))
        return _Opening(cls._open_writer(url, migrate, instance_id))

    @classmethod
    async def _open_writer(cls, url: str, migrate: bool, instance_id: str | None) -> History:
        if migrate:
            await upgrade(url)
        else:
            await cls._check_readable(url)
        engine = writer_engine(url)
        reader = make_reader(url) if is_sqlite(url) else engine
        writer = _Writer(engine, describe(url))
        writer.start()
        return cls(url, reader=reader, writer=writer, instance_id=instance_id)

    @classmethod
    async def _open_readonly(cls, url: str) -> History:
        path = sqlite_path(url)
        if path is not None and not path.exists():
            return cls(url, reader=None, writer=None, instance_id=None)  # nothing yet: empty
        history = cls(url, reader=make_reader(url), writer=None, instance_id=None)
        try:
            await history._check_schema()
        except BaseException:
            await history.close()
            raise
        return history

    @classmethod
    async def _check_readable(cls, url: str) -> None:
        history = await cls._open_readonly(url)
        await history.close()

    async def _check_schema(self) -> None:
        """Readers: refuse a corrupt or foreign file, or a schema from a newer flowerd."""
        tables, current = await self._read(_schema_state)
        if not tables:
            self._empty = True
            return
        if "alembic_version" not in tables or "runs" not in tables:
            raise HistoryError(
                f"{self.label}: not a flowerd history database (tables: "
                f"{', '.join(sorted(tables))})"
            )
        _check_revision(current, self.label)

    async def close(self) -> None:
        """Drain queued writes, stop the writer, dispose the engines."""
        if self._writer is not None:
            await self._writer.stop()
            await self._optimize()
            await self._writer.engine.dispose()
        reader, self._reader = self._reader, None
        if isinstance(reader, sa.Engine):
            reader.dispose()
        elif reader is not None and (self._writer is None or reader is not self._writer.engine):
            await reader.dispose()

    async def _optimize(self) -> None:
        if not is_sqlite(self.url):
            return
        try:
            async with self._writer.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA optimize")
        except sa.exc.DBAPIError as exc:  # best effort: only keeps the planner's stats fresh
            log.debug("PRAGMA optimize failed on %s: %s", self.label, exc)

    async def __aenter__(self) -> History:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def health(self) -> str:
        """ "ok", or why the history cannot take writes (and since when)."""
        if self._writer is None:
            return "ok"
        if self._writer.task is None or self._writer.task.done():
            return "unavailable: the history writer has stopped"
        return "ok"

    @property
    def commits(self) -> int:
        """How many write transactions the writer has committed (group-commit tests)."""
        return self._writer.commits if self._writer else 0

    # -- writes -------------------------------------------------------------------------
    def _submit(self, kind: str, values: Any) -> _Op:
        if self._writer is None:
            raise HistoryError(f"{self.label}: opened read-only; cannot write")
        return self._writer.submit(kind, values)

    async def claim(
        self,
        *,
        pipeline: str,
        trigger: str,
        schedule: str | None = None,
        scheduled_at: datetime | None = None,
        async_driver: bool,
        final_vars: list[str] | tuple[str, ...] = (),
        inputs: Mapping | None = None,
        status: str = "queued",
        started_at: datetime | None = None,
    ) -> int | None:
        """Insert a run's row; its id, or None if the slot (schedule, scheduled_at) is
        already in the history. Durable when this returns."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=scheduled_at,
            async_driver=async_driver,
            status=_check_status(status),
            started_at=started_at,
        )
        values["final_vars"] = [str(v) for v in final_vars]
        values["inputs"] = redact(inputs or {})
        return await _await_write(self._submit("insert", _without_none(values)))

    async def record_slot(
        self,
        *,
        schedule: str,
        pipeline: str,
        scheduled_at: datetime,
        status: str,
        trigger: str = "schedule",
        async_driver: bool = True,
        error: RunError | None = None,
    ) -> int | None:
        """A slot that did not run (missed, skipped, cancelled ...), as one terminal row;
        None if the slot is already in the history."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=scheduled_at,
            async_driver=async_driver,
            status=_check_status(status, TERMINAL),
            started_at=None,
        )
        values.update(finished_at=utcnow(), **_error_columns(error))
        return await _await_write(self._submit("insert", _without_none(values)))

    def _row(self, *, pipeline, trigger, schedule, scheduled_at, async_driver, status, started_at):
        _check_trigger(trigger)
        _aware(scheduled_at, "scheduled_at")
        _aware(started_at, "started_at")
        return {
            "schedule": schedule,
            "pipeline": pipeline,
            "trigger": trigger,
            "status": status,
            "run_at": scheduled_at or started_at or utcnow(),
            "scheduled_at": scheduled_at,
            "started_at": started_at,
            "attempts": 0,
            "async_driver": bool(async_driver),
            "final_vars": [],
            "inputs": {},
            "host": self.host,
            "pid": self.pid,
            "instance_id": self.instance_id,
        }

    async def mark_running(self, run_id: int, *, started_at: datetime) -> None:
        _aware(started_at, "started_at")
        values = {"b_id": run_id, "b_status": "running", "b_started_at": started_at}
        await _await_write(self._submit("running", values))

    async def finish(
        self,
        run_id: int,
        *,
        status: str,
        finished_at: datetime,
        attempts: int,
        error: RunError | None = None,
        result_summary: str | None = None,
    ) -> None:
        """The terminal row. Queued before the first await, so it lands even when the
        calling task is cancelled (the CancelledError is re-raised after the commit)."""
        _check_status(status, TERMINAL)
        _aware(finished_at, "finished_at")
        values = {
            "b_id": run_id,
            "b_status": status,
            "b_finished_at": finished_at,
            "b_attempts": attempts,
            "b_result_summary": _clip(result_summary, SUMMARY_MAX_CHARS),
        }
        values.update({f"b_{k}": v for k, v in _error_columns(error).items()})
        values = _without_none(values)
        await _await_write(self._submit("finish", values))

    async def reap_crashed(self, *, now: datetime) -> list[RunRecord]:
        """Rows left queued/running by a daemon that died become `crashed` (one UPDATE).
        Rows of a process still alive on this host (say a `flowerd run` in another
        terminal) are left alone."""
        _aware(now, "now")
        live = await self._live_writers()
        rows = await _await_write(self._submit("call", lambda conn: _reap(conn, now, live)))
        return [record_of(row) for row in rows]

    async def _live_writers(self) -> list[tuple[str, int]]:
        stmt = sa.select(runs.c.host, runs.c.pid).where(runs.c.status.in_(ACTIVE)).distinct()
        pairs = [(row.host, row.pid) for row in await self._rows(stmt)]
        return [
            (host, pid)
            for host, pid in pairs
            if host == self.host and pid != self.pid and _pid_alive(pid)
        ]

    async def set_paused(self, schedule: str, paused: bool) -> None:
        if paused:
            stmt = _paused_insert(self.url).values(schedule=schedule, paused_at=utcnow())
        else:
            stmt = sa.delete(paused_schedules).where(paused_schedules.c.schedule == schedule)
        await _await_write(self._submit("call", lambda conn: conn.execute(stmt)))

    async def prune(self, *, before: datetime) -> int:
        """Delete terminal rows finished before `before`, a few thousand per transaction
        so a running daemon's writer is never held up for long. Returns the count."""
        _aware(before, "before")
        deleted = 0
        while True:
            count = await _await_write(self._submit("call", lambda c: _prune_chunk(c, before)))
            deleted += count
            if count < PRUNE_CHUNK_ROWS:
                return deleted

    # -- reads --------------------------------------------------------------------------
    async def _read(self, query: Callable[[sa.Connection], Any]) -> Any:
        """Run `query(connection)` on the reader: in a worker thread for SQLite's sync
        read-only engine, through run_sync for an async engine."""
        reader = self._reader
        try:
            if isinstance(reader, sa.Engine):
                return await asyncio.to_thread(_on_connection, reader, query)
            async with reader.connect() as conn:
                return await conn.run_sync(query)
        except sa.exc.DBAPIError as exc:
            raise _unusable(self.url, exc) from None

    async def _rows(self, stmt) -> list:
        if self._reader is None or self._empty:
            return []
        return await self._read(lambda conn: conn.execute(stmt).all())

    async def last_slots(self) -> dict[str, datetime]:
        """The newest slot per schedule (manual triggers excluded): where catch-up starts."""
        stmt = (
            sa.select(runs.c.schedule, sa.func.max(runs.c.scheduled_at).label("last"))
            .where(runs.c.schedule.is_not(None), runs.c.scheduled_at.is_not(None))
            .where(runs.c.trigger != "manual")
            .group_by(runs.c.schedule)
        )
        rows = await self._rows(stmt)
        # max() on SQLite returns the raw text, without the column's type: parse it here
        return {row.schedule: _as_utc(row.last) for row in rows}

    async def paused(self) -> set[str]:
        return {row.schedule for row in await self._rows(sa.select(paused_schedules.c.schedule))}

    async def list_runs(
        self,
        *,
        schedule: str | None = None,
        pipeline: str | None = None,
        status: str | None = None,
        trigger: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs matching every filter given, newest first; `limit` 0 means all."""
        if limit < 0:
            raise UsageError(f"limit must be 0 (all) or more, not {limit}")
        stmt = sa.select(runs)
        for column, value in (
            (runs.c.schedule, schedule),
            (runs.c.pipeline, pipeline),
            (runs.c.status, status and _check_status(status)),
            (runs.c.trigger, trigger and _check_trigger(trigger)),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(runs.c.run_at >= _aware(since, "since"))
        if until is not None:
            stmt = stmt.where(runs.c.run_at < _aware(until, "until"))
        stmt = stmt.order_by(runs.c.run_at.desc(), runs.c.id.desc())
        if limit:
            stmt = stmt.limit(limit)
        return [record_of(row._mapping) for row in await self._rows(stmt)]

    async def get_run(self, run_id: int) -> RunRecord:
        rows = await self._rows(sa.select(runs).where(runs.c.id == run_id))
        if not rows:
            raise RunNotFound(f"no run {run_id} in {self.label}")
        return record_of(rows[0]._mapping)

    async def stats(self, *, since: datetime | None = None) -> list[dict]:
        """Per schedule (kind 'schedule') and per pipeline (kind 'pipeline', manual runs
        included): runs, successes, failures, success_rate, p50_s, p95_s, last_status,
        last_at. `runs` counts terminal rows that ran (not skipped / missed)."""
        _aware(since, "since")
        out = []
        durations = await self._durations(since)
        for kind, column in (("schedule", runs.c.schedule), ("pipeline", runs.c.pipeline)):
            for row in await self._rows(_count_stmt(column, since)):
                last = await self._last(column, row.name, since)
                out.append(_stats_row(kind, row, last, durations.get((kind, row.name), [])))
        return out

    async def _durations(self, since: datetime | None) -> dict[tuple[str, str], list[float]]:
        if self._reader is None or self._empty:
            return {}
        seconds = _duration_sql(self._reader.dialect.name)
        stmt = sa.select(runs.c.schedule, runs.c.pipeline, seconds.label("s")).where(
            runs.c.status.in_(TERMINAL), runs.c.started_at.is_not(None)
        )
        stmt = stmt.where(runs.c.finished_at.is_not(None))
        if since is not None:
            stmt = stmt.where(runs.c.run_at >= since)
        found: dict[tuple[str, str], list[float]] = {}
        for row in await self._rows(stmt):
            # julianday() arithmetic is good to about 0.1 ms; PostgreSQL's EXTRACT(EPOCH)
            # returns numeric, i.e. Decimal, which JSON cannot encode
            seconds = round(float(row.s), 3)
            if row.schedule is not None:
                found.setdefault(("schedule", row.schedule), []).append(seconds)
            found.setdefault(("pipeline", row.pipeline), []).append(seconds)
        return found

    async def _last(self, column, name: str, since: datetime | None):
        stmt = sa.select(runs.c.status, runs.c.run_at, runs.c.pipeline).where(column == name)
        if since is not None:
            stmt = stmt.where(runs.c.run_at >= since)
        rows = await self._rows(stmt.order_by(runs.c.run_at.desc(), runs.c.id.desc()).limit(1))
        return rows[0]


def _count_stmt(column, since: datetime | None):
    def count_of(statuses) -> sa.ColumnElement:
        return sa.func.sum(sa.case((runs.c.status.in_(statuses), 1), else_=0))

    ran = TERMINAL - {"skipped", "missed"}
    stmt = sa.select(
        column.label("name"),
        count_of(ran).label("runs"),
        count_of({"success"}).label("successes"),
        count_of(FAILURES).label("failures"),
        count_of({"cancelled"}).label("cancelled"),
        count_of({"skipped"}).label("skipped"),
        count_of({"missed"}).label("missed"),
    ).where(column.is_not(None))
    if since is not None:
        stmt = stmt.where(runs.c.run_at >= since)
    return stmt.group_by(column).order_by(column)


def _stats_row(kind: str, counts, last, durations: list[float]) -> dict:
    durations = sorted(durations)
    return {
        "kind": kind,
        "name": counts.name,
        "schedule": counts.name if kind == "schedule" else None,
        "pipeline": last.pipeline,
        "runs": counts.runs,
        "successes": counts.successes,
        "failures": counts.failures,
        "cancelled": counts.cancelled,
        "skipped": counts.skipped,
        "missed": counts.missed,
        "success_rate": counts.successes / counts.runs if counts.runs else None,
        "p50_s": percentile(durations, 50),
        "p95_s": percentile(durations, 95),
        "last_status": last.status,
        "last_at": iso(last.run_at),
    }


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def _duration_sql(dialect: str) -> sa.ColumnElement:
    if dialect == "sqlite":
        return (sa.func.julianday(runs.c.finished_at) - sa.func.julianday(runs.c.started_at)) * (
            86400.0
        )
    return sa.extract("epoch", runs.c.finished_at - runs.c.started_at)


def _as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _on_connection(engine: sa.Engine, query: Callable[[sa.Connection], Any]) -> Any:
    with engine.connect() as conn:
        return query(conn)


def _schema_state(conn: sa.Connection) -> tuple[set[str], str | None]:
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" not in tables:
        return tables, None
    return tables, conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _paused_insert(url: str):
    if is_sqlite(url):
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(paused_schedules).on_conflict_do_nothing()


async def _reap(conn: AsyncConnection, now: datetime, live: list[tuple[str, int]]) -> list:
    message = (
        sa.literal("the daemon running it (host ")
        + runs.c.host
        + sa.literal(", pid ")
        + sa.cast(runs.c.pid, sa.String)
        + sa.literal(", instance ")
        + sa.func.coalesce(runs.c.instance_id, "-")
        + sa.literal(") died before it finished")
    )
    stmt = sa.update(runs).where(runs.c.status.in_(ACTIVE))
    if live:
        stmt = stmt.where(sa.tuple_(runs.c.host, runs.c.pid).not_in(live))
    stmt = stmt.values(
        status="crashed", finished_at=now, error_type="Crashed", error_message=message
    ).returning(*runs.c)
    return [row._mapping for row in (await conn.execute(stmt)).all()]


async def _prune_chunk(conn: AsyncConnection, before: datetime) -> int:
    doomed = (
        sa.select(runs.c.id)
        .where(runs.c.status.in_(TERMINAL), runs.c.finished_at < before)
        .limit(PRUNE_CHUNK_ROWS)
    )
    result = await conn.execute(sa.delete(runs).where(runs.c.id.in_(doomed.scalar_subquery())))
    return result.rowcount


__all__ = [
    "ACTIVE",
    "STATUSES",
    "TERMINAL",
    "TRIGGERS",
    "History",
    "RunError",
    "RunRecord",
    "upgrade",
    "downgrade",
]
