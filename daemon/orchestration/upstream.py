"""`after = ["extract", "prices"]`: a schedule that runs when its upstreams have succeeded.

The graph: every name in `after` must be a schedule (did-you-mean otherwise), and no
schedule may (through others) run after itself -- a cycle is named with every member.

At run time (`Upstream`, a run-event listener: no polling, so a downstream starts within
milliseconds of its last upstream's finish): a downstream D is due when every upstream U
has a `success` whose slot is later than D's newest slot (none yet: any success). D's
slot is then the newest of those slots, its trigger `upstream`; the slot key of the
history makes it run once per slot even with several daemons. Only slot rows count
(trigger schedule, catchup, backfill, upstream): a `manual` run or a `rerun` of an
upstream never fires its downstream, and a backfill of an old upstream slot does not
either (its slot is not newer). The newest slots are held in memory, seeded from the
history at start, so deciding costs no query.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from daemon.runner.events import RunEvent

log = logging.getLogger("daemon.upstream")  # its name before the move

SLOT_TRIGGERS = ("schedule", "catchup", "backfill", "upstream")


# --------------------------------------------------------------------------- at run time


class Upstream:
    """Fires `after` schedules as their upstreams succeed.

    `schedules()` gives the current schedules by id (reload changes them); `fire(schedule,
    slot)` starts a slot with trigger `upstream`; `paused()` the paused ids."""

    def __init__(
        self,
        *,
        schedules: Callable[[], dict[str, Any]],
        fire: Callable[[Any, datetime], None],
        paused: Callable[[], set[str]],
        refresh: Callable[[tuple[str, ...]], Awaitable[dict[str, datetime]]] | None = None,
        spawn: Callable[[Awaitable[None]], Any] | None = None,
    ):
        self._schedules = schedules
        self._fire = fire
        self._paused = paused
        self._refresh = refresh  # newest success slots from the history (other daemons)
        self._spawn = spawn
        self.newest_success: dict[str, datetime] = {}  # upstream id -> its newest success slot
        self.newest_slot: dict[str, datetime] = {}  # downstream id -> its newest slot

    def seed(self, newest_success: dict[str, datetime], newest_slot: dict[str, datetime]):
        self.newest_success.update(newest_success)
        self.newest_slot.update(newest_slot)

    def on_event(self, event: RunEvent) -> None:
        if event.schedule_id is None or event.scheduled_at is None:
            return
        if event.trigger not in SLOT_TRIGGERS:
            return
        slot = event.scheduled_at.astimezone(UTC)
        if event.trigger == "upstream":
            _keep_newest(self.newest_slot, event.schedule_id, slot)
        if event.kind == "finished" and event.status == "success":
            _keep_newest(self.newest_success, event.schedule_id, slot)
            self.evaluate(downstream_of=event.schedule_id)

    def evaluate(self, downstream_of: str | None = None) -> None:
        """Fire every due downstream (of `downstream_of`, or all)."""
        paused = self._paused()
        for schedule in self._schedules().values():
            if not schedule.after or not schedule.enabled or schedule.id in paused:
                continue
            if downstream_of is not None and downstream_of not in schedule.after:
                continue
            if self.due_slot(schedule) is not None:
                self._start(schedule)
            elif downstream_of is not None and self._refresh is not None:
                self._spawn(self._look_again(schedule))

    async def _look_again(self, schedule: Any) -> None:
        """Not due by what this daemon saw: another daemon sharing the history may have
        run an upstream (its finish is no event here), so ask the history once."""
        for name, slot in (await self._refresh(schedule.after)).items():
            _keep_newest(self.newest_success, name, slot)
        if self.due_slot(schedule) is not None and schedule.id not in self._paused():
            self._start(schedule)

    def _start(self, schedule: Any) -> None:
        slot = self.due_slot(schedule)
        if slot is None:
            return
        self.newest_slot[schedule.id] = slot  # before the claim: never twice
        log.info(
            "%s: every upstream (%s) has succeeded since its last slot; slot %s",
            schedule.id,
            ", ".join(schedule.after),
            slot.isoformat(),
        )
        self._fire(schedule, slot)

    def due_slot(self, schedule: Any) -> datetime | None:
        """The slot `schedule` runs now, or None while an upstream has not succeeded
        since its newest slot."""
        last = self.newest_slot.get(schedule.id)
        successes = [self.newest_success.get(name) for name in schedule.after]
        if any(s is None or (last is not None and s <= last) for s in successes):
            return None
        return max(successes)  # type: ignore[type-var]  # none is None here


def _keep_newest(newest: dict[str, datetime], key: str, slot: datetime) -> None:
    if key not in newest or slot > newest[key]:
        newest[key] = slot
