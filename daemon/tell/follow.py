"""Following a run's log while it runs: `flowerd runs logs --follow` and the page's live
log (daemon.http.livelog) read the history the same way.

A running run's head is written every FLUSH_EVERY_S (daemon.tell.runlogs); once the run
has ended, its last lines land with the writer's next commit, so the follow goes on for
SETTLE_S of quiet after the end, then stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

POLL_S = 0.25
SETTLE_S = 1.0  # after the run ended: its last lines land with the next commit


class LogHistory(Protocol):
    async def get_run(self, run_id: int) -> Any: ...

    async def log_lines(self, run_id: int, *, after_seq: int = -1, last: int = 0) -> list: ...


async def follow(
    history: LogHistory,
    run_id: int,
    *,
    poll_s: float = POLL_S,
    once: bool = False,
    after_seq: int = -1,
) -> AsyncIterator[tuple[Any, list[dict]]]:
    """(the run's record, its lines after `after_seq` not yet given), polled until the run
    ended and settled; with `once`, the lines there are now only. Unknown run:
    RunNotFound at the first step."""
    from daemon.history import TERMINAL

    record = await history.get_run(run_id)
    last_seq, ended_at = after_seq, None
    while True:
        lines = await history.log_lines(run_id, after_seq=last_seq)
        last_seq = lines[-1]["seq"] if lines else last_seq
        yield record, lines
        if once:
            return
        if ended_at is None and record.status in TERMINAL:
            ended_at = time.monotonic()
        elif ended_at is not None and not lines and time.monotonic() - ended_at >= SETTLE_S:
            return
        await asyncio.sleep(poll_s)
        if ended_at is None:
            record = await history.get_run(run_id)
