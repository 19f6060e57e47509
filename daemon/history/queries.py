"""Read-only queries (CLI, HTTP API, page, catch-up). Readers never take the write lock:
on SQLite they go through an engine that opens the file read-only (`mode=ro`) in a worker
thread, so the CLI can never block the daemon's writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from daemon.durations import iso
from daemon.errors import RunNotFound, UsageError
from daemon.history.engine import unusable
from daemon.history.schema import (
    FAILURES,
    SLOT_TRIGGERS,
    TERMINAL,
    RunRecord,
    aware,
    check_status,
    check_trigger,
    paused_schedules,
    record_of,
    runs,
)
from daemon.history.writer import is_transient

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


class Reads:
    """The reader engine and how every query runs on it (the parts that read take this):
    `read(query)`, and `rows` / `records` of a statement, [] where there is nothing to
    read (no database yet, or one with no tables: `empty`)."""

    def __init__(self, url: str, engine: AsyncEngine | sa.Engine | None):
        self.url = url
        self.engine = engine
        self.empty = False  # a reader found a database with no tables yet

    @property
    def nothing(self) -> bool:
        """No database to read (none yet, one with no tables, or closed)."""
        return self.engine is None or self.empty

    async def read(self, query: Callable[[sa.Connection], Any]) -> Any:
        """Run `query(connection)` on the reader: in a worker thread for SQLite's sync
        read-only engine, through run_sync for an async engine."""
        engine = self.engine
        try:
            if isinstance(engine, sa.Engine):
                return await asyncio.to_thread(_on_connection, engine, query)
            async with engine.connect() as conn:
                return await conn.run_sync(query)
        except Exception as exc:
            if isinstance(exc, sa.exc.DBAPIError) or is_transient(exc):  # server gone too
                raise unusable(self.url, exc) from None
            raise

    async def rows(self, stmt) -> list:
        if self.nothing:
            return []
        return await self.read(lambda conn: conn.execute(stmt).all())

    async def records(self, stmt) -> list[RunRecord]:
        """Rows made records where they are read: in the reader's thread for SQLite, so
        a page of runs (JSON columns parsed) never holds the event loop."""
        if self.nothing:
            return []
        return await self.read(lambda conn: _records_of(conn.execute(stmt)))

    async def close(self, shared: AsyncEngine | None) -> None:
        """Dispose the engine, unless it is `shared` (the writer's, not SQLite)."""
        engine, self.engine = self.engine, None
        if isinstance(engine, sa.Engine):
            engine.dispose()
        elif engine is not None and engine is not shared:
            await engine.dispose()


class Reader:
    """The History's queries, each through `Reads`."""

    def __init__(self, reads: Reads, label: str):
        self._reads = reads
        self._label = label

    async def last_slots(self) -> dict[str, datetime]:
        """The newest slot per schedule the daemon fired (not manual runs, reruns or
        backfills, which say nothing about when a daemon ran): where catch-up starts."""
        stmt = (
            sa.select(runs.c.schedule, sa.func.max(runs.c.scheduled_at).label("last"))
            .where(runs.c.schedule.is_not(None), runs.c.scheduled_at.is_not(None))
            .where(runs.c.trigger.in_(FIRED_TRIGGERS))
            .group_by(runs.c.schedule)
        )
        rows = await self._reads.rows(stmt)
        # max() on SQLite returns the raw text, without the column's type: parse it here
        return {row.schedule: _as_utc(row.last) for row in rows}

    async def newest_slots(
        self,
        *,
        triggers: tuple[str, ...],
        status: str | None = None,
        schedules: tuple[str, ...] | None = None,
    ) -> dict[str, datetime]:
        """The newest slot per schedule among rows of `triggers` (and `status`):
        daemon.orchestration.upstream's memory of who succeeded when, seeded at start."""
        stmt = (
            sa.select(runs.c.schedule, sa.func.max(runs.c.scheduled_at).label("last"))
            .where(runs.c.schedule.is_not(None), runs.c.scheduled_at.is_not(None))
            .where(runs.c.trigger.in_(triggers))
            .group_by(runs.c.schedule)
        )
        if status is not None:
            stmt = stmt.where(runs.c.status == status)
        if schedules is not None:
            stmt = stmt.where(runs.c.schedule.in_(schedules))
        return {row.schedule: _as_utc(row.last) for row in await self._reads.rows(stmt)}

    async def slot_runs(
        self, schedule: str, start: datetime, end: datetime
    ) -> dict[datetime, RunRecord]:
        """The slots of `schedule` in [start, end] already in the history, each with its
        latest run (a rerun of the slot, or the slot's own row)."""
        slot_rows = sa.select(runs.c.scheduled_at).where(
            runs.c.schedule == schedule,
            runs.c.scheduled_at >= aware(start, "start"),
            runs.c.scheduled_at <= aware(end, "end"),
            runs.c.trigger.in_(SLOT_TRIGGERS),
        )
        stmt = (
            sa.select(runs)
            .where(runs.c.schedule == schedule, runs.c.scheduled_at.in_(slot_rows))
            .where(runs.c.trigger.in_((*SLOT_TRIGGERS, "rerun")))
            .order_by(runs.c.id)
        )
        found: dict[datetime, RunRecord] = {}
        for row in await self._reads.rows(stmt):
            record = record_of(row._mapping)
            found[record.scheduled_at] = record  # ordered by id: the latest wins
        return found

    async def get_runs(self, ids: list[int]) -> list[RunRecord]:
        """The runs with these ids (those that exist), in id order."""
        found = []
        for chunk in range(0, len(ids), 500):
            stmt = sa.select(runs).where(runs.c.id.in_(ids[chunk : chunk + 500]))
            found += [record_of(row._mapping) for row in await self._reads.rows(stmt)]
        return sorted(found, key=lambda record: record.id)

    async def reruns_of(self, run_id: int) -> list[int]:
        """The ids of the runs that repeat run `run_id`, oldest first."""
        stmt = sa.select(runs.c.id).where(runs.c.rerun_of == run_id).order_by(runs.c.id)
        return [row.id for row in await self._reads.rows(stmt)]

    async def last_successes(self) -> dict[str, datetime]:
        """When each schedule's newest success finished (the metrics' gauge, seeded at
        start): one query for every schedule, not one each."""
        stmt = (
            sa.select(runs.c.schedule, sa.func.max(runs.c.finished_at).label("last"))
            .where(runs.c.status == "success", runs.c.schedule.is_not(None))
            .where(runs.c.finished_at.is_not(None))
            .group_by(runs.c.schedule)
        )
        return {row.schedule: _as_utc(row.last) for row in await self._reads.rows(stmt)}

    async def schedule_names(self) -> set[str]:
        """Every schedule the history has a row of."""
        stmt = sa.select(runs.c.schedule).where(runs.c.schedule.is_not(None)).distinct()
        return {row.schedule for row in await self._reads.rows(stmt)}

    async def paused(self) -> set[str]:
        return {
            row.schedule for row in await self._reads.rows(sa.select(paused_schedules.c.schedule))
        }

    async def paused_reasons(self) -> dict[str, str | None]:
        """Each paused schedule and why it paused itself (None: paused by hand)."""
        stmt = sa.select(paused_schedules.c.schedule, paused_schedules.c.reason)
        return {row.schedule: row.reason for row in await self._reads.rows(stmt)}

    async def pending_events(self) -> dict[str, int]:
        """Per schedule, its events recorded and not started yet (`queued` event rows:
        held while paused or disabled, or waiting their turn)."""
        if self._reads.nothing:
            return {}
        stmt = (
            sa.select(runs.c.schedule, sa.func.count().label("n"))
            .where(runs.c.status == "queued", runs.c.event_key.is_not(None))
            .group_by(runs.c.schedule)
        )
        return {row.schedule: row.n for row in await self._reads.rows(stmt)}

    async def failures_in_a_row(
        self, schedule: str, *, limit: int, since: datetime | None = None
    ) -> int:
        """How many of the schedule's newest finished runs (up to `limit`) ended failed,
        timed_out or crashed in a row -- counted from the history, so right across
        restarts. Rows that did not run (skipped, missed, cancelled) neither count nor
        break the row. `since`: only runs after it count (a resume starts afresh)."""
        counted = ("success", *sorted(FAILURES))
        stmt = (
            sa.select(runs.c.status)
            .where(runs.c.schedule == schedule, runs.c.status.in_(counted))
            .order_by(runs.c.id.desc())
            .limit(limit)
        )
        if since is not None:
            stmt = stmt.where(runs.c.run_at > aware(since, "since"))
        streak = 0
        for row in await self._reads.rows(stmt):
            if row.status not in FAILURES:
                break
            streak += 1
        return streak

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
        before: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching every filter given, newest first; `limit` 0 means all;
        `before`: only the runs listed after run `before` in that order (the next page)."""
        if limit < 0:
            raise UsageError(f"limit must be 0 (all) or more, not {limit}")
        stmt = sa.select(runs)
        if before is not None:
            stmt = stmt.where(_listed_after(before))
        for column, value in (
            (runs.c.schedule, schedule),
            (runs.c.pipeline, pipeline),
            (runs.c.status, status and check_status(status)),
            (runs.c.trigger, trigger and check_trigger(trigger)),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(runs.c.run_at >= aware(since, "since"))
        if until is not None:
            stmt = stmt.where(runs.c.run_at < aware(until, "until"))
        stmt = stmt.order_by(runs.c.run_at.desc(), runs.c.id.desc())
        if limit:
            stmt = stmt.limit(limit)
        return await self._reads.records(stmt)

    async def get_run(self, run_id: int) -> RunRecord:
        if not 0 <= run_id <= MAX_RUN_ID:  # beyond the column's range: no such run
            raise RunNotFound(f"no run {run_id} in {self._label}")
        rows = await self._reads.rows(sa.select(runs).where(runs.c.id == run_id))
        if not rows:
            raise RunNotFound(f"no run {run_id} in {self._label}")
        return record_of(rows[0]._mapping)

    async def stats(self, *, since: datetime | None = None) -> list[dict]:
        """Per schedule (kind 'schedule') and per pipeline (kind 'pipeline', manual runs
        included): runs, successes, failures, success_rate, p50_s, p95_s, last_status,
        last_at. `runs` counts terminal rows that ran (not skipped / missed). Counts come
        from one (name, status) index scan per kind and the percentiles off the
        (name, duration_s) index one row each: no row's data is pulled into Python. The
        two kinds are read side by side, each on its own connection (SQLite scans an
        index without holding the GIL)."""
        aware(since, "since")
        if self._reads.nothing:
            return []
        kinds = (("schedule", runs.c.schedule), ("pipeline", runs.c.pipeline))
        found = await asyncio.gather(
            *(
                self._reads.read(lambda conn, c=column: _stats_of(conn, c, since))
                for _, column in kinds
            )
        )
        return [
            _stats_row(kind, *entry)
            for (kind, _), entries in zip(kinds, found, strict=True)
            for entry in entries
        ]


ROWS_PER_TURN = 20


def _records_of(rows: Any) -> list[RunRecord]:
    """Records of rows, letting other threads have the GIL every ROWS_PER_TURN rows: a
    thread that holds it for its whole switch interval (5 ms) makes the event loop wait
    that long each time it wakes, and a slot's claim wakes it several times."""
    found = []
    for i, row in enumerate(rows, 1):
        found.append(record_of(row._mapping))
        if i % ROWS_PER_TURN == 0:
            time.sleep(0)
    return found


MAX_RUN_ID = 2**63 - 1  # the id column is a 64-bit integer in SQLite and PostgreSQL


def _listed_after(run_id: int) -> sa.ColumnElement[bool]:
    """Rows after run `run_id` in list_runs' order (run_at, id descending): a keyset on
    the (run_at, id) pair, which the run_at indexes serve (they end in the row id)."""
    if not 0 <= run_id <= MAX_RUN_ID:
        raise UsageError(f"before: {run_id} is not a run id")
    anchor = sa.select(runs.c.run_at).where(runs.c.id == run_id).scalar_subquery()
    return sa.tuple_(runs.c.run_at, runs.c.id) < sa.tuple_(anchor, sa.literal(run_id))


FIRED_TRIGGERS = tuple(t for t in SLOT_TRIGGERS if t != "backfill")


def _stats_of(conn: sa.Connection, column, since: datetime | None) -> list[tuple]:
    """[(name, {status: count}, last row, (p50_s, p95_s))] of every name of `column`."""
    window = [column.is_not(None)] + ([runs.c.run_at >= since] if since is not None else [])
    counts: dict[str, dict[str, int]] = {}
    by_status = sa.select(column, runs.c.status, sa.func.count()).where(*window)
    for name, status, count in conn.execute(by_status.group_by(column, runs.c.status)):
        counts.setdefault(name, {})[status] = count
    return [
        (
            name,
            counts[name],
            _last(conn, column == name, window),
            _percentiles(conn, column == name, window, sum(counts[name].values())),
        )
        for name in sorted(counts)
    ]


def _last(conn: sa.Connection, match, window: list):
    stmt = sa.select(runs.c.status, runs.c.run_at, runs.c.pipeline).where(match, *window[1:])
    return conn.execute(stmt.order_by(runs.c.run_at.desc(), runs.c.id.desc()).limit(1)).one()


def _percentiles(conn: sa.Connection, match, window: list, rows: int) -> tuple:
    """(p50_s, p95_s) of one name's durations. How many durations it has: its `rows` less
    those without one -- NULLs come first in (name, duration_s), so counting them reads
    only them (a second scan of every row's duration took as long as the counts)."""
    untimed = sa.select(sa.func.count()).where(match, runs.c.duration_s.is_(None), *window[1:])
    timed = rows - conn.execute(untimed).scalar_one()
    return tuple(_nth_duration(conn, match, window, timed, pct) for pct in (50, 95))


def _nth_duration(conn: sa.Connection, match, window: list, n: int, pct: float) -> float | None:
    """The nearest-rank `pct` percentile of n durations: one index row, read from the
    nearer end of (name, duration_s)."""
    if not n:
        return None
    rank = max(1, -(-n * pct // 100))  # ceil without floats
    ascending = rank <= n - rank + 1
    order = runs.c.duration_s if ascending else runs.c.duration_s.desc()
    stmt = sa.select(runs.c.duration_s).where(match, runs.c.duration_s.is_not(None), *window[1:])
    stmt = stmt.order_by(order).limit(1).offset(int(rank - 1 if ascending else n - rank))
    # PostgreSQL's numeric would be a Decimal, which JSON cannot encode
    return round(float(conn.execute(stmt).scalar_one()), 3)


def _stats_row(kind: str, name: str, counts: dict, last, percentiles: tuple) -> dict:
    def count_of(statuses) -> int:
        return sum(counts.get(status, 0) for status in statuses)

    ran = count_of(TERMINAL - {"skipped", "missed"})
    successes = count_of({"success"})
    return {
        "kind": kind,
        "name": name,
        "schedule": name if kind == "schedule" else None,
        "pipeline": last.pipeline,
        "runs": ran,
        "successes": successes,
        "failures": count_of(FAILURES),
        "cancelled": count_of({"cancelled"}),
        "skipped": count_of({"skipped"}),
        "missed": count_of({"missed"}),
        "success_rate": successes / ran if ran else None,
        "p50_s": percentiles[0],
        "p95_s": percentiles[1],
        "last_status": last.status,
        "last_at": iso(last.run_at),
    }


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def _as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _on_connection(engine: sa.Engine, query: Callable[[sa.Connection], Any]) -> Any:
    with engine.connect() as conn:
        return query(conn)
