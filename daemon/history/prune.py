"""Retention: which finished runs a prune deletes, and deleting them in small chunks.

The ledger's memory outlives a prune: catch-up starts from each schedule's newest slot
(`Reader.last_slots`), so the row holding it is never pruned, however old. Keeping that
one row per schedule costs nothing on the hot path (no second table to keep up to date
on every slot write, measured +0-20 % per single-slot commit on SQLite); the prune pays
instead: the kept ids are found once per prune by a read (a GROUP BY over the table,
~0.2 s per 200,000 rows, outside the write lock), and each chunk only skips those ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa

from daemon.history.audit_rows import prune_audit
from daemon.history.ops import Ops
from daemon.history.queries import Reads
from daemon.history.schema import TERMINAL, aware, run_logs, runs
from daemon.history.writer import await_write

CHUNK_ROWS = 5_000
KEPT_FAILURES = ("failed", "timed_out")


def _slotted() -> sa.ColumnElement[bool]:
    return sa.and_(
        runs.c.schedule.is_not(None), runs.c.scheduled_at.is_not(None), runs.c.trigger != "manual"
    )


def kept_ids_stmt() -> sa.Select:
    """The rows holding each schedule's newest slot (what `last_slots` answers)."""
    newest = (
        sa.select(runs.c.schedule, sa.func.max(runs.c.scheduled_at))
        .where(_slotted())
        .group_by(runs.c.schedule)
    )
    return sa.select(runs.c.id).where(
        _slotted(), sa.tuple_(runs.c.schedule, runs.c.scheduled_at).in_(newest)
    )


def kept_failures_stmt(keep_failures: int) -> sa.Select:
    """`retention_keep_failures`: each schedule's last `keep_failures` runs that ended
    `failed` or `timed_out` (newest by when they finished)."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=runs.c.schedule,
            order_by=(runs.c.finished_at.desc(), runs.c.id.desc()),
        )
        .label("rank")
    )
    ended_badly = sa.and_(runs.c.schedule.is_not(None), runs.c.status.in_(KEPT_FAILURES))
    ranked = sa.select(runs.c.id, rank).where(ended_badly).subquery()
    return sa.select(ranked.c.id).where(ranked.c.rank <= keep_failures)


def prunable(before: datetime, kept: Collection[int]) -> sa.ColumnElement[bool]:
    """Finished before `before`, and not one of the `kept` rows."""
    finished = sa.and_(runs.c.status.in_(TERMINAL), runs.c.finished_at < before)
    return sa.and_(finished, runs.c.id.not_in(list(kept))) if kept else finished


def preview_stmt(before: datetime, kept: Collection[int]) -> sa.Select:
    """How many rows a prune would delete, per schedule (None: manual runs) and status."""
    return (
        sa.select(runs.c.schedule, runs.c.status, sa.func.count().label("count"))
        .where(prunable(before, kept))
        .group_by(runs.c.schedule, runs.c.status)
        .order_by(runs.c.schedule, runs.c.status)
    )


def prune_chunk(
    conn: sa.Connection, before: datetime, kept: Collection[int], rows: int = CHUNK_ROWS
) -> int:
    doomed = sa.select(runs.c.id).where(prunable(before, kept)).limit(rows)
    ids = [row.id for row in (conn.execute(doomed)).all()]
    if not ids:
        return 0
    conn.execute(sa.delete(run_logs).where(run_logs.c.run_id.in_(ids)))  # their lines
    result = conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
    return result.rowcount


class Prune:
    """`prune` and its preview."""

    def __init__(self, ops: Ops, reads: Reads):
        self._submit = ops.submit
        self._rows = reads.rows

    async def prune(
        self,
        *,
        before: datetime,
        chunk_rows: int = CHUNK_ROWS,
        pause_s: float = 0.0,
        keep_failures: int = 0,
    ) -> int:
        """Delete terminal rows finished before `before` (each schedule's newest slot
        stays: catch-up starts from it; so do its last `keep_failures` failed or timed-out
        runs), `chunk_rows` per transaction and `pause_s` between them, so a running
        daemon's writer is never held up for long. Audit rows older than `before` go too."""
        aware(before, "before")
        kept = await self._kept_ids(keep_failures)
        deleted = 0
        while True:
            chunk = await await_write(
                self._submit("call", lambda c: prune_chunk(c, before, kept, chunk_rows))
            )
            deleted += chunk
            if chunk < chunk_rows:
                break
            await asyncio.sleep(pause_s)
        await await_write(self._submit("call", lambda c: prune_audit(c, before)))
        return deleted

    async def prune_preview(
        self, *, before: datetime, keep_failures: int = 0
    ) -> list[tuple[str | None, str, int]]:
        """What `prune(before=...)` would delete: (schedule, status, count) rows."""
        aware(before, "before")
        rows = await self._rows(preview_stmt(before, await self._kept_ids(keep_failures)))
        return [(row.schedule, row.status, row.count) for row in rows]

    async def _kept_ids(self, keep_failures: int) -> set[int]:
        """The rows no prune deletes: each schedule's newest slot and, given
        `keep_failures`, its last that many failures (read once per prune)."""
        kept = {row.id for row in await self._rows(kept_ids_stmt())}
        if keep_failures > 0:
            kept |= {row.id for row in await self._rows(kept_failures_stmt(keep_failures))}
        return kept
