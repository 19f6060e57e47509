"""Daemon leases: which daemons share this history, and which of them are alive.

Each daemon holds one row in `daemons` (its instance_id, host, pid, started, last_seen)
and renews it every `lease_s / 3`. Times come from the database's clock (`now()` on
PostgreSQL), never the hosts', so hosts whose clocks disagree still agree on who is alive.
A renewal is one transaction through the history writer ('call'), so it shares the
writer's fault handling; in it the daemon also reaps the runs of daemons whose lease
expired, reads the paused schedules, and picks up a reload another daemon asked for.
SQLite keeps one daemon per file (the lock file says so): its clock is the host's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from daemon.history.schema import ACTIVE, UTCDateTime, daemons, paused_schedules, runs, utcnow


@dataclass(frozen=True, kw_only=True)
class Renewal:
    """What one renewal found."""

    lost: bool = False  # our row was gone: the lease had expired and another daemon reaped it
    reload: bool = False  # another daemon reloaded its schedules: reload ours
    paused: frozenset[str] = frozenset()
    crashed: list = field(default_factory=list)  # rows reaped (of expired daemons)
    reaped_daemons: list = field(default_factory=list)  # their (id, host, pid)


def _now(conn) -> sa.ColumnElement:
    if conn.dialect.name == "postgresql":
        return sa.func.now()
    return sa.literal(utcnow(), UTCDateTime)


def _cutoff(conn, lease_s: float) -> sa.ColumnElement:
    """The oldest last_seen of a live lease."""
    if conn.dialect.name == "postgresql":
        lease = sa.bindparam("lease_s", timedelta(seconds=lease_s), type_=sa.Interval)
        return sa.func.now() - lease
    return sa.literal(utcnow() - timedelta(seconds=lease_s), UTCDateTime)


def crash_message() -> sa.ColumnElement:
    return (
        sa.literal("the daemon running it (host ")
        + runs.c.host
        + sa.literal(", pid ")
        + sa.cast(runs.c.pid, sa.String)
        + sa.literal(", instance ")
        + sa.func.coalesce(runs.c.instance_id, "-")
        + sa.literal(") died before it finished")
    )


def crash(stmt: sa.Update, now: datetime | sa.ColumnElement) -> sa.Update:
    return stmt.values(
        status="crashed", finished_at=now, error_type="Crashed", error_message=crash_message()
    ).returning(*runs.c)


def register(conn: sa.Connection, me: dict, dead: list[str] | None = ()) -> None:
    """Our lease row; first drop the rows of `dead` daemons (None: every other row)."""
    now = _now(conn)
    gone = [me["id"], *(dead or ())]
    if dead is None:
        conn.execute(sa.delete(daemons))
    else:
        conn.execute(sa.delete(daemons).where(daemons.c.id.in_(gone)))
    conn.execute(sa.insert(daemons).values(**me, started=now, last_seen=now))


def unregister(conn: sa.Connection, daemon_id: str) -> None:
    conn.execute(sa.delete(daemons).where(daemons.c.id == daemon_id))


def renew(conn: sa.Connection, me: dict, lease_s: float, reap: bool = True) -> Renewal:
    """Renew our lease; reap the daemons whose lease expired (unless `reap` is false:
    right after an outage, when their leases may have expired only because the database
    was gone); read the shared state."""
    touched = conn.execute(
        sa.update(daemons).where(daemons.c.id == me["id"]).values(last_seen=_now(conn))
    )
    lost = touched.rowcount == 0
    if lost:
        register(conn, me, [])
    asked = conn.execute(
        sa.update(daemons)
        .where(daemons.c.id == me["id"], daemons.c.reload_requested.is_not(None))
        .values(reload_requested=None)
        .returning(daemons.c.id)
    )
    reload = asked.first() is not None
    crashed, reaped = reap_expired(conn, me["id"], lease_s) if reap else ([], [])
    paused = (conn.execute(sa.select(paused_schedules.c.schedule))).scalars().all()
    return Renewal(
        lost=lost, reload=reload, paused=frozenset(paused), crashed=crashed, reaped_daemons=reaped
    )


def reap_expired(conn: sa.Connection, me: str, lease_s: float) -> tuple[list, list]:
    """`queued`/`running` rows of daemons whose lease expired become `crashed`, and their
    lease rows go. Two daemons reaping at once: the second finds nothing left to do."""
    expired = (
        conn.execute(
            sa.select(daemons.c.id, daemons.c.host, daemons.c.pid).where(
                daemons.c.last_seen < _cutoff(conn, lease_s), daemons.c.id != me
            )
        )
    ).all()
    if not expired:
        return [], []
    ids = [row.id for row in expired]
    stmt = sa.update(runs).where(
        runs.c.status.in_(ACTIVE), runs.c.instance_id.in_(ids), not_a_waiting_event()
    )
    rows = (conn.execute(crash(stmt, _now(conn)))).all()
    conn.execute(sa.delete(daemons).where(daemons.c.id.in_(ids)))
    return [row._mapping for row in rows], [tuple(row) for row in expired]


def not_a_waiting_event() -> sa.ColumnElement:
    """An event's `queued` row never started: not crashed -- another daemon (or the next
    start) adopts it and runs it (adopt_events)."""
    return sa.not_(sa.and_(runs.c.status == "queued", runs.c.event_key.is_not(None)))


def adopt_events(conn: sa.Connection, me: dict, lease_s: float | None) -> list:
    """The `queued` event rows of daemons that are gone become ours (one UPDATE: of two
    daemons adopting at once, each row goes to one). `lease_s` None (SQLite, one daemon
    per file): every other daemon's rows are orphans."""
    stmt = sa.update(runs).where(
        runs.c.status == "queued",
        runs.c.event_key.is_not(None),
        sa.or_(runs.c.instance_id.is_(None), runs.c.instance_id != me["id"]),
    )
    if lease_s is not None:
        alive = live_ids(conn, lease_s)
        stmt = stmt.where(sa.or_(runs.c.instance_id.is_(None), runs.c.instance_id.not_in(alive)))
    stmt = stmt.values(instance_id=me["id"], host=me["host"], pid=me["pid"])
    return [row._mapping for row in conn.execute(stmt.returning(*runs.c)).all()]


def request_reload(conn: sa.Connection, me: str) -> int:
    """Ask every other daemon to reload its schedules at its next renewal."""
    stmt = sa.update(daemons).where(daemons.c.id != me).values(reload_requested=_now(conn))
    return (conn.execute(stmt)).rowcount


def live_ids(conn, lease_s: float) -> sa.Select:
    return sa.select(daemons.c.id).where(daemons.c.last_seen >= _cutoff(conn, lease_s))


def listing(conn: sa.Connection, lease_s: float) -> list[dict]:
    """Every daemon with a lease row, oldest first, and whether its lease is live."""
    alive = sa.case((daemons.c.last_seen >= _cutoff(conn, lease_s), True), else_=False)
    stmt = sa.select(
        daemons.c.id,
        daemons.c.host,
        daemons.c.pid,
        daemons.c.started,
        daemons.c.last_seen,
        alive.label("alive"),
    ).order_by(daemons.c.started, daemons.c.id)
    rows = [dict(row._mapping) for row in conn.execute(stmt).all()]
    return [{**row, "alive": bool(row["alive"])} for row in rows]
