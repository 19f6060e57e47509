"""The audit log's rows: who did what to the daemon (see daemon.serve.audit).

A row is written through the one writer and awaited, so the act it records takes effect
only once its row is durable; `prune` deletes rows older than its bound with the runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from daemon.durations import iso
from daemon.history.schema import audit_log, aware, utcnow
from daemon.history.writer import await_write

if TYPE_CHECKING:
    from daemon.history.ops import Ops
    from daemon.history.queries import Reads

AUDIT_KEYS = ("at", "actor", "via", "action", "schedule", "run_id", "detail")
MAX_ROWS = 1000


class AuditRows:
    """`add_audit` (before the act) and `audit` (newest first)."""

    def __init__(self, ops: Ops, reads: Reads):
        self._submit = ops.submit
        self._rows = reads.rows

    async def add_audit(
        self,
        *,
        actor: str,
        via: str,
        action: str,
        schedule: str | None = None,
        run_id: int | None = None,
        detail: str | None = None,
    ) -> dict:
        """Write one row and wait for its commit; returns it as the contract's JSON."""
        values = {
            "at": utcnow(),
            "actor": actor[:200],
            "via": via,
            "action": action,
            "schedule": schedule,
            "run_id": run_id,
            "detail": detail,
        }
        stmt = sa.insert(audit_log).values(**values)
        await await_write(self._submit("call", lambda conn: conn.execute(stmt)))
        return entry_json(values)

    async def audit(self, *, since: datetime | None = None, limit: int = MAX_ROWS) -> list[dict]:
        """The rows at or after `since`, newest first, at most `limit`."""
        aware(since, "since")
        columns = [audit_log.c[key] for key in AUDIT_KEYS]
        stmt = sa.select(*columns).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        if since is not None:
            stmt = stmt.where(audit_log.c.at >= since)
        rows = await self._rows(stmt.limit(limit))
        return [entry_json(dict(row._mapping)) for row in rows]


def entry_json(values: dict) -> dict:
    return {key: iso(values[key]) if key == "at" else values[key] for key in AUDIT_KEYS}


def prune_audit(conn: sa.Connection, before: datetime) -> int:
    """The rows older than `before` go with the runs a prune deletes."""
    return conn.execute(sa.delete(audit_log).where(audit_log.c.at < before)).rowcount
