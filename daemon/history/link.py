"""Where the writer's transactions run: one function of a sync connection per transaction.

The writer hands each batch to `Link.transact(fn)`, which runs `fn(connection)` between
BEGIN and COMMIT and returns its result. Two links, one contract:

- `ThreadLink` (SQLite): a sync pysqlite engine whose one connection lives in one
  dedicated thread; a whole transaction is one hop from the event loop to that thread and
  back. Through aiosqlite every statement, BEGIN and COMMIT is its own hop (five or six a
  commit, each a thread wake-up and a loop wake-up): measured here, a one-row commit took
  0.40 ms and 458 us of CPU that way, 0.16 ms and 236 us in one hop; and a locked or slow
  database blocks only that thread, never the loop.
- `AsyncLink` (PostgreSQL and other async drivers): the same function through
  SQLAlchemy's `AsyncConnection.run_sync`.

The statements themselves are plain SQLAlchemy Core in both (statements.apply and the
'call' writes), so there is one place that says what a write is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from daemon.history.engine import describe, sync_writer_engine, writer_engine
from daemon.settings import sqlite_path

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

Work = Callable[[sa.Connection], Any]


class ThreadLink:
    """A sync engine used only from its own thread (sqlite3 objects stay in the thread
    that made them). `engine` is built lazily by `make()` in that thread's first job."""

    def __init__(self, make: Callable[[], sa.Engine], label: str):
        self._make = make
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="flowerd-history")
        self._closed = False
        self.label = label

    async def transact(self, work: Work) -> Any:
        """`work(connection)` in one transaction, in the link's thread."""
        return await self._hop(self._transact, work)

    async def reset(self) -> None:
        """Drop the connection (after a failure: it may be broken) and the engine's pool."""
        await self._hop(self._reset)

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self._hop(self._reset, False)
        finally:
            self._closed = True
            self._thread.shutdown(wait=False)

    def _hop(self, fn, *args) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # -- in the link's thread -------------------------------------------------------------
    def _transact(self, work: Work) -> Any:
        if self._conn is None:
            if self._engine is None:
                self._engine = self._make()
            self._conn = self._engine.connect()
        with self._conn.begin():
            return work(self._conn)

    def _reset(self, broken: bool = True) -> None:
        conn, self._conn = self._conn, None
        engine, self._engine = self._engine, None
        if conn is not None:
            _quietly_sync(conn.invalidate if broken else conn.close, self.label)
        if engine is not None:
            _quietly_sync(engine.dispose, self.label)


def _quietly_sync(close, label: str) -> None:
    try:
        close()
    except Exception as exc:  # cleanup after a fault says nothing new
        log.debug("%s: closing a history connection failed: %s", label, exc)


class AsyncLink:
    """An async engine's connection; the work runs through `run_sync` (greenlet)."""

    def __init__(self, engine: AsyncEngine, label: str):
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self.label = label

    async def transact(self, work: Work) -> Any:
        if self._conn is None:
            self._conn = await self.engine.connect()
        async with self._conn.begin():
            return await self._conn.run_sync(work)

    async def reset(self) -> None:
        """Drop the connection (after a failure: it may be broken) and the pool."""
        conn, self._conn = self._conn, None
        for close in (conn and conn.invalidate, conn and conn.close, self.engine.dispose):
            await _quietly(close, self.label)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        for close in (conn and conn.close, self.engine.dispose):
            await _quietly(close, self.label)


async def _quietly(close, label: str) -> None:
    if close is None:
        return
    try:
        await close()
    except Exception as exc:  # cleanup after a fault says nothing new
        log.debug("%s: closing a history connection failed: %s", label, exc)


def open_link(url: str, *, busy_timeout_ms: int) -> ThreadLink | AsyncLink:
    """The writer's link for `url`: SQLite in its own thread, others through run_sync."""
    label = describe(url)
    path = sqlite_path(url)
    if path is None:
        return AsyncLink(writer_engine(url, busy_timeout_ms=busy_timeout_ms), label)

    def make() -> sa.Engine:
        return sync_writer_engine(url, busy_timeout_ms=busy_timeout_ms)

    return ThreadLink(make, label)


Link = ThreadLink | AsyncLink
