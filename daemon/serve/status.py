"""How a running daemon is doing: `flowerd status` (and the HTTP API's), the health of
each part (`/healthz`, systemd's STATUS=), and the event loop's lag. Parts of the Daemon
(daemon.serve.daemon): `Status` reads the daemon through the `Observed` view, `LoopLag`
measures the loop on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC
from typing import Protocol
from zoneinfo import ZoneInfo

from daemon.durations import shown_iso
from daemon.history import History
from daemon.incoming.wiring import Incoming
from daemon.runner.runner import Runner
from daemon.runner.scheduler import Scheduler
from daemon.serve import systemd
from daemon.serve.commands import Pauses
from daemon.serve.lease import Lease
from daemon.settings import Settings
from daemon.tell.notifications import Notifications

log = logging.getLogger("daemon.app")  # a part of the daemon: its lines keep that name

LAG_PROBE_S = 0.5
STATUS_EVERY_S = 0.1


class Observed(Protocol):
    """What Status reads of the daemon. `history`, `runner`, `lease`, `notifications` and
    `scheduler` exist once `reached()` their stage (daemon.serve.daemon.STAGES)."""

    settings: Settings
    notifier: systemd.SystemdNotifier
    history: History
    runner: Runner
    scheduler: Scheduler
    incoming: Incoming
    lease: Lease
    notifications: Notifications
    instance_id: str
    started_monotonic: float
    pauses: Pauses
    lag: LoopLag
    http: object | None
    http_health: str

    def reached(self, stage: str) -> bool: ...

    def stopping(self) -> bool: ...


class Status:
    """What the daemon says about itself: `status`, `health`, systemd's STATUS=."""

    def __init__(self, daemon: Observed):
        self.daemon = daemon
        self._status_due = False

    async def status(self, request: dict | None = None) -> dict:
        schedules = []
        for schedule in self.daemon.scheduler.schedules.values():
            nxt = self.daemon.scheduler.next_fire(schedule.id)
            schedules.append(
                {
                    "id": schedule.id,
                    "pipeline": schedule.pipeline,
                    "trigger": schedule.describe_trigger(),
                    "enabled": schedule.enabled,
                    "paused": schedule.id in self.daemon.pauses.paused,
                    "timezone": schedule.timezone,
                    "paused_reason": self.daemon.pauses.reasons.get(schedule.id),
                    "next": nxt.astimezone(UTC).isoformat() if nxt else None,
                }
            )
        return {
            "pid": os.getpid(),
            "instance_id": self.daemon.instance_id,
            "uptime_s": round(time.monotonic() - self.daemon.started_monotonic, 3),
            "loop_lag_ms": round(self.daemon.lag.loop_lag_s * 1000, 3),
            "threads_busy": self.daemon.runner.threads_busy,
            "running": [run.describe() for run in self.daemon.runner.active.values()],
            "schedules": schedules,
            "database": self.daemon.settings.db_url,
            "daemon": self.daemon.instance_id,
            "daemons": await self.daemon.lease.listing(),
            "health": self.health(),
            "http": self.daemon.http.url if self.daemon.http else None,
        }

    def health(self) -> dict[str, str]:
        """One entry per part: "ok", or a sentence saying what is wrong and since when
        (`status --json`'s `health`, `/healthz`, systemd's STATUS=)."""
        return {
            "scheduler": self.daemon.scheduler.health(),
            "runner": self.daemon.runner.health(),
            "history": self.daemon.history.health(),
            "incoming": self.daemon.incoming.health(),
            "http": self.daemon.http_health,
        }

    def history_state(self) -> None:
        """The history's health changed (History.on_fault)."""
        health = self.daemon.history.health()
        if self.daemon.reached("notifications"):
            self.daemon.notifications.history_health(health)
        if health != "ok":
            self.daemon.notifier.status(f"history {health}")
        else:
            self.refresh()

    def status_line(self) -> str:
        if self.daemon.stopping():
            return f"stopping: {len(self.daemon.runner.active)} run(s) still running"
        wrong = [  # a busy HTTP port is told by `status`; STATUS= keeps what runs
            f"{part} {state}"
            for part, state in self.health().items()
            if state != "ok" and part != "http"
        ]
        if wrong:
            return "; ".join(wrong)
        schedules = self.daemon.scheduler.schedules
        times = [t for t in (self.daemon.scheduler.next_fire(s) for s in schedules) if t]
        zone = ZoneInfo(self.daemon.settings.timezone)  # several schedules: the setting's zone
        nxt = shown_iso(min(times), zone, "seconds") if times else "none"
        running = len(self.daemon.runner.active)
        return f"{len(schedules)} schedule(s), {running} running, next fire {nxt}"

    def refresh(self) -> None:
        """STATUS= for systemd, computed only when someone listens, and at most once per
        STATUS_EVERY_S however many runs start and end (it looks at every schedule)."""
        daemon = self.daemon
        if not daemon.notifier.enabled or self._status_due or not daemon.reached("scheduler"):
            return
        self._status_due = True
        asyncio.get_running_loop().call_later(STATUS_EVERY_S, self._send_status)

    def _send_status(self) -> None:
        self._status_due = False
        self.daemon.notifier.status(self.status_line())


class LoopLag:
    """The event loop's lag: how late a timer fires (`status`, `/healthz`, metrics)."""

    def __init__(self) -> None:
        self.loop_lag_s = 0.0

    async def measure_lag(self) -> None:
        """Event-loop lag: how late a timer fires. A sync node on the loop shows up here."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.loop_lag_s = max(0.0, loop.time() - expected)
            if self.loop_lag_s > 1.0:
                log.warning(
                    "the event loop was blocked for %.1f s (a sync node on the async driver?)",
                    self.loop_lag_s,
                )
