"""The run history: one row per run, written by one writer task, read by the CLI.

The only package (with migrations/env.py) that imports SQLAlchemy. Its rooms:
`schema` (statuses, the run record, tables), `engine` (connection settings), `migrate`
(alembic), `writer` (group commit, and holding rows through faults), `spool` (rows held
across a stop), `queries` (reads that never take the write lock), `opening` (start-up
that is bounded and says what is wrong), and `History` here, which ties them together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from daemon.errors import HistoryError
from daemon.history import leases, prune, spool
from daemon.history.engine import (
    WRITER_BUSY_TIMEOUT_MS,
    describe,
    is_sqlite,
    make_engine,
    make_reader,
    writer_engine,
)
from daemon.history.link import Link, open_link
from daemon.history.migrate import (
    SCHEMA_REVISION,
    alembic_config,
    check_revision,
    downgrade,
    migrations_dir,
    schema_state,
    upgrade,
)
from daemon.history.opening import open_bounded
from daemon.history.queries import Reader, percentile
from daemon.history.runlogs import RunLogRows
from daemon.history.schema import (
    ACTIVE,
    FAILURES,
    SLOT_TRIGGERS,
    STATUSES,
    SUMMARY_MAX_CHARS,
    TERMINAL,
    TRIGGERS,
    RunError,
    RunRecord,
    aware,
    check_status,
    check_trigger,
    clip,
    error_columns,
    metadata,
    paused_schedules,
    record_of,
    runs,
    utcnow,
    without_none,
)
from daemon.history.writer import Writer, await_write
from daemon.redact import DEFAULT_MAX_ROW_BYTES, bounded, is_secret_key, json_safe, redact
from daemon.settings import sqlite_path

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


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


class History(Reader, RunLogRows):
    """The run history. Build with `await History.open(url)`; `close()` when done."""

    schema_revision: str | None = None  # readers: the database's alembic revision

    def __init__(
        self,
        url: str,
        *,
        reader: AsyncEngine | sa.Engine | None,
        writer: Writer | None,
        instance_id: str | None,
        max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    ):
        self.url = url
        self.label = describe(url)
        self.instance_id = instance_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.max_row_bytes = max_row_bytes
        self.spool_path = spool_path_for(url)
        self.unwritten = 0  # row writes neither written nor spooled at close (lost)
        self.spooled = 0  # row writes left in the spool at close
        self._reader = reader
        self._writer = writer
        self._empty = False  # a reader found a database with no tables yet
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        *,
        readonly: bool = False,
        migrate: bool = True,
        instance_id: str | None = None,
        outage_s: float = 300.0,
        max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    ) -> _Opening:
        """`outage_s` bounds both the wait for a locked database while opening and how
        long the writer holds rows before `on_outage` (see History.on_outage)."""
        if readonly:
            return _Opening(cls._open_readonly(url))
        return _Opening(cls._open_writer(url, migrate, instance_id, outage_s, max_row_bytes))

    @classmethod
    async def _open_writer(
        cls, url: str, migrate: bool, instance_id, outage_s: float, max_row_bytes: int
    ) -> History:
        if migrate:
            await open_bounded(url, wait_s=outage_s)
        else:
            await cls._check_readable(url)
        link = open_link(url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)
        path = sqlite_path(url)

        async def reopen() -> Link:
            await upgrade(url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)
            return open_link(url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)

        writer = Writer(link, describe(url), outage_s=outage_s, reopen=reopen, watch_file=path)
        reader = make_reader(url) if path is not None else link.engine
        history = cls(
            url, reader=reader, writer=writer, instance_id=instance_id, max_row_bytes=max_row_bytes
        )
        writer.start()
        try:
            await history._replay_spool()
        except BaseException:
            await history.close(timeout_s=5)
            raise
        return history

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
        tables, current = await self._read(schema_state)
        if not tables:
            self._empty = True
            return
        if "alembic_version" not in tables or "runs" not in tables:
            raise HistoryError(
                f"{self.label}: not a flowerd history database (tables: "
                f"{', '.join(sorted(tables))})"
            )
        check_revision(current, self.label)
        self.schema_revision = current

    async def _replay_spool(self) -> None:
        """Rows a stop left in the spool are written before anything else happens."""
        path = self.spool_path
        if path is None or not path.exists():
            return
        entries = spool.read(path)
        ops = [self._writer.submit(kind, values) for kind, values in entries]
        await asyncio.gather(*(await_write(op) for op in ops))
        path.unlink()
        if ops:
            log.warning("%s: wrote %d row(s) held in the spool %s", self.label, len(ops), path)

    async def close(self, timeout_s: float | None = None) -> int:
        """Drain queued writes (waiting at most `timeout_s` for an unavailable database),
        stop the writer, dispose the engines. What could not be written goes to the spool;
        returns how many row writes were neither written nor spooled."""
        if self._closed:
            return self.unwritten
        self._closed = True
        if self._writer is not None:
            left = await self._writer.stop(timeout_s)
            if left:
                self._spool(left)
            else:
                await self._optimize()
            await self._writer.link.close()
        reader, self._reader = self._reader, None
        if isinstance(reader, sa.Engine):
            reader.dispose()
        elif reader is not None and reader is not self._writer_engine():
            await reader.dispose()
        return self.unwritten

    def _writer_engine(self):
        """The async engine the writer shares with readers (not SQLite), if any."""
        return getattr(getattr(self._writer, "link", None), "engine", None)

    def _spool(self, ops: list) -> None:
        entries = []
        for op in ops:
            if op.kind == "insert" and op.values.get("status") in ACTIVE:
                # a claim that never landed: its pipeline never started
                entries.append(("insert", _never_started(op.values)))
            elif op.kind in spool.SPOOLED_KINDS:
                entries.append((op.kind, op.values))
        dropped = len(ops) - len(entries)  # reads-and-writes ('call'): their callers retry
        message = f"{self.label}: the history was unavailable when flowerd stopped"
        try:
            if entries:
                spool.write(self.spool_path, entries)
        except (OSError, TypeError) as exc:
            self.unwritten += len(entries)
            slots = sum(1 for kind, values in entries if kind == "insert")
            log.critical(
                "%s; %d row write(s) could not be spooled to %s either (%s): %d slot row(s) "
                "are decided again by catch-up at the next start, and %d run(s) whose end "
                "was not written will be recorded 'crashed' then",
                message,
                len(entries),
                self.spool_path,
                exc,
                slots,
                len(entries) - slots,
            )
            self._writer.fail(ops, f"{message}; the row could not be spooled: {exc}")
            return
        self.spooled += len(entries)
        if not entries:
            log.error("%s; %d write(s) failed", message, dropped)
            self._writer.fail(ops, message)
            return
        log.error(
            "%s; %d row write(s) held in %s are written at the next start%s",
            message,
            len(entries),
            self.spool_path,
            f" ({dropped} other write(s) failed)" if dropped else "",
        )
        self._writer.fail(ops, f"{message}; the row is held in the spool {self.spool_path}")

    async def _optimize(self) -> None:
        if not is_sqlite(self.url):
            return
        try:
            await self._writer.link.transact(lambda conn: conn.exec_driver_sql("PRAGMA optimize"))
        except sa.exc.DBAPIError as exc:  # best effort: only keeps the planner's stats fresh
            log.debug("PRAGMA optimize failed on %s: %s", self.label, exc)

    async def __aenter__(self) -> History:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # -- health -------------------------------------------------------------------------
    def health(self) -> str:
        """ "ok", or why the history cannot take writes (and since when)."""
        return self._writer.health() if self._writer is not None else "ok"

    def on_fault(self, *, state=None, outage=None) -> None:
        """`state()`: called when an outage starts or ends; `outage(why)`: once, when the
        history has been unwritable for `outage_s` (the daemon then stops, non-zero)."""
        if self._writer is not None:
            if state is not None:
                self._writer.on_state = state
            if outage is not None:
                self._writer.on_outage = outage

    @property
    def commits(self) -> int:
        """How many write transactions the writer has committed (group-commit tests)."""
        return self._writer.commits if self._writer else 0

    @property
    def write_errors(self) -> int:
        """Failed write transactions since open (flowerd_history_write_errors_total)."""
        return self._writer.write_errors if self._writer else 0

    # -- writes -------------------------------------------------------------------------
    def _submit(self, kind: str, values: Any):
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
        rerun_of: int | None = None,
    ) -> int | None:
        """Insert a run's row; its id, or None if the slot (schedule, scheduled_at) is
        already in the history (slot triggers only: a `rerun` row repeats a slot and
        names the run it repeats in `rerun_of`). Durable when this returns."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=scheduled_at,
            async_driver=async_driver,
            status=check_status(status),
            started_at=started_at,
        )
        values["final_vars"] = [str(v) for v in final_vars]
        values["inputs"] = bounded(redact(inputs or {}), self.max_row_bytes)
        values["rerun_of"] = rerun_of
        return await await_write(self._submit("insert", without_none(values)))

    def slot_write(
        self,
        *,
        schedule: str,
        pipeline: str,
        scheduled_at: datetime,
        status: str,
        trigger: str = "schedule",
        async_driver: bool = True,
        error: RunError | None = None,
    ):
        """Queue a slot that did not run as one terminal row; returns the write to await
        (its result: the row id, or None if the slot is already in the history). Catch-up
        queues many before awaiting any, so they share a commit."""
        values = self._row(
            pipeline=pipeline,
            trigger=trigger,
            schedule=schedule,
            scheduled_at=scheduled_at,
            async_driver=async_driver,
            status=check_status(status, TERMINAL),
            started_at=None,
        )
        values.update(finished_at=utcnow(), **error_columns(error))
        return await_write(self._submit("insert", without_none(values)))

    async def record_slot(self, **slot) -> int | None:
        """A slot that did not run (missed, skipped, cancelled ...), as one terminal row;
        None if the slot is already in the history."""
        return await self.slot_write(**slot)

    def _row(self, *, pipeline, trigger, schedule, scheduled_at, async_driver, status, started_at):
        check_trigger(trigger)
        aware(scheduled_at, "scheduled_at")
        aware(started_at, "started_at")
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

    def mark_running_nowait(self, run_id: int, *, started_at: datetime) -> None:
        """Queued, not awaited: a pipeline starts once its claim is durable, without
        waiting for another commit (finish writes started_at too)."""
        self._running_op(run_id, started_at).future.add_done_callback(_log_failure)

    async def mark_running(self, run_id: int, *, started_at: datetime) -> None:
        await await_write(self._running_op(run_id, started_at))

    def _running_op(self, run_id: int, started_at: datetime):
        aware(started_at, "started_at")
        values = {"b_id": run_id, "b_status": "running", "b_started_at": started_at}
        return self._submit("running", values)

    async def finish(
        self,
        run_id: int,
        *,
        status: str,
        finished_at: datetime,
        attempts: int,
        started_at: datetime | None = None,
        error: RunError | None = None,
        result_summary: str | None = None,
        result: Any = None,
        attempt_errors: list[dict] | None = None,
    ) -> None:
        """The terminal row. Queued before the first await, so it lands even when the
        calling task is cancelled (the CancelledError is re-raised after the commit)."""
        check_status(status, TERMINAL)
        aware(finished_at, "finished_at")
        values = {
            "b_id": run_id,
            "b_status": status,
            "b_started_at": started_at,
            "b_finished_at": finished_at,
            "b_duration_s": (finished_at - started_at).total_seconds() if started_at else None,
            "b_attempts": attempts,
            "b_result_summary": clip(result_summary, SUMMARY_MAX_CHARS),
            "b_result": self._stored_result(result),
            "b_attempt_errors": list(attempt_errors) if attempt_errors else None,
        }
        values.update({f"b_{k}": v for k, v in error_columns(error).items()})
        await await_write(self._submit("finish", without_none(values)))

    def _stored_result(self, result: Any) -> dict | None:
        if not isinstance(result, Mapping):
            return None
        return bounded(json_safe(result), self.max_row_bytes)

    async def reap_crashed(self, *, now: datetime, lease_s: float | None = None) -> list[RunRecord]:
        """Rows left queued/running by a daemon that died become `crashed` (one UPDATE).
        Rows of a process still alive on this host (say a `flowerd run` in another
        terminal) are left alone, and, given `lease_s`, so are the rows of every daemon
        whose lease is live (several daemons on one PostgreSQL)."""
        aware(now, "now")
        if is_sqlite(self.url):
            lease_s = None  # one daemon per file: no other lease is live
        live = await self._live_writers()
        reap = functools.partial(_reap, now=now, live=live, lease_s=lease_s)
        rows = await await_write(self._submit("call", reap))
        return [record_of(row) for row in rows]

    # -- leases (several daemons on one database; see leases.py) --------------------------
    def _me(self) -> dict:
        return {"id": self.instance_id, "host": self.host, "pid": self.pid}

    async def register_daemon(self) -> None:
        """Take a lease. Lease rows this one outlives are dropped first, so the start-up
        reap takes their runs at once: on SQLite every other row (one daemon per file,
        the lock file says so), elsewhere those of dead processes on this host."""
        me = self._me()
        if is_sqlite(self.url):
            dead = None
        else:
            rows = await self.daemons(lease_s=0)
            dead = [
                row["id"]
                for row in rows
                if row["host"] == self.host
                and row["pid"] != self.pid
                and not _pid_alive(row["pid"])
            ]
        await await_write(self._submit("call", lambda conn: leases.register(conn, me, dead)))

    async def unregister_daemon(self) -> None:
        me = self.instance_id
        await await_write(self._submit("call", lambda conn: leases.unregister(conn, me)))

    async def renew_lease(self, lease_s: float) -> leases.Renewal:
        """Renew this daemon's lease; reap expired daemons' runs; read shared state."""
        me = self._me()
        renewal = await await_write(self._submit("call", lambda c: leases.renew(c, me, lease_s)))
        crashed = [record_of(row) for row in renewal.crashed]
        return dataclasses.replace(renewal, crashed=crashed)

    async def request_reload(self) -> int:
        """Ask the other daemons on this history to reload their schedule files."""
        me = self.instance_id
        return await await_write(self._submit("call", lambda c: leases.request_reload(c, me)))

    async def daemons(self, lease_s: float) -> list[dict]:
        """The daemons holding a lease row (`status --json`'s `daemons`), oldest first."""
        if self._reader is None or self._empty:
            return []
        return await self._read(lambda conn: leases.listing(conn, lease_s))

    async def _live_writers(self) -> list[tuple[str, int]]:
        stmt = sa.select(runs.c.host, runs.c.pid).where(runs.c.status.in_(ACTIVE)).distinct()
        pairs = [(row.host, row.pid) for row in await self._rows(stmt)]
        return [
            (host, pid)
            for host, pid in pairs
            if host == self.host and pid != self.pid and _pid_alive(pid)
        ]

    async def set_paused(self, schedule: str, paused: bool, reason: str | None = None) -> None:
        """Pause (with `reason` when it paused itself) or resume; a pause of a paused
        schedule keeps the first pause."""
        if paused:
            values = {"schedule": schedule, "paused_at": utcnow(), "reason": reason}
            stmt = _paused_insert(self.url).values(**values)
        else:
            stmt = sa.delete(paused_schedules).where(paused_schedules.c.schedule == schedule)
        await await_write(self._submit("call", lambda conn: conn.execute(stmt)))

    async def prune(
        self, *, before: datetime, chunk_rows: int = prune.CHUNK_ROWS, pause_s: float = 0.0
    ) -> int:
        """Delete terminal rows finished before `before` (each schedule's newest slot
        stays: catch-up starts from it), `chunk_rows` per transaction and `pause_s`
        between them, so a running daemon's writer is never held up for long."""
        aware(before, "before")
        kept = await self._kept_ids()
        deleted = 0
        while True:
            chunk = await await_write(
                self._submit("call", lambda c: prune.prune_chunk(c, before, kept, chunk_rows))
            )
            deleted += chunk
            if chunk < chunk_rows:
                return deleted
            await asyncio.sleep(pause_s)

    async def prune_preview(self, *, before: datetime) -> list[tuple[str | None, str, int]]:
        """What `prune(before=...)` would delete: (schedule, status, count) rows."""
        aware(before, "before")
        rows = await self._rows(prune.preview_stmt(before, await self._kept_ids()))
        return [(row.schedule, row.status, row.count) for row in rows]

    async def _kept_ids(self) -> set[int]:
        """The rows no prune deletes: each schedule's newest slot (read once per prune)."""
        return {row.id for row in await self._rows(prune.kept_ids_stmt())}


