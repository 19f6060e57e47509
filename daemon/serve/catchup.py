"""Catch-up at start-up: the slots that passed while no daemon ran. Each schedule's
`catchup` (none | latest | all) says which of them run now; the others get `missed` rows
(a slot its calendar excludes: `skipped`), at most MAX_MISSED_ROWS per schedule and
outage, the oldest row counting every earlier slot. Mixed into Daemon (daemon.serve.daemon).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from daemon.history import History, RunError
from daemon.runner.events import RunEvent
from daemon.runner.execute import utcnow
from daemon.runner.runner import Runner
from daemon.schedule import Schedule
from daemon.schedule.calendars import EXCLUDED, excluded_reason
from daemon.schedule.firetimes import count_slots, slots_between
from daemon.serve.lease import Lease

log = logging.getLogger("daemon.app")  # a part of the daemon: its lines keep that name

MAX_MISSED_ROWS = 100  # per schedule and outage; the rest are counted in one summary row

IN_FLIGHT_S = 2.0  # another daemon's claim of a slot this new may not have landed yet

MAX_COUNTED_SLOTS = 10_000  # cron slots are walked to count them (~30 us each): bounded


class CatchUp:
    """Mixed into Daemon: `_catch_up` runs between the reaping and the scheduler's start."""

    history: History
    runner: Runner
    lease: Lease
    paused: set[str]

    async def _catch_up(self, schedules: list[Schedule], now: datetime) -> set[str]:
        """Missed rows of every schedule are queued together and share the writer's
        batches: a restart after a long downtime costs a commit per batch, not per slot."""
        others = await self.lease.others_alive()
        in_flight = _in_flight_from(now, others)
        last_slots = await self.history.last_slots()
        writes, new = [], set()
        for schedule in schedules:
            last = last_slots.get(schedule.id)
            if last is None:
                new.add(schedule.id)
            if last is None or not schedule.enabled or schedule.id in self.paused:
                continue
            slots = slots_between(schedule, last, now, limit=MAX_MISSED_ROWS + 1)
            slots = [slot.astimezone(UTC) for slot in slots]
            if slots:
                writes.extend(self._catch_up_schedule(schedule, slots, last, in_flight))
        await asyncio.gather(*writes)
        return set() if others else new  # a new schedule's first slots: the live ones fire

    def _catch_up_schedule(
        self, schedule: Schedule, slots: list[datetime], last: datetime, in_flight: datetime
    ):
        """`slots` holds at most MAX_MISSED_ROWS + 1 of the newest slots of the outage; if
        it is full, its oldest row stands for, and counts, every earlier slot too. Slots
        from `in_flight` on run whatever the policy (see _in_flight_from)."""
        writes = []
        if len(slots) > MAX_MISSED_ROWS:
            writes.append(
                self._missed_row(schedule, slots[0], _outage_summary(schedule, last, slots))
            )
            slots = slots[1:]
        if schedule.catchup == "none":
            to_run, missed = [], slots
        elif schedule.catchup == "latest":
            to_run, missed = slots[-1:], slots[:-1]
        else:
            to_run, missed = slots, []
        fresh = [slot for slot in missed if slot > in_flight]
        if fresh:
            missed, to_run = missed[: -len(fresh)], sorted({*fresh, *to_run})
        why = RunError(
            type="Downtime",
            message=f"the slot passed while no daemon ran (catchup = {schedule.catchup!r})",
        )
        writes.extend(self._missed_row(schedule, slot, why) for slot in missed)
        if missed:
            log.warning("%d slot(s) of %s missed while no daemon ran", len(missed), schedule.id)
        if to_run:
            log.info(
                "catching up %d slot(s) of %s (catchup = %r)",
                len(to_run),
                schedule.id,
                schedule.catchup,
            )
            writes.append(self.runner.claim_in_order(schedule, to_run))  # claimed now
        return writes

    async def _missed_row(self, schedule: Schedule, slot: datetime, error: RunError):
        status, excluded = "missed", excluded_reason(schedule, slot)
        if excluded is not None:  # it would not have run anyway (daemon.schedule.calendars)
            status, error = "skipped", RunError(type=EXCLUDED, message=excluded)
        row = await self.history.slot_write(
            schedule=schedule.id,
            pipeline=schedule.pipeline,
            scheduled_at=slot,
            status=status,
            trigger="catchup",
            async_driver=schedule.async_driver,
            error=error,
        )
        if row is not None:  # told like the runner's rows (notifications coalesce them)
            self.runner.events.emit(
                RunEvent(kind="finished", run_id=row, schedule=schedule,
                         pipeline=schedule.pipeline, trigger="catchup", status=status,
                         scheduled_at=slot, finished_at=utcnow(), error=error)
            )  # fmt: skip
        return row


def _in_flight_from(now: datetime, others: list[dict]) -> datetime:
    """Other daemons alive on this history fire slots only from their own start: the gap
    before it is nobody's, so catch-up decides every slot nobody recorded, and the slot
    key makes each one row whoever else decides it too. A slot newer than IN_FLIGHT_S may
    be one a live daemon is claiming now: it is run, never `missed`."""
    if not others:
        return now
    log.info(
        "%d other daemon(s) hold a live lease on this history: catch-up decides the slots "
        "none of them recorded",
        len(others),
    )
    return now - timedelta(seconds=IN_FLIGHT_S)


def _outage_summary(schedule: Schedule, last: datetime, slots: list[datetime]) -> RunError:
    counted = count_slots(schedule, last, slots[0], cap=MAX_COUNTED_SLOTS)
    how_many = f"{counted:,}" if counted is not None else f"more than {MAX_COUNTED_SLOTS:,}"
    return RunError(
        type="MissedSlots",
        message=f"{how_many} slots from after {last.isoformat()} up to this one "
        f"({slots[0].isoformat()}) passed while no daemon ran; this row counts them, and the "
        f"newest {len(slots) - 1} are recorded one by one",
    )
