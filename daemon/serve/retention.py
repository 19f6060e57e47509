"""The `retention` setting: the daemon prunes finished runs older than it, off the hot path.

Once at start-up and then every hour, in chunks of a few hundred rows with a pause between
them, so slot writes queued meanwhile go first. Each schedule's newest slot stays (see
`daemon.history.prune`). A pass that fails (the history unavailable) is logged and tried
again at the next one; it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from daemon.durations import parse_duration_s
from daemon.errors import FlowerdError
from daemon.history import History

log = logging.getLogger("daemon.retention")  # its name before the move

INTERVAL_S = 3600.0
CHUNK_ROWS = 500
PAUSE_S = 0.05


async def prune_forever(
    history: History, retention: str, *, interval_s: float = INTERVAL_S, keep_failures: int = 0
):
    """The background task `serve` starts when the `retention` setting is set; each
    schedule's last `keep_failures` failed or timed-out runs stay however old."""
    keep_s = parse_duration_s(retention)
    while True:
        await prune_once(history, keep_s, retention, keep_failures)
        await asyncio.sleep(interval_s)


async def prune_once(
    history: History, keep_s: float, retention: str, keep_failures: int = 0
) -> int:
    before = datetime.now(UTC) - timedelta(seconds=keep_s)
    try:
        deleted = await history.prune(
            before=before, chunk_rows=CHUNK_ROWS, pause_s=PAUSE_S, keep_failures=keep_failures
        )
    except FlowerdError as exc:
        log.warning(
            "retention: pruning runs older than %s failed, next try in 1 h: %s", retention, exc
        )
        return 0
    if deleted:
        log.info("retention: pruned %d finished run(s) older than %s", deleted, retention)
    return deleted
