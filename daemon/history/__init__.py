"""The run history: one row per run, written by one writer task, read by the CLI.

The only package (with migrations/env.py) that imports SQLAlchemy. Its rooms:
`schema` (statuses, the run record, tables), `engine` (connection settings), `migrate`
(alembic), `writer` (group commit, and holding rows through faults), `spool` (rows held
across a stop), `queries` (reads that never take the write lock), `opening` (start-up
that is bounded and says what is wrong), and `History` here, which ties them together:
it opens, closes and reports health itself, and holds one part a noun, each made with
what it needs -- `Ops` (ops: the writer's submit) and `Reads` (queries: the reader
engine), which the others take: `Reader` (queries), `RunRows` (run_rows: a run's rows),
`LogRows` (log_rows), `Sharing` (sharing: leases, reaping crashed runs, pauses), `Prune`
(prune), `AuditRows` (audit_rows: who did what) and `Spool` (spool). The parts' public
methods are History's own (`_On`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from daemon.errors import HistoryError
from daemon.history.audit_rows import AuditRows
from daemon.history.engine import (
    WRITER_BUSY_TIMEOUT_MS,
    describe,
    is_sqlite,
    make_engine,
    make_reader,
    writer_engine,
)
from daemon.history.link import Link, open_link
from daemon.history.log_rows import LogRows
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
from daemon.history.ops import Ops, Origin
from daemon.history.prune import Prune
from daemon.history.queries import Reader, Reads, percentile
from daemon.history.redact import DEFAULT_MAX_ROW_BYTES, is_secret_key, redact
from daemon.history.run_rows import RunRows
from daemon.history.schema import (
    ACTIVE,
    EVENT_TRIGGERS,
    FAILURES,
    SLOT_TRIGGERS,
    STATUSES,
    TERMINAL,
    TRIGGERS,
    RunError,
    RunRecord,
    metadata,
    runs,
)
from daemon.history.sharing import Sharing
from daemon.history.spool import Spool, spool_path_for
from daemon.history.writer import Writer
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


class _On:
    """`claim = _On("runs", RunRows.claim)`: `history.claim` is the part's own bound
    method (`history.runs.claim`), kept in the instance at first use like a
    cached_property, so later calls cost one dict lookup and no wrapper frame on the
    writer's hot path. `History.claim` is `RunRows.claim` (its doc and signature)."""

    def __init__(self, part: str, method: Callable):
        self._get = attrgetter(f"{part}.{method.__name__}")
        self.__doc__ = method.__doc__
        self.__wrapped__ = method

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, history: History | None, owner: type | None = None):
        if history is None:
            return self.__wrapped__
        bound = history.__dict__[self._name] = self._get(history)
        return bound


