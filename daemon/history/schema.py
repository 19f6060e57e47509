"""What the history stores: statuses, triggers, the run record and the tables.

Everything that reads runs imports from here; nothing here talks to a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from daemon.durations import iso
from daemon.errors import UsageError, did_you_mean

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
TRIGGERS = ("schedule", "catchup", "manual", "backfill", "rerun", "upstream", "file", "webhook")
# the triggers whose rows hold a slot: (schedule, scheduled_at) is unique among them only
# (a `rerun` repeats a slot, a `manual` run of a schedule stores the time it was asked)
SLOT_TRIGGERS = ("schedule", "catchup", "backfill", "upstream")
# the partial unique index's WHERE, as literal SQL: the same text in the table, the
# migration and the writer's ON CONFLICT target (SQLite matches them by their terms)
SLOT_KEY_WHERE = sa.text('"trigger" IN (' + ", ".join(f"'{t}'" for t in SLOT_TRIGGERS) + ")")
SLOT_KEY_INDEX = "uq_runs_slot"
# events (daemon.incoming): their slot key is (schedule, event_key) -- the file's identity or
# the delivery's key -- unique among the rows that have one (a partial unique index too:
# two events may be seen in the same microsecond, so scheduled_at cannot be their key)
EVENT_TRIGGERS = ("file", "webhook")
EVENT_KEY_WHERE = sa.text('"event_key" IS NOT NULL')
EVENT_KEY_INDEX = "uq_runs_event"

SUMMARY_MAX_CHARS = 2_000
MESSAGE_MAX_CHARS = 10_000
TRACEBACK_MAX_CHARS = 100_000


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
    result: dict | None = None
    error: RunError | None = None
    host: str = ""
    pid: int = 0
    instance_id: str | None = None
    rerun_of: int | None = None
    attempt_errors: list = field(default_factory=list)
    # an event's run (trigger file / webhook): {kind, key, path, received_at}; else None
    event: dict | None = None
    payload: dict | None = None  # a webhook's JSON body (the `payload` input); not in to_json
    traceparent: str | None = None  # the caller's W3C trace context; not in to_json
    nodes: list = field(default_factory=list)  # [{name, started_at, duration_s, status}]
    nodes_omitted: int = 0  # nodes past the 1,000 kept (the fastest)
    trace_id: str | None = None  # the run's OpenTelemetry trace (32 hex digits)
    links: dict | None = None  # into tracking tools, e.g. {"hamilton_ui": URL}

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
            "daemon": self.instance_id,
            "result": self.result if self.status == "success" else None,
            "rerun_of": self.rerun_of,
            "attempt_errors": list(self.attempt_errors),
            "event": self.event,
            "nodes": list(self.nodes),
            "nodes_omitted": self.nodes_omitted,
            "trace_id": self.trace_id,
            "links": dict(self.links or {}),
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
    # the columns below are in the order the migrations added them: a new history made at
    # head from these models (history/migrate.py) has the same column order as one that
    # went through every migration, so `SELECT *` reads alike in both
    sa.Column("result", sa.JSON),
    sa.Column("rerun_of", sa.Integer),  # the run a `rerun` row repeats
    # the slot key: unique among the rows of SLOT_TRIGGERS (a partial unique index)
    sa.Index(
        SLOT_KEY_INDEX,
        "schedule",
        "scheduled_at",
        unique=True,
        sqlite_where=SLOT_KEY_WHERE,  # postgresql_where: see with_postgresql()
    ),
    sa.Index(None, "rerun_of"),
    # the errors of the attempts before the last (retries): [{type, message}], or NULL
    sa.Column("attempt_errors", sa.JSON),
    # finished_at - started_at of a run that ran to an end, kept so `flowerd stats` reads
    # its percentiles off an index instead of parsing every row's two timestamps
    sa.Column("duration_s", sa.Float),
    sa.Index(None, "run_at"),
    sa.Index(None, "schedule", "run_at"),
    sa.Index(None, "schedule", "status", "run_at"),
    sa.Index(None, "pipeline", "run_at"),
    sa.Index(None, "status", "run_at"),
    sa.Index(None, "schedule", "duration_s"),  # stats: percentiles per schedule
    sa.Index(None, "pipeline", "duration_s"),  # ... and per pipeline
    sa.Index(None, "pipeline", "status"),  # stats: counts per pipeline
    # events (20261207_01): the event's identity, its `event` object, a webhook's body and
    # the caller's trace context
    sa.Column("event_key", sa.Text),
    sa.Column("event", sa.JSON),
    sa.Column("payload", sa.JSON),
    sa.Column("traceparent", sa.String(64)),
    # inside the run (20261207_02): its nodes' timings (bounded), its trace, its links
    sa.Column("nodes", sa.JSON),
    sa.Column("nodes_omitted", sa.Integer),
    sa.Column("trace_id", sa.String(32)),
    sa.Column("links", sa.JSON),
    sa.Index(
        EVENT_KEY_INDEX,
        "schedule",
        "event_key",
        unique=True,
        sqlite_where=EVENT_KEY_WHERE,  # postgresql_where: see with_postgresql()
    ),
    sqlite_autoincrement=True,  # a run id is never given out again (20261130_02)
)

paused_schedules = sa.Table(
    "paused_schedules",
    metadata,
    sa.Column("schedule", sa.String(200), primary_key=True),
    sa.Column("paused_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),  # why it paused itself; null: `flowerd pause`
)

# each run's log (daemon/tell/runlogs.py): one row per line, in the order the run wrote them;
# no foreign key -- `prune` deletes a run's lines with it (history/runlogs.py)
run_logs = sa.Table(
    "run_logs",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("logger", sa.String(200), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

# several daemons on one database: each holds a lease row, renewed by the database's clock
daemons = sa.Table(
    "daemons",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the daemon's instance_id
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    # set by a daemon that reloaded its schedules; the others reload too, then clear it
    sa.Column("reload_requested", UTCDateTime),
)


# who did what to the daemon (trigger, pause, ..., stop), written before it takes effect;
# pruned with the runs (daemon/history/audit_rows.py); never holds a secret
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),  # the Unix user or the token's name
    sa.Column("via", sa.String(8), nullable=False),  # "cli" | "http"
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("schedule", sa.String(200)),
    sa.Column("run_id", sa.Integer),
    sa.Column("detail", sa.Text),  # e.g. the client address, a backfill's range
    sa.Index(None, "at"),
)


def without_none(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}


def clip(text: str | None, max_chars: int) -> str | None:
    if text is None or len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…"


def check_status(status: str, allowed: frozenset[str] | tuple[str, ...] = STATUSES) -> str:
    if status not in allowed:
        raise UsageError(
            f"unknown status {status!r}{did_you_mean(status, allowed)}; "
            f"statuses: {', '.join(s for s in STATUSES if s in allowed)}"
        )
    return status


def check_trigger(trigger: str) -> str:
    if trigger not in TRIGGERS:
        raise UsageError(
            f"unknown trigger {trigger!r}{did_you_mean(trigger, TRIGGERS)}; "
            f"triggers: {', '.join(TRIGGERS)}"
        )
    return trigger


def aware(moment: datetime | None, name: str) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment


def error_columns(error: RunError | None) -> dict:
    return {
        "error_type": clip(error.type, 200) if error else None,
        "error_message": clip(error.message, MESSAGE_MAX_CHARS) if error else None,
        "error_traceback": clip(error.traceback, TRACEBACK_MAX_CHARS) if error else None,
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
        result=row.get("result"),
        error=error,
        host=row["host"],
        pid=row["pid"],
        instance_id=row["instance_id"],
        rerun_of=row.get("rerun_of"),
        attempt_errors=list(row.get("attempt_errors") or []),
        event=row.get("event"),
        payload=row.get("payload"),
        traceparent=row.get("traceparent"),
        nodes=list(row.get("nodes") or []),
        nodes_omitted=row.get("nodes_omitted") or 0,
        trace_id=row.get("trace_id"),
        links=row.get("links"),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def with_postgresql() -> None:
    """The slot key's WHERE for PostgreSQL as well, given once a PostgreSQL history is
    used (and by migrations/env.py): declaring it imports SQLAlchemy's PostgreSQL
    dialect, ~15 ms of every SQLite command otherwise. The DDL lives in the migrations;
    the metadata must match them for alembic's comparisons."""
    for name, where in ((SLOT_KEY_INDEX, SLOT_KEY_WHERE), (EVENT_KEY_INDEX, EVENT_KEY_WHERE)):
        index = next(index for index in runs.indexes if index.name == name)
        if "postgresql_where" not in index.dialect_kwargs:
            index.dialect_kwargs["postgresql_where"] = where
