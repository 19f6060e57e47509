"""The one writer task: group commit, and the history's memory through faults.

Every write is an `_Op` queued to the writer. It takes everything queued since its last
commit and writes it in one transaction with a handful of Core statements (one multi-row
INSERT, one executemany per UPDATE kind: daemon.history.statements), so 1000 concurrent
runs cost a few commits, not 3000. Each caller's await returns after the commit that holds
its own row.

Faults. When a transaction fails for a reason time can mend -- the database locked, the
disk full, the file read-only, deleted or corrupt, PostgreSQL down -- nothing is dropped:
the writer keeps the batch (and everything queued after it), says so once and then every
minute, reports it through `health()` and `on_state`, and retries with backoff on a fresh
connection until the rows are written. Writing a held batch again never doubles a row:
slot inserts are `ON CONFLICT DO NOTHING` on the slot key, updates go by run id. A write
that is wrong in itself (an integrity error) fails only its own caller. After
`outage_s` of failing, `on_outage` is called once (the daemon stops, so systemd restarts
it). At `stop()` whatever still cannot be written goes to the spool file (see spool.py),
which the next `History.open` writes first; the count of rows neither written nor
spooled is `lost`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.errors import HistoryError
from daemon.history.engine import is_corrupt, unusable
from daemon.history.link import Link
from daemon.history.statements import apply

log = logging.getLogger(__name__)

MAX_BATCH_OPS = 2_000
MAX_HELD_OPS = 200_000  # past this many rows held in memory the outage counts as too long
CANCELLED_WRITE_WAIT_S = 10.0
STALL_S = 5.0  # a commit taking longer than this is reported as an outage while it waits
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
REPORT_EVERY_S = 60.0


@dataclass(eq=False, slots=True)
class _Op:
    """One queued write. kind: 'insert' (row values), 'running' / 'finish' (update
    values), 'log' (a list of run_logs rows), 'call' (a function of the sync
    connection, run in order after the rest, in the same transaction).
    `written` turns true once the writer is done with it; `landed` is created only when
    the caller was cancelled and waits for that moment -- unless the writer has given
    up (`hopeless`): then no wait would help."""

    kind: str
    values: Any
    future: asyncio.Future
    written: bool = False
    landed: asyncio.Future | None = None
    hopeless: bool = False


class _Outage(Exception):
    """A transaction failed for a reason time may mend; the batch is held."""


@dataclass(slots=True)
class Outage:
    since: datetime
    reason: str
    attempts: int = 0
    reported_at: float = 0.0


def is_transient(exc: BaseException) -> bool:
    """Faults the writer holds rows through, as opposed to a write wrong in itself."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return False
    if isinstance(exc, sa.exc.DBAPIError | OSError | ConnectionError):
        return True
    # asyncpg raises its own errors while connecting (server gone, too many clients)
    return type(exc).__module__.startswith("asyncpg")


def reason_of(exc: BaseException) -> str:
    reason = getattr(exc, "orig", None) or exc
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return text[:300]


# --------------------------------------------------------------------------- the writer


class FileWatch:
    """The SQLite database file under the writer (`path`; None: no file to watch). Deleted
    or replaced, writing on would go to an unlinked inode: `check` recreates (migrates) it
    and reconnects before the next commit; until that works, an outage."""

    def __init__(self, path: Path | None, reopen: Callable[[], Awaitable[Link]] | None, label: str):
        self.path = path
        self.label = label
        self._reopen = reopen
        self._identity = _file_identity(path)

    async def check(self, link: Link) -> Link:
        """`link`, or the new one to the recreated file."""
        if self.path is None or _file_identity(self.path) == self._identity:
            return link
        what = "was deleted" if not self.path.exists() else "was replaced"
        log.error("%s: the history database file %s; recreating it", self.label, what)
        try:
            await link.close()
            if self._reopen is not None:
                link = await self._reopen()
        except Exception as exc:
            raise _Outage(f"the database file {what} and cannot be recreated: {exc}") from exc
        self._identity = _file_identity(self.path)
        return link