def spool_path_for(url: str) -> Path | None:
    path = sqlite_path(url)
    return path.with_name(path.name + ".spool") if path is not None else None


def _never_started(values: dict) -> dict:
    return {
        **values,
        "status": "cancelled",
        "finished_at": utcnow(),
        "error_type": "Cancelled",
        "error_message": "the daemon stopped while the history was unavailable; "
        "the run never started (flowerd starts a pipeline only once its row is written)",
    }


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a run's 'running' mark could not be written: %s", future.exception())


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


def _reap(
    conn: sa.Connection, now: datetime, live: list[tuple[str, int]], lease_s: float | None
) -> list:
    stmt = sa.update(runs).where(runs.c.status.in_(ACTIVE))
    if live:
        stmt = stmt.where(sa.tuple_(runs.c.host, runs.c.pid).not_in(live))
    if lease_s is not None:  # never the rows of a daemon whose lease is live
        alive = leases.live_ids(conn, lease_s)
        stmt = stmt.where(sa.or_(runs.c.instance_id.is_(None), runs.c.instance_id.not_in(alive)))
    return [row._mapping for row in conn.execute(leases.crash(stmt, now)).all()]


__all__ = [
    "ACTIVE",
    "FAILURES",
    "SCHEMA_REVISION",
    "SLOT_TRIGGERS",
    "STATUSES",
    "TERMINAL",
    "TRIGGERS",
    "History",
    "RunError",
    "RunRecord",
    "alembic_config",
    "describe",
    "downgrade",
    "is_secret_key",
    "make_engine",
    "metadata",
    "migrations_dir",
    "percentile",
    "redact",
    "runs",
    "upgrade",
    "writer_engine",
]
