"""How a running daemon is doing: `flowerd status` (and the HTTP API's), the health of
each part (`/healthz`, systemd's STATUS=), and the event loop's lag. Mixed into Daemon
(daemon.serve.daemon).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC
from zoneinfo import ZoneInfo

from daemon.durations import shown_iso
from daemon.history import History
from daemon.runner.runner import Runner
from daemon.runner.scheduler import Scheduler
from daemon.serve import systemd
from daemon.serve.lease import Lease
from daemon.settings import Settings
from daemon.tell.notifications import Notifications

log = logging.getLogger("daemon.app")  # a part of the daemon: its lines keep that name

LAG_PROBE_S = 0.5
STATUS_EVERY_S = 0.1


class Status:
    """Mixed into Daemon: what it says about itself."""

    settings: Settings
    notifier: systemd.SystemdNotifier
    history: History
    runner: Runner
    scheduler: Scheduler
    lease: Lease
    notifications: Notifications
    instance_id: str
    started_monotonic: float
    loop_lag_s: float
    paused: set[str]
    paused_reasons: dict[str, str | None]
    http: object | None
    http_health: str
    _status_due: bool

    async def status(self, request: dict | None = None) -> dict:
        schedules = []
        for schedule in self.scheduler.schedules.values():
            nxt = self.scheduler.next_fire(schedule.id)
            schedules.append(
                {
                    "id": schedule.id,
                    "pipeline": schedule.pipeline,
                    "trigger": schedule.describe_trigger(),
                    "enabled": schedule.enabled,
                    "paused": schedule.id in self.paused,
                    "timezone": schedule.timezone,
                    "paused_reason": self.paused_reasons.get(schedule.id),
                    "next": nxt.astimezone(UTC).isoformat() if nxt else None,
                }
            )
        return {
            "pid": os.getpid(),
            "instance_id": self.instance_id,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "loop_lag_ms": round(self.loop_lag_s * 1000, 3),
            "threads_busy": self.runner.threads_busy,
            "running": [run.describe() for run in self.runner.active.values()],
            "schedules": schedules,
            "database": self.settings.db_url,
            "daemon": self.instance_id,
            "daemons": await self.lease.listing(),
            "health": self.health(),
            "http": self.http.url if self.http else None,
        }

    def health(self) -> dict[str, str]:
        """One entry per part: "ok", or a sentence saying what is wrong and since when
        (`status --json`'s `health`, `/healthz`, systemd's STATUS=)."""
        return {
            "scheduler": self.scheduler.health(),
            "runner": self.runner.health(),
            "history": self.history.health(),
            "http": self.http_health,
        }

    def _history_state(self) -> None:
        health = self.history.health()
        if hasattr(self, "notifications"):
            self.notifications.history_health(health)
        if health != "ok":
            self.notifier.status(f"history {health}")
        else:
            self.refresh_status()

    def status_line(self) -> str:
        if self._stop.event.is_set():
            return f"stopping: {len(self.runner.active)} run(s) still running"
        wrong = [  # a busy HTTP port is told by `status`; STATUS= keeps what runs
            f"{part} {state}"
            for part, state in self.health().items()
            if state != "ok" and part != "http"
        ]
        if wrong:
            return "; ".join(wrong)
        schedules = self.scheduler.schedules
        times = [t for t in (self.scheduler.next_fire(s) for s in schedules) if t]
        zone = ZoneInfo(self.settings.timezone)  # several schedules: the setting's zone
        nxt = shown_iso(min(times), zone, "seconds") if times else "none"
        return f"{len(schedules)} schedule(s), {len(self.runner.active)} running, next fire {nxt}"

    def refresh_status(self) -> None:
        """STATUS= for systemd, computed only when someone listens, and at most once per
        STATUS_EVERY_S however many runs start and end (it looks at every schedule)."""
        if not self.notifier.enabled or self._status_due or not hasattr(self, "scheduler"):
            return
        self._status_due = True
        asyncio.get_running_loop().call_later(STATUS_EVERY_S, self._send_status)

    def _send_status(self) -> None:
        self._status_due = False
        self.notifier.status(self.status_line())

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
