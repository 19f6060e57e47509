"""The statements of one write transaction: a batch of queued writes (daemon.history.writer's
`_Op`s) as a handful of Core statements -- one multi-row INSERT (slot rows: ON CONFLICT DO
NOTHING on the slot key), one executemany per UPDATE kind, then the 'call' ops in order.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from daemon.errors import HistoryError
from daemon.history.schema import (
    ACTIVE,
    EVENT_KEY_WHERE,
    SLOT_KEY_WHERE,
    SLOT_TRIGGERS,
    run_logs,
    runs,
)

if TYPE_CHECKING:
    from daemon.history.writer import _Op

_SLOT_KEY = ("schedule", "scheduled_at")


def _slot_key(values: dict) -> tuple | None:
    """(schedule, scheduled_at) of a row the slot key covers; None for the others (a
    `manual` or `rerun` row never collides: the partial unique index leaves them out)."""
    if values.get("schedule") is None or values.get("scheduled_at") is None:
        return None
    if values.get("trigger") not in SLOT_TRIGGERS:
        return None
    return values["schedule"], values["scheduled_at"]


def _by_shape(ops: list[_Op]) -> list[list[_Op]]:
    """Ops grouped by the columns they set, for one executemany per group. Writes leave
    out their None values: fewer bound parameters is the cheapest speed-up there is."""
    groups: dict[tuple, list[_Op]] = {}
    for op in ops:
        groups.setdefault(tuple(op.values), []).append(op)
    return list(groups.values())


def _dialect_insert(conn: sa.Connection):
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise HistoryError(f"history databases on {name} are not supported (sqlite, postgresql)")
    return insert


def _insert_slots(conn: sa.Connection, ops: list[_Op], results: dict) -> None:
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
        .on_conflict_do_nothing(index_elements=list(_SLOT_KEY), index_where=SLOT_KEY_WHERE)
        .returning(runs.c.id, runs.c.schedule, runs.c.scheduled_at)
    )
    rows = conn.execute(stmt, [op.values for op in first.values()]).all()
    ids = {(row.schedule, row.scheduled_at): row.id for row in rows}
    for key, op in first.items():
        results[id(op)] = ids.get(key)


def _event_key(values: dict) -> tuple | None:
    """(schedule, event_key) of an event's row (daemon.incoming); None for the others."""
    if values.get("event_key") is None:
        return None
    return values.get("schedule"), values["event_key"]


def _insert_events(conn: sa.Connection, ops: list[_Op], results: dict) -> None:
    """Event rows, in one INSERT .. ON CONFLICT DO NOTHING on (schedule, event_key); each
    op's result is (run id, fresh): an event already in the table (or twice in this
    batch) gets the id of the row that has it, and fresh False."""
    first: dict[tuple, _Op] = {}
    for op in ops:
        first.setdefault(_event_key(op.values), op)
    stmt = (
        _dialect_insert(conn)(runs)
        .on_conflict_do_nothing(
            index_elements=["schedule", "event_key"], index_where=EVENT_KEY_WHERE
        )
        .returning(runs.c.id, runs.c.schedule, runs.c.event_key)
    )
    rows = conn.execute(stmt, [op.values for op in first.values()]).all()
    fresh = {(row.schedule, row.event_key): row.id for row in rows}
    known = dict(fresh)
    for schedule, key in first.keys() - fresh.keys():
        found = sa.select(sa.func.min(runs.c.id)).where(
            runs.c.schedule == schedule, runs.c.event_key == key
        )
        known[(schedule, key)] = conn.execute(found).scalar_one()
    for op in ops:
        key = _event_key(op.values)
        results[id(op)] = (known[key], first[key] is op and key in fresh)


def _insert_rows(conn: sa.Connection, ops: list[_Op], results: dict) -> None:
    events = [op for op in ops if _event_key(op.values) is not None]
    for group in _by_shape(events):
        _insert_events(conn, group, results)
    rest = [op for op in ops if _event_key(op.values) is None]
    for group in _by_shape([op for op in rest if _slot_key(op.values) is not None]):
        _insert_slots(conn, group, results)
    stmt = sa.insert(runs).returning(runs.c.id)
    for op in rest:  # manual runs and reruns: rare, and they never collide
        if _slot_key(op.values) is None:
            results[id(op)] = conn.execute(stmt, op.values).scalar_one()


@functools.lru_cache(maxsize=64)  # one Core statement per shape, so SQLAlchemy's cache hits
def _update_stmt(params: tuple[str, ...], only_active: bool, dialect: str = "") -> sa.Update:
    """UPDATE runs SET <col> = :b_<col> ... WHERE id = :b_id, for executemany."""
    stmt = sa.update(runs).where(runs.c.id == sa.bindparam("b_id"))
    if only_active:  # a late mark_running never revives a finished row
        # (no IN: executemany refuses its expanding parameter)
        stmt = stmt.where(sa.or_(*(runs.c.status == status for status in sorted(ACTIVE))))
    columns = [name[2:] for name in params if name != "b_id"]
    values: dict[str, Any] = {column: sa.bindparam(f"b_{column}") for column in columns}
    if "finished_at" in values and "duration_s" not in values:
        values["duration_s"] = _duration_since_start(dialect)  # started_at from an earlier write
    return stmt.values(values)


def _duration_since_start(dialect: str) -> sa.ColumnElement:
    finished = sa.bindparam("b_finished_at", type_=runs.c.finished_at.type)
    if dialect == "sqlite":
        # julianday() arithmetic is good to ~0.1 ms: kept to the millisecond, as stats shows it
        days = sa.func.julianday(finished) - sa.func.julianday(runs.c.started_at)
        return sa.func.round(days * 86400.0, 3)
    return sa.extract("epoch", finished - runs.c.started_at)


def apply(batch: list[_Op], conn: sa.Connection) -> list[Any]:
    """Write one batch inside the caller's transaction (see link.py: in the SQLite
    link's thread, or through run_sync); results in batch order.
    Inserts first, then all mark_running, then all finish (one executemany, i.e. one
    driver call, per shape), then the other writes in the order they came."""
    by_kind: dict[str, list[_Op]] = {k: [] for k in ("insert", "running", "finish", "log", "call")}
    for op in batch:
        by_kind[op.kind].append(op)
    results: dict[int, Any] = {}
    if by_kind["insert"]:
        _insert_rows(conn, by_kind["insert"], results)
    for kind in ("running", "finish"):
        for group in _by_shape(by_kind[kind]):
            stmt = _update_stmt(tuple(group[0].values), kind == "running", conn.dialect.name)
            conn.execute(stmt, [op.values for op in group])
    if by_kind["log"]:  # every run's log lines of the batch: one executemany
        rows = [row for op in by_kind["log"] for row in op.values]
        conn.execute(sa.insert(run_logs), rows)
    for op in by_kind["call"]:
        results[id(op)] = op.values(conn)
    return [results.get(id(op)) for op in batch]
