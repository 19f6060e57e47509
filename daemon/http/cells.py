"""Each schedule's last outcomes, for the page's coloured cells, kept off the runner's
run-event edge: a page view reads the history only for schedules it has not read in
STALE_S (rows other daemons or commands wrote show up within that), not 30 rows of every
schedule on every refresh.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.runner.events import RunEvent

STALE_S = 60.0


@dataclass(frozen=True, slots=True)
class Cell:
    run_id: int
    status: str
    at: datetime | None

    def key(self) -> tuple:
        return (self.at.timestamp() if self.at else 0.0, self.run_id)


class RecentRuns:
    def __init__(self, history: Any, *, per_schedule: int = 30, stale_s: float = STALE_S):
        self._history = history
        self._per_schedule = per_schedule
        self._stale_s = stale_s
        self._cells: dict[str, dict[int, Cell]] = {}
        self._read_at: dict[str, float] = {}

    def on_run_event(self, event: RunEvent) -> None:
        cells = self._cells.get(event.schedule_id or "")
        if cells is None or event.run_id is None:
            return  # not read yet: the history will have it
        at = event.scheduled_at or event.started_at or event.finished_at
        cells[event.run_id] = Cell(event.run_id, event.status, at)
        self._trim(cells)

    async def of(self, schedules: list[str]) -> dict[str, list[Cell]]:
        """Oldest first, at most `per_schedule` per schedule."""
        now = time.monotonic()
        stale = [
            s for s in schedules if now - self._read_at.get(s, -self._stale_s) >= self._stale_s
        ]
        for schedule in stale:
            self._cells.setdefault(schedule, {})  # events from now on are kept
        found = await asyncio.gather(
            *(self._history.list_runs(schedule=s, limit=self._per_schedule) for s in stale)
        )
        for schedule, records in zip(stale, found, strict=True):
            fresh = {r.id: Cell(r.id, r.status, r.at) for r in records}
            fresh.update(self._cells.get(schedule, {}))  # what events said is newer
            self._cells[schedule] = self._trim(fresh)
            self._read_at[schedule] = now
        return {s: sorted(self._cells.get(s, {}).values(), key=Cell.key) for s in schedules}

    def _trim(self, cells: dict[int, Cell]) -> dict[int, Cell]:
        if len(cells) > self._per_schedule:
            for cell in sorted(cells.values(), key=Cell.key)[: -self._per_schedule]:
                del cells[cell.run_id]
        return cells