class Writer:
    """The single writer task and its queue, with the outage bookkeeping."""

    def __init__(
        self,
        link: Link,
        label: str,
        *,
        outage_s: float = 300.0,
        reopen: Callable[[], Awaitable[Link]] | None = None,
        watch_file: Path | None = None,
    ):
        self.link = link
        self.label = label
        self.outage_s = outage_s
        self.queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.commits = 0
        self.write_errors = 0  # failed transactions (flowerd_history_write_errors_total)
        self.closed = False
        self.outage: Outage | None = None
        self.on_state: Callable[[], None] = lambda: None
        self.on_outage: Callable[[str], None] | None = None  # outage_s passed
        self.held: list[_Op] = []  # the batch being written (or held through an outage)
        self._file = FileWatch(watch_file, reopen, label)
        self._commit_started: float | None = None
        self._gave_up = False
        self._back_since = time.monotonic()  # opened, or writable again after an outage

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    def submit(self, kind: str, values: Any) -> _Op:
        if self.closed or self.task is None or self.task.done():
            raise HistoryError(f"{self.label}: the history is closed")
        op = _Op(kind, values, asyncio.get_running_loop().create_future(), hopeless=self._gave_up)
        self.queue.put_nowait(op)
        return op

    async def stop(self, timeout_s: float | None = None) -> list[_Op]:
        """Write what is queued; give up after `timeout_s` if the database still refuses.
        Returns the ops left unwritten (their callers get a HistoryError)."""
        if self.task is None or self.closed:
            return []
        self.closed = True
        self.queue.put_nowait(None)
        done, _ = await asyncio.wait([self.task], timeout=timeout_s)
        if not done:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        return [op for op in self.held + self._drain() if not op.written]

    def _drain(self) -> list[_Op]:
        """Everything still queued (the stop marker left out)."""
        ops = []
        while not self.queue.empty():
            op = self.queue.get_nowait()
            if op is not None:
                ops.append(op)
        return ops

    def fail(self, ops: list[_Op], message: str) -> None:
        for op in ops:
            settle(op, exc=HistoryError(message))

    # -- what health reports -----------------------------------------------------------
    def health(self) -> str:
        if self.task is not None and self.task.done() and not self.closed:
            return "unavailable: the history writer has stopped"
        if self.outage is not None:
            return (
                f"unavailable since {self.outage.since.isoformat()}: {self.outage.reason}; "
                f"{self.pending} row write(s) held"
            )
        started = self._commit_started
        if started is not None and time.monotonic() - started > STALL_S:
            waited = time.monotonic() - started
            since = datetime.now(UTC).timestamp() - waited
            return (
                f"unavailable since {datetime.fromtimestamp(since, UTC).isoformat()}: a write "
                f"has waited {waited:.0f} s (database locked?)"
            )
        return "ok"

    def writable_for_s(self) -> float:
        """How long the history has taken writes without an outage (0 during one)."""
        if self.outage is not None:
            return 0.0
        return time.monotonic() - self._back_since

    @property
    def gave_up(self) -> bool:
        return self._gave_up

    @property
    def pending(self) -> int:
        return len(self.held) + self.queue.qsize()

    # -- the task -----------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:  # a bug, not a fault: never a half-alive daemon
            log.exception("%s: the history writer failed", self.label)
            self.closed = True  # nothing more is accepted; nothing queued waits forever
            self.fail(self.held + self._drain(), f"{self.label}: the history writer failed: {exc}")
            self.held = []
            if self.on_outage is not None:
                self.on_outage(f"the history writer failed: {type(exc).__name__}: {exc}")

    async def _loop(self) -> None:
        while True:
            batch, stop = await self._next_batch()
            if batch:
                self.held = batch
                await self._write(batch)
                self.held = []
            if stop:
                break

    async def _next_batch(self) -> tuple[list[_Op], bool]:
        """Everything queued now (waits for at least one op); True when told to stop."""
        first = await self.queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH_OPS and not self.queue.empty():
            op = self.queue.get_nowait()
            if op is None:
                return batch, True
            batch.append(op)
        return batch, False

    async def _write(self, batch: list[_Op]) -> None:
        """Write `batch` (and, while held, what queues up behind it) until it lands."""
        delay = RETRY_MIN_S
        while True:
            try:
                self.link = await self._file.check(self.link)
                await self._commit(batch)
            except _Outage as outage:
                await self._after_failure(outage)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._absorb_queue(batch)
                continue
            if self.outage is not None:
                self._recovered()
            return

    def _absorb_queue(self, batch: list[_Op]) -> None:
        """While held, new ops join the batch, so they land in the same commit later (and
        one stop marker ends the writer after that commit)."""
        while len(batch) < MAX_HELD_OPS and not self.queue.empty():
            op = self.queue.get_nowait()
            if op is None:
                self.queue.put_nowait(None)  # seen again after the held batch lands
                return
            batch.append(op)
        if len(batch) >= MAX_HELD_OPS:
            self._give_up(f"more than {MAX_HELD_OPS:,} row writes are held in memory")

    async def _commit(self, ops: list[_Op]) -> None:
        self._commit_started = time.monotonic()
        try:
            results = await self.link.transact(functools.partial(apply, ops))
        except Exception as exc:
            if is_transient(exc):
                raise _Outage(reason_of(exc)) from exc
            if not isinstance(exc, sa.exc.StatementError | HistoryError):
                raise
            await self._one_by_one(ops, exc)
            return
        finally:
            self._commit_started = None
        self.commits += 1
        for op, result in zip(ops, results, strict=True):
            settle(op, result=result)

    async def _one_by_one(self, ops: list[_Op], exc: Exception) -> None:
        """One bad row must not fail the others: write them one by one."""
        self.write_errors += 1
        if len(ops) == 1:
            settle(ops[0], exc=unusable(self.label, exc))
            return
        for op in ops:
            await self._commit([op])

    async def _after_failure(self, outage: _Outage) -> None:
        self.write_errors += 1
        now = time.monotonic()
        if self.outage is None:
            self.outage = Outage(since=datetime.now(UTC), reason=str(outage), reported_at=now)
            log.error(
                "%s: the history cannot be written (%s); holding %d row write(s) and "
                "retrying -- no slot is lost meanwhile",
                self.label,
                outage,
                self.pending,
            )
            self.on_state()
        else:
            self.outage.reason = str(outage)
            if now - self.outage.reported_at >= REPORT_EVERY_S:
                self.outage.reported_at = now
                log.error(
                    "%s: the history is still unavailable (%s) since %s; %d row write(s) held",
                    self.label,
                    outage,
                    self.outage.since.isoformat(),
                    self.pending,
                )
        self.outage.attempts += 1
        if is_corrupt(str(outage)):  # waiting mends nothing: say so and stop now
            self._give_up(
                f"corrupt ({outage}): restore {self.label} from a backup, or move it away to "
                f"start a new history (`sqlite3 {self.label} .recover` may save its rows)"
            )
        down_s = (datetime.now(UTC) - self.outage.since).total_seconds()
        if down_s >= self.outage_s:
            self._give_up(f"unavailable for {down_s:.0f} s (history_outage_s = {self.outage_s:g})")
        await self.link.reset()  # a fresh connection: the old one may be broken

    def _give_up(self, why: str) -> None:
        if self._gave_up:
            return
        self._gave_up = True
        for op in self.held + list(self.queue._queue):  # noqa: SLF001 - a look, no take
            if op is not None:
                op.hopeless = True
                if op.landed is not None and not op.landed.done():
                    op.landed.set_result(None)  # a cancelled caller waits no longer
        log.critical("%s: the history is %s", self.label, why)
        if self.on_outage is not None:
            self.on_outage(why)

    def _recovered(self) -> None:
        down_s = (datetime.now(UTC) - self.outage.since).total_seconds()
        log.warning(
            "%s: the history is writable again after %.1f s; the held rows are written",
            self.label,
            down_s,
        )
        self.outage = None
        self._gave_up = False
        self._back_since = time.monotonic()
        self.on_state()


def settle(op: _Op, *, result: Any = None, exc: BaseException | None = None) -> None:
    op.written = True
    if op.landed is not None and not op.landed.done():
        op.landed.set_result(None)  # only a signal: the cancelled caller may go on
    if op.future.done():
        return  # the caller was cancelled (and its await cancelled op.future)
    if exc is not None:
        op.future.set_exception(exc)
    else:
        op.future.set_result(result)


async def await_write(op: _Op) -> Any:
    """Wait for the commit that holds this write. If the caller is cancelled meanwhile,
    the write is already queued and lands anyway: wait (bounded) for it, so the row is
    durable when the cancellation goes on, then re-raise the CancelledError.
    (Like asyncio.shield, without a second future and callback per write: the writer
    never looks at op.future before writing, so cancelling it loses nothing.)"""
    try:
        return await op.future
    except asyncio.CancelledError:
        if not op.written and not op.hopeless:
            op.landed = asyncio.get_running_loop().create_future()
            await asyncio.wait([op.landed], timeout=CANCELLED_WRITE_WAIT_S)
        raise


def _file_identity(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
