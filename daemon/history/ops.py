"""What the History's writing parts take instead of the Writer itself: `Ops`, the three
things they do with it (queue a write, fail held writes, ask how long it has been
writable), and `Origin`, who writes (the instance, host and pid stamped on rows and
leases). Both are made once when the History opens; nothing here runs per write beyond
the Writer's own `submit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemon.errors import HistoryError

if TYPE_CHECKING:
    from daemon.history.writer import Writer


@dataclasses.dataclass(frozen=True, slots=True)
class Ops:
    """`submit(kind, values) -> op` (await it with `await_write`); `fail(ops, message)`
    settles held ops with a HistoryError; `writable_for_s()` since the last outage."""

    submit: Callable[[str, Any], Any]
    fail: Callable[[list, str], None]
    writable_for_s: Callable[[], float]

    @classmethod
    def of(cls, writer: Writer | None, label: str) -> Ops:
        """The writer's own methods (no extra call per write); read-only: refusals."""
        if writer is not None:
            return cls(writer.submit, writer.fail, writer.writable_for_s)

        def refuse(*_: Any) -> Any:
            raise HistoryError(f"{label}: opened read-only; cannot write")

        return cls(refuse, refuse, refuse)


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Who writes: stamped on every run row and on this daemon's lease."""

    instance_id: str | None
    host: str
    pid: int

    def lease(self) -> dict:
        return {"id": self.instance_id, "host": self.host, "pid": self.pid}
