"""What a daemon needs from a history other daemons may share (several on one PostgreSQL;
on SQLite one per file): its lease, the reload requests and pauses all of them see, and
turning the runs of daemons that died into `crashed` rows -- never those of a process
still alive on this host, nor of a daemon whose lease is live. The SQL is in daemon_rows.py.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from datetime import datetime

import sqlalchemy as sa

from daemon.history import daemon_rows
from daemon.history.engine import is_sqlite
from daemon.history.ops import Ops, Origin
from daemon.history.queries import Reads
from daemon.history.schema import (
    ACTIVE,
    RunRecord,
    aware,
    paused_schedules,
    record_of,
    runs,
    utcnow,
)
from daemon.history.writer import await_write


class Sharing:
    """Leases, reaping crashed runs, pauses, reload requests."""

    def __init__(self, ops: Ops, reads: Reads, origin: Origin):
        self._submit = ops.submit
        self._writable_for_s = ops.writable_for_s
        self._reads = reads
        self._origin = origin
        self._sqlite = is_sqlite(reads.url)

    async def reap_crashed(self, *, now: datetime, lease_s: float | None = None) -> list[RunRecord]:
        """Rows left queued/running by a daemon that died become `crashed` (one UPDATE).
        Rows of a process still alive on this host (say a `flowerd run` in another
        terminal) are left alone, and, given `lease_s`, so are the rows of every daemon
        whose lease is live (several daemons on one PostgreSQL)."""
        aware(now, "now")
        if self._sqlite:
            lease_s = None  # one daemon per file: no other lease is live
        live = await self._live_writers()
        reap = functools.partial(_reap, now=now, live=live, lease_s=lease_s)
        rows = await await_write(self._submit("call", reap))
        return [record_of(row) for row in rows]

    async def adopt_events(self, *, lease_s: float) -> list[RunRecord]:
        """The `queued` event rows a dead daemon left (its run never started), now ours
        to run: at start-up and after each renewal (daemon.incoming.journal)."""
        me = self._origin.lease()
        lease = None if self._sqlite else lease_s
        rows = await await_write(
            self._submit("call", lambda conn: daemon_rows.adopt_events(conn, me, lease))
        )
        return [record_of(row) for row in rows]

    # -- leases (several daemons on one database; see daemon_rows.py) --------------------------
    async def register_daemon(self) -> None:
        """Take a lease. Lease rows this one outlives are dropped first, so the start-up
        reap takes their runs at once: on SQLite every other row (one daemon per file,
        the lock file says so), elsewhere those of dead processes on this host."""
        me = self._origin.lease()
        if self._sqlite:
            dead = None
        else:
            rows = await self.daemons(lease_s=0)
            dead = [
                row["id"]
                for row in rows
                if row["host"] == self._origin.host
                and row["pid"] != self._origin.pid
                and not _pid_alive(row["pid"])
            ]
        await await_write(self._submit("call", lambda conn: daemon_rows.register(conn, me, dead)))

    async def unregister_daemon(self) -> None:
        me = self._origin.instance_id
        await await_write(self._submit("call", lambda conn: daemon_rows.unregister(conn, me)))

    async def renew_lease(self, lease_s: float) -> daemon_rows.Renewal:
        """Renew this daemon's lease; reap expired daemons' runs; read shared state.
        A lease that could not be renewed while the database was gone is no proof of
        death: reaping waits until the history has been writable for a full `lease_s`
        (decided when the renewal is written, which may be after an outage)."""
        me = self._origin.lease()

        def renew(conn):
            return daemon_rows.renew(conn, me, lease_s, reap=self._writable_for_s() >= lease_s)

        renewal = await await_write(self._submit("call", renew))
        crashed = [record_of(row) for row in renewal.crashed]
        return dataclasses.replace(renewal, crashed=crashed)

    async def request_reload(self) -> int:
        """Ask the other daemons on this history to reload their schedule files."""
        me = self._origin.instance_id
        return await await_write(self._submit("call", lambda c: daemon_rows.request_reload(c, me)))

    async def daemons(self, lease_s: float) -> list[dict]:
        """The daemons holding a lease row (`status --json`'s `daemons`), oldest first."""
        if self._reads.nothing:
            return []
        return await self._reads.read(lambda conn: daemon_rows.listing(conn, lease_s))

    async def _live_writers(self) -> list[tuple[str, int]]:
        stmt = sa.select(runs.c.host, runs.c.pid).where(runs.c.status.in_(ACTIVE)).distinct()
        pairs = [(row.host, row.pid) for row in await self._reads.rows(stmt)]
        return [
            (host, pid)
            for host, pid in pairs
            if host == self._origin.host and pid != self._origin.pid and _pid_alive(pid)
        ]

    async def set_paused(self, schedule: str, paused: bool, reason: str | None = None) -> None:
        """Pause (with `reason` when it paused itself) or resume; a pause of a paused
        schedule keeps the first pause."""
        if paused:
            values = {"schedule": schedule, "paused_at": utcnow(), "reason": reason}
            stmt = _paused_insert(self._sqlite).values(**values)
        else:
            stmt = sa.delete(paused_schedules).where(paused_schedules.c.schedule == schedule)
        await await_write(self._submit("call", lambda conn: conn.execute(stmt)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _paused_insert(sqlite: bool):
    if sqlite:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(paused_schedules).on_conflict_do_nothing()


def _reap(
    conn: sa.Connection, now: datetime, live: list[tuple[str, int]], lease_s: float | None
) -> list:
    stmt = sa.update(runs).where(runs.c.status.in_(ACTIVE), daemon_rows.not_a_waiting_event())
    if live:
        stmt = stmt.where(sa.tuple_(runs.c.host, runs.c.pid).not_in(live))
    if lease_s is not None:  # never the rows of a daemon whose lease is live
        alive = daemon_rows.live_ids(conn, lease_s)
        stmt = stmt.where(sa.or_(runs.c.instance_id.is_(None), runs.c.instance_id.not_in(alive)))
    return [row._mapping for row in conn.execute(daemon_rows.crash(stmt, now)).all()]
