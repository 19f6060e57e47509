"""`pool = "warehouse"`: runs of every schedule in one pool share its limit.

The limits come from the setting `pools = { warehouse = 2 }`. A run waiting for its pool is
a `queued` row (it is claimed first), shows in `flowerd_pool_waiting{pool}`, and its wait
counts against misfire_grace as any wait does (the runner re-checks lateness after it).
Fair: when a place frees, the waiting run with the OLDEST slot gets it (ties: who came
first), whichever schedule it belongs to.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(order=True)
class _Waiter:
    slot: datetime
    seq: int
    future: asyncio.Future = field(compare=False)


class Pools:
    """`await acquire(pool, slot)` -> a release callable (call it once)."""

    def __init__(
        self,
        limits: dict[str, int],
        *,
        on_waiting: Callable[[str, int], None] = lambda pool, count: None,
    ):
        self.limits = dict(limits)
        self._on_waiting = on_waiting
        self._running: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, list[_Waiter]] = defaultdict(list)
        self._seq = itertools.count()

    def waiting(self, pool: str) -> int:
        return sum(1 for w in self._waiting[pool] if not w.future.done())

    def running(self, pool: str) -> int:
        return self._running[pool]

    async def acquire(self, pool: str, slot: datetime) -> Callable[[], None]:
        limit = self.limits.get(pool, 1)
        if self._running[pool] < limit and not self.waiting(pool):
            self._running[pool] += 1
            return self._releaser(pool)
        waiter = _Waiter(slot, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiting[pool], waiter)
        self._tell(pool)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release(pool)  # granted just as it was cancelled: pass it on
            self._tell(pool)
            raise
        return self._releaser(pool)

    def _releaser(self, pool: str) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(pool)

        return release

    def _release(self, pool: str) -> None:
        self._running[pool] -= 1
        heap, limit = self._waiting[pool], self.limits.get(pool, 1)
        while heap and self._running[pool] < limit:
            waiter = heapq.heappop(heap)
            if not waiter.future.done():
                waiter.future.set_result(None)
                self._running[pool] += 1
        self._tell(pool)

    def _tell(self, pool: str) -> None:
        self._on_waiting(pool, self.waiting(pool))
