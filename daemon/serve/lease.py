"""This daemon's lease in a history several daemons may share (one PostgreSQL).

Every daemon fires every slot of its schedules; the history's unique slot key decides
which one launches it. What the daemons must also agree on is who is alive: each holds a
lease row, renewed every `lease_s / 3` by the database's clock. In each renewal (one
transaction through the history writer) the daemon

- reaps: the `queued`/`running` rows of a daemon whose lease expired become `crashed`
  (by whichever live daemon renews first; never a live daemon's rows),
- reads the paused schedules, so a pause or resume sent to any daemon reaches all,
- picks up a reload another daemon did, and reloads its own schedule files.

On SQLite the same code runs for the one daemon the lock file allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from daemon.errors import FlowerdError
from daemon.history import History

log = logging.getLogger("daemon.lease")  # its name before the move

CLOSE_WAIT_S = 3.0
LISTING_WAIT_S = 2.0


class Lease:
    """Register, renew every `lease_s / 3`, unregister at a clean stop."""

    def __init__(
        self,
        history: History,
        *,
        lease_s: float,
        on_paused: Callable[[frozenset[str]], None],
        on_reload: Callable[[], None],
    ):
        self.history = history
        self.lease_s = lease_s
        self.every_s = lease_s / 3
        self.renewals = 0
        self.last_renewal_s: float | None = None  # how long the last one took
        self._on_paused = on_paused
        self._on_reload = on_reload
        self._task: asyncio.Task | None = None
        self._listing: list[dict] = []

    async def register(self) -> None:
        await self.history.register_daemon()

    def start(self, on_done: Callable[[asyncio.Task], None]) -> None:
        """Renew in the background; `on_done` hears of a loop that ended with an error."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="flowerd:lease")
        self._task.add_done_callback(on_done)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.renew()

    async def renew(self) -> None:
        started = time.perf_counter()
        try:
            renewal = await self.history.renew_lease(self.lease_s)
        except FlowerdError as exc:  # the writer held it through an outage, then gave up
            log.error("the daemon's lease could not be renewed: %s", exc)
            return
        self.renewals += 1
        self.last_renewal_s = time.perf_counter() - started
        if renewal.lost:
            log.warning(
                "this daemon's lease had expired (renewed more than lease_s = %g s apart); "
                "another daemon may have recorded its runs 'crashed' -- they are recorded "
                "again as they end",
                self.lease_s,
            )
        _log_reaped(renewal)
        self._on_paused(renewal.paused)
        if renewal.reload:
            log.info("another daemon reloaded its schedules: reloading ours")
            self._on_reload()

    async def others_alive(self) -> list[dict]:
        """The other daemons whose lease is live now."""
        me = self.history.instance_id
        return [d for d in await self.history.daemons(self.lease_s) if d["alive"] and d["id"] != me]

    async def listing(self) -> list[dict]:
        """`status --json`'s `daemons`: {id, host, pid, last_seen} (+ started, alive). A
        history that does not answer gets the last listing, not a hung or failed status
        (`health.history` says why); while it is known down it is not even asked."""
        if self.history.health() != "ok":
            return self._listing
        try:
            async with asyncio.timeout(LISTING_WAIT_S):
                rows = await self.history.daemons(self.lease_s)
        except (FlowerdError, TimeoutError) as exc:
            log.debug("daemons listing unavailable: %s", exc)
            return self._listing
        self._listing = [
            {
                "id": row["id"],
                "host": row["host"],
                "pid": row["pid"],
                "last_seen": row["last_seen"].isoformat(),
                "started": row["started"].isoformat(),
                "alive": row["alive"],
            }
            for row in rows
        ]
        return self._listing

    async def ask_others_to_reload(self) -> None:
        try:
            asked = await self.history.request_reload()
        except FlowerdError as exc:
            log.error("the other daemons could not be asked to reload: %s", exc)
            return
        if asked:
            log.info("asked %d other daemon(s) to reload their schedules", asked)

    async def close(self) -> None:
        """A clean stop gives the lease back, so no one waits lease_s to reap nothing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.history.health() != "ok":  # the write would only wait out CLOSE_WAIT_S
            log.info("the lease is not given back (the history is unavailable): it expires")
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.history.unregister_daemon()
        except (FlowerdError, TimeoutError) as exc:
            log.debug("the lease could not be given back (it expires by itself): %s", exc)


def _log_reaped(renewal) -> None:
    for daemon_id, host, pid in renewal.reaped_daemons:
        mine = [r for r in renewal.crashed if r.instance_id == daemon_id]
        log.warning(
            "daemon %s (host %s, pid %s) let its lease expire: %d of its run(s) are now "
            "'crashed'%s",
            daemon_id,
            host,
            pid,
            len(mine),
            f" (runs {', '.join(str(r.id) for r in mine)})" if mine else "",
        )
