"""`on_file`: a file that lands in a watched directory starts a run, once it has settled.

Watching is inotify through `asyncinotify` (not `watchfiles`): flowerd is a Linux daemon
(systemd), and inotify tells us exactly what we need -- IN_CLOSE_WRITE / IN_MOVED_TO /
IN_MODIFY as the kernel queues them, read on the event loop from the inotify fd (no thread,
no poll), and IN_Q_OVERFLOW when the kernel's queue overflowed, so a lost watch is known
and answered by a rescan. watchfiles' `awatch` batches changes behind a debounce (1.6 s by
default, a rust thread stepping every 50 ms) and folds an overflow into its own rescan
we cannot see; its debounce would stack on `settle` and eat the 50 ms budget after it.

    inotify event for a matching name -> (re)arm its settle timer (loop.call_later)
    timer fires -> stat: changed within `settle`? re-arm for the rest : record
    record -> identity (path, size, mtime_ns) -> Journal.record(schedule, "file", key)

A file written again has a new identity, so it is a new event; the same identity seen
again (a rescan, a second daemon on the same directory) finds its row and runs nothing.
At start-up, and after an overflow or a lost watch, the directory is scanned: what landed
meanwhile is recorded (at start-up only under catchup "latest" / "all": "none" leaves the
files already there alone).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from asyncinotify import Inotify, Mask

from daemon.errors import FlowerdError
from daemon.schedule import Schedule

log = logging.getLogger("daemon.incoming")

FILE_MASK = (
    Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.MODIFY | Mask.CREATE | Mask.ATTRIB | Mask.ONLYDIR
)
LOST_MASK = Mask.Q_OVERFLOW | Mask.IGNORED | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.UNMOUNT
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # a lost watch is set up again after these waits
REMEMBERED = 100_000  # identities recorded by this watch, kept to skip their repeats

Record = Callable[[str, str], Awaitable[bool]]  # (key, path) -> fresh


class _Lost(Exception):
    """The watch can no longer be trusted: the queue overflowed or the directory went."""


def identity(path: Path, status: os.stat_result) -> str:
    """A file's identity, the event key: its path, size and mtime (ns)."""
    return f"{path}|{status.st_size}|{status.st_mtime_ns}"


class FileWatch:
    """One `on_file` schedule's directory: settle timers, rescans, the record calls."""

    def __init__(self, schedule: Schedule, root: Path, record: Record):
        assert schedule.on_file is not None
        self.schedule = schedule
        self.root = root
        self.pattern = schedule.on_file.pattern
        self.settle_s = schedule.on_file.settle_s
        self.recursive = schedule.on_file.recursive
        self._record = record
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self.rescans = 0
        self.error: str | None = None  # why the watch is down now (None: it watches)
        self.down_since: datetime | None = None  # when it went down (status, /healthz)

    async def run(self, *, first_scan: bool) -> None:
        """Watch until cancelled; `first_scan`: whether files there at start count."""
        failures = 0
        while True:
            try:
                with Inotify() as inotify:
                    self._watch_tree(inotify, self.root)
                    self._scan(self.root, record=first_scan)
                    self.error, self.down_since, failures = None, None, 0
                    async for event in inotify:
                        self._on(inotify, event)
            except (_Lost, OSError) as exc:
                self.error = (
                    f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
                )
                self.down_since = self.down_since or datetime.now(UTC)
                wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
                (log.warning if failures == 0 else log.debug)(
                    "schedule %s: the watch on %s is lost (%s); rescanning in %g s",
                    self.schedule.id,
                    self.root,
                    self.error,
                    wait,
                )
                failures += 1
                first_scan = True  # what landed while the watch was gone runs
                self.rescans += 1
                await asyncio.sleep(wait)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()

    # -- inotify ------------------------------------------------------------------------
    def _watch_tree(self, inotify: Inotify, directory: Path) -> None:
        inotify.add_watch(directory, FILE_MASK | LOST_MASK if directory == self.root else FILE_MASK)
        if not self.recursive:
            return
        for child in _subdirectories(directory):
            self._watch_tree(inotify, child)

    def _on(self, inotify: Inotify, event) -> None:
        if event.mask & Mask.Q_OVERFLOW:
            raise _Lost("the kernel's inotify queue overflowed")
        path = event.path
        if event.mask & (Mask.IGNORED | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.UNMOUNT):
            if path == self.root or event.watch is None or event.watch.path == self.root:
                raise _Lost(f"the directory {self.root} was removed or moved")
            return  # a subdirectory went: its files went with it
        if path is None or event.name is None:
            return
        if event.mask & Mask.ISDIR:
            if self.recursive and event.mask & (Mask.CREATE | Mask.MOVED_TO):
                self._watch_tree(inotify, path)  # then what landed in it before the watch
                self._scan(path, record=True)
            return
        if fnmatch.fnmatchcase(event.name.name, self.pattern):
            self._arm(path, self.settle_s)

    # -- settling -------------------------------------------------------------------------
    def _arm(self, path: Path, wait_s: float) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[path] = loop.call_later(wait_s, self._settled, path)

    def _settled(self, path: Path) -> None:
        self._timers.pop(path, None)
        try:
            status = path.stat()
        except OSError:  # gone again (or never readable): no event
            return
        if not _is_file(status):
            return
        young_s = self.settle_s - (time.time() - status.st_mtime_ns / 1e9)
        if young_s > 0.001:  # changed without our seeing it (a clock skew, mmap): wait on
            self._arm(path, young_s)
            return
        self._found(path, status)

    def _scan(self, directory: Path, *, record: bool) -> None:
        """Every matching file there: settled ones recorded (if `record`), young ones timed."""
        for path in _files(directory, recursive=self.recursive):
            if not fnmatch.fnmatchcase(path.name, self.pattern):
                continue
            try:
                status = path.stat()
            except OSError:
                continue
            if not record:
                self._remember(identity(path, status))
                continue
            young_s = self.settle_s - (time.time() - status.st_mtime_ns / 1e9)
            if young_s > 0:
                self._arm(path, young_s)
            else:
                self._found(path, status)

    def _remember(self, key: str) -> bool:
        """False when this watch recorded (or passed over) the identity already."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        return True

    def _found(self, path: Path, status: os.stat_result) -> None:
        key = identity(path, status)
        if not self._remember(key):
            return
        task = asyncio.get_running_loop().create_task(self._journal(key, path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _journal(self, key: str, path: Path) -> None:
        try:
            await self._record(key, str(path))
        except asyncio.CancelledError:
            raise
        except (FlowerdError, OSError) as exc:  # the next rescan tries again
            self._seen.pop(key, None)
            log.error("schedule %s: file %s could not be recorded: %s", self.schedule.id, path, exc)
        except Exception:  # noqa: BLE001 - one file never ends the watch
            self._seen.pop(key, None)
            log.exception("schedule %s: file %s could not be recorded", self.schedule.id, path)


def _files(directory: Path, *, recursive: bool):
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_file():
                yield Path(entry.path)
            elif recursive and entry.is_dir(follow_symlinks=False):
                yield from _files(Path(entry.path), recursive=True)
        except OSError:
            continue


def _subdirectories(directory: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _is_file(status: os.stat_result) -> bool:
    return stat.S_ISREG(status.st_mode)
