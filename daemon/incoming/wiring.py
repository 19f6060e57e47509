"""What starts runs besides the clock, put together for `flowerd serve`: the journal and
one FileWatch per `on_file` schedule. The daemon builds it after the runner
(`daemon.incoming_start`) and tells it of resumes and reloads; it tells the daemon nothing
but through the callables it is given (a count per event, a part that failed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Protocol

from daemon.durations import shown_iso
from daemon.history import History
from daemon.incoming.files import FileWatch
from daemon.incoming.journal import Journal, Starter
from daemon.schedule import Schedule

log = logging.getLogger("daemon.incoming")


class Incoming:
    """The journal and the file watches; `start()`, `reload()`, `release()`, `close()`."""

    def __init__(
        self,
        *,
        history: History,
        runner: Starter,
        is_paused: Callable[[str], bool],
        base_dir: Path,
        lease_s: float,
    ):
        self.journal = Journal(history=history, runner=runner, is_paused=is_paused, lease_s=lease_s)
        self.base_dir = Path(base_dir)
        self._watches: dict[str, tuple[FileWatch, asyncio.Task]] = {}

    async def start(self, schedules: Iterable[Schedule], on_done=None) -> None:
        """Adopt what dead daemons left queued, then watch (files there at start-up run
        under catchup "latest" / "all")."""
        schedules = list(schedules)
        self.journal.set_schedules(schedules)
        await self.journal.start(on_done)
        self._watch(schedules, first=True)

    def reload(self, schedules: Iterable[Schedule]) -> None:
        """New schedule files: changed watches start over (with a rescan), removed stop."""
        schedules = list(schedules)
        self.journal.set_schedules(schedules)
        by_id = {s.id: s for s in schedules if s.on_file is not None}
        for schedule_id in list(self._watches):
            watch, task = self._watches[schedule_id]
            if by_id.get(schedule_id) != watch.schedule:
                self._stop(schedule_id)
        self._watch([s for s in by_id.values() if s.id not in self._watches], first=False)

    def release(self) -> None:
        """A schedule resumed (here or on another daemon): its held events start."""
        self.journal.release()

    def pending(self, schedule_id: str) -> int:
        return self.journal.pending(schedule_id)

    def watching(self, schedule_id: str) -> dict | None:
        """What `schedules` shows of an `on_file` schedule: its directory and its state."""
        if schedule_id not in self._watches:
            return None
        watch, _ = self._watches[schedule_id]
        return {"directory": str(watch.root), "error": watch.error, "rescans": watch.rescans}

    def health(self) -> str:
        """"ok", or each `on_file` watch that is down now, with why and since when (a
        file that lands meanwhile runs at the rescan that follows the watch's return)."""
        down = [
            f"{schedule_id}: the watch on {watch.root} is down since "
            f"{shown_iso(watch.down_since, watch.schedule.zone, 'seconds')} ({watch.error})"
            for schedule_id, (watch, _) in sorted(self._watches.items())
            if watch.error is not None and watch.down_since is not None
        ]
        return "; ".join(down) or "ok"

    async def close(self) -> None:
        for schedule_id in list(self._watches):
            self._stop(schedule_id)
        await self.journal.close()

    def _watch(self, schedules: Iterable[Schedule], *, first: bool) -> None:
        for schedule in schedules:
            if schedule.on_file is None:
                continue
            root = directory_of(schedule, self.base_dir)
            watch = FileWatch(schedule, root, self._recorder(schedule.id))
            scan = schedule.catchup != "none" or not first
            task = asyncio.get_running_loop().create_task(
                watch.run(first_scan=scan), name=f"flowerd:on_file:{schedule.id}"
            )
            self._watches[schedule.id] = (watch, task)
            log.info("schedule %s watches %s for %s", schedule.id, root, schedule.on_file.pattern)

    def _recorder(self, schedule_id: str):
        async def record(key: str, path: str) -> bool:
            recorded = await self.journal.record(schedule_id, "file", key, path=path)
            return recorded.fresh

        return record

    def _stop(self, schedule_id: str) -> None:
        watch, task = self._watches.pop(schedule_id)
        watch.close()
        task.cancel()


def directory_of(schedule: Schedule, base_dir: Path) -> Path:
    """The absolute directory an `on_file` schedule watches."""
    assert schedule.on_file is not None
    path = Path(schedule.on_file.path).expanduser()
    return (path if path.is_absolute() else Path(base_dir) / path).resolve()


class Host(Protocol):
    """What start_incoming needs of the daemon (daemon.serve.daemon.Daemon)."""

    history: History
    paused: set[str]

    @property
    def runner(self) -> Starter: ...

    def watch_part(self, task: asyncio.Task) -> None: ...


async def start_incoming(
    host: Host,
    stack: AsyncExitStack,
    schedules: Iterable[Schedule],
    *,
    base_dir: Path,
    lease_s: float,
    on_event: Callable[[str, str], None],
) -> Incoming:
    """Build and start the journal and the watches; closed by `stack`."""
    incoming = Incoming(
        history=host.history,
        runner=host.runner,
        is_paused=lambda schedule_id: schedule_id in host.paused,
        base_dir=base_dir,
        lease_s=lease_s,
    )
    incoming.journal.on_event(on_event)
    stack.push_async_callback(incoming.close)
    await incoming.start(schedules, host.watch_part)
    return incoming
