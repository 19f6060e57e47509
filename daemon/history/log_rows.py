"""What run logs and notifications need from the history.

- `run_logs` rows: written through the one writer as 'log' ops, which it writes with
  one executemany per batch inside its group commit: the lines of every run that ended
  or flushed meanwhile cost one statement, never a commit (or a statement) per run;
  read back in order (`flowerd runs logs`, `runs show`); deleted
  with their runs by `prune`.
- a schedule's previous outcome, from which `recovered` is derived (so it is right
  across restarts).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from daemon.history.schema import FAILURES, run_logs, runs

if TYPE_CHECKING:
    from daemon.history.ops import Ops
    from daemon.history.queries import Reads

LINE_KEYS = ("time", "level", "logger", "message")


class LogRows:
    """The run_logs writes and reads, and a schedule's previous outcome."""

    def __init__(self, ops: Ops, reads: Reads):
        self._submit = ops.submit
        self._rows = reads.rows

    def queue_log_lines(self, lines: list[dict]) -> asyncio.Future:
        """Queue `lines` (dicts: run_id, seq, time, level, logger, message) for the
        writer's next commit; returns the future of that write (not to be awaited by a
        run: nothing waits for its own log lines)."""
        return self._submit("log", [dict(line) for line in lines]).future

    async def log_lines(self, run_id: int, *, after_seq: int = -1, last: int = 0) -> list[dict]:
        """A run's lines in order (dicts with seq and LINE_KEYS): those after `after_seq`,
        or with `last`, only the last that many."""
        stmt = sa.select(
            run_logs.c.seq, run_logs.c.time, run_logs.c.level, run_logs.c.logger,
            run_logs.c.message,
        ).where(run_logs.c.run_id == run_id, run_logs.c.seq > after_seq)  # fmt: skip
        if last:
            stmt = stmt.order_by(run_logs.c.seq.desc()).limit(last)
            rows = list(reversed(await self._rows(stmt)))
        else:
            rows = await self._rows(stmt.order_by(run_logs.c.seq))
        return [dict(row._mapping) for row in rows]

    async def previous_outcome(
        self, schedule: str, *, run_id: int, finished_at: datetime
    ) -> str | None:
        """The status of the schedule's last run that ended success / failed / timed_out
        / crashed before run `run_id` (finished at `finished_at`), or None."""
        stmt = (
            sa.select(runs.c.status)
            .where(runs.c.schedule == schedule, runs.c.id != run_id)
            .where(runs.c.status.in_(FAILURES | {"success"}))
            .where(runs.c.finished_at <= finished_at)
            .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
            .limit(1)
        )
        rows = await self._rows(stmt)
        return rows[0].status if rows else None
