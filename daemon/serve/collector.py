"""Python's cyclic garbage collector, paused while a command builds what lives on.

`flowerd serve`, `validate` and `schedules` allocate hundreds of thousands of objects that
all stay alive: the modules they import (Hamilton, pandas, SQLAlchemy), every schedule read,
each one's job. Each time allocations pass its threshold the collector walks the young
objects, and every so often the whole heap, looking for cycles that are not there: on a
project of 10,000 schedules that was ~0.55 s of a 2.1 s `flowerd serve` start-up (0.3 s of
it reading the schedules, 0.1 s the imports) and ~0.15 s of `validate` and `schedules`.
So these commands pause it while they build -- the few cycles made meanwhile wait: a
collection at the end of a daemon's start-up found ~1,400 garbage objects of 310,000 --
and keep what they built (`keep`): `gc.freeze`, the documented way to take long-lived
objects out of every later walk, before the collector is back on for what the daemon's
runs allocate. Frozen, they are not walked by the collection the interpreter makes at
exit either (~0.15 s after Hamilton's import).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused(*, keep: bool = False) -> Iterator[None]:
    """The collector off inside; after, as it was (a caller that turned it off keeps it
    off). `keep`: what exists at the end lives on -- frozen before the collector is back,
    which would otherwise find all of it young and walk it at the next allocation."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        if was_on:
            gc.enable()


__all__ = ["paused"]