class History:
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
        state_dir: Path | None = None,
    ):
        self.url = url
        self.label = describe(url)
        self.instance_id = instance_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._writer = writer
        self._closed = False
        ops = Ops.of(writer, self.label)
        origin = Origin(instance_id, self.host, self.pid)
        self.reads = Reads(url, reader)
        self.reader = Reader(self.reads, self.label)
        self.runs = RunRows(ops, origin, max_row_bytes)
        self.logs = LogRows(ops, self.reads)
        self.sharing = Sharing(ops, self.reads, origin)
        self.pruning = Prune(ops, self.reads)
        self.audit_rows = AuditRows(ops, self.reads)
        self.spool = Spool(spool_path_for(url, state_dir), self.label, ops)

    # -- the parts' methods, as History's ------------------------------------------------
    last_slots = _On("reader", Reader.last_slots)
    newest_slots = _On("reader", Reader.newest_slots)
    slot_runs = _On("reader", Reader.slot_runs)
    get_runs = _On("reader", Reader.get_runs)
    get_run = _On("reader", Reader.get_run)
    reruns_of = _On("reader", Reader.reruns_of)
    schedule_names = _On("reader", Reader.schedule_names)
    last_successes = _On("reader", Reader.last_successes)
    paused = _On("reader", Reader.paused)
    paused_reasons = _On("reader", Reader.paused_reasons)
    pending_events = _On("reader", Reader.pending_events)
    failures_in_a_row = _On("reader", Reader.failures_in_a_row)
    list_runs = _On("reader", Reader.list_runs)
    stats = _On("reader", Reader.stats)
    claim = _On("runs", RunRows.claim)
    record_event = _On("runs", RunRows.record_event)
    slot_write = _On("runs", RunRows.slot_write)
    record_slot = _On("runs", RunRows.record_slot)
    mark_running_nowait = _On("runs", RunRows.mark_running_nowait)
    mark_running = _On("runs", RunRows.mark_running)
    finish = _On("runs", RunRows.finish)
    queue_log_lines = _On("logs", LogRows.queue_log_lines)
    log_lines = _On("logs", LogRows.log_lines)
    previous_outcome = _On("logs", LogRows.previous_outcome)
    reap_crashed = _On("sharing", Sharing.reap_crashed)
    adopt_events = _On("sharing", Sharing.adopt_events)
    register_daemon = _On("sharing", Sharing.register_daemon)
    unregister_daemon = _On("sharing", Sharing.unregister_daemon)
    renew_lease = _On("sharing", Sharing.renew_lease)
    request_reload = _On("sharing", Sharing.request_reload)
    daemons = _On("sharing", Sharing.daemons)
    set_paused = _On("sharing", Sharing.set_paused)
    prune = _On("pruning", Prune.prune)
    prune_preview = _On("pruning", Prune.prune_preview)
    add_audit = _On("audit_rows", AuditRows.add_audit)
    audit = _On("audit_rows", AuditRows.audit)

    @property
    def spooled(self) -> int:
        """Row writes left in the spool at close."""
        return self.spool.spooled

    @property
    def unwritten(self) -> int:
        """Row writes neither written nor spooled at close (lost)."""
        return self.spool.unwritten

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
        state_dir: Path | None = None,
    ) -> _Opening:
        """`outage_s` bounds both the wait for a locked database while opening and how
        long the writer holds rows before `on_outage` (see History.on_outage).
        `state_dir`: the project's own state (`.flowerd/`), where the spool of a database
        that is not a file lives (a SQLite file's spool lies beside it)."""
        if readonly:
            return _Opening(cls._open_readonly(url))
        return _Opening(
            cls._open_writer(url, migrate, instance_id, outage_s, max_row_bytes, state_dir)
        )

    @classmethod
    async def _open_writer(
        cls,
        url: str,
        migrate: bool,
        instance_id,
        outage_s: float,
        max_row_bytes: int,
        state_dir: Path | None,
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
            url,
            reader=reader,
            writer=writer,
            instance_id=instance_id,
            max_row_bytes=max_row_bytes,
            state_dir=state_dir,
        )
        writer.start()
        try:
            await history.spool.replay()
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
        tables, current = await self.reads.read(schema_state)
        if not tables:
            self.reads.empty = True
            return
        if "alembic_version" not in tables or "runs" not in tables:
            raise HistoryError(
                f"{self.label}: not a flowerd history database (tables: "
                f"{', '.join(sorted(tables))})"
            )
        check_revision(current, self.label)
        self.schema_revision = current

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
                self.spool.hold(left)
            else:
                await self._optimize()
            await self._writer.link.close()
        await self.reads.close(shared=self._writer_engine())
        return self.unwritten

    def _writer_engine(self):
        """The async engine the writer shares with readers (not SQLite), if any."""
        return getattr(getattr(self._writer, "link", None), "engine", None)

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

    @property
    def gave_up(self) -> bool:
        """The history has been unwritable for `outage_s` (and is still)."""
        return self._writer is not None and self._writer.gave_up

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


__all__ = [
    "ACTIVE",
    "EVENT_TRIGGERS",
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
