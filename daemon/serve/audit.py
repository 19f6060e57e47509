"""The audit log: every act on the daemon -- trigger, pause, resume, rerun, backfill,
reload, stop -- is a row before it takes effect (DESIGN "Operating it as a team").

From the CLI the actor is the Unix user at the other end of the control socket (its peer
credentials, SO_PEERCRED); over HTTP it is the token's name, and the client's address
goes in `detail`. A request refused before it is an act (a 401 / 403, an unknown
schedule) leaves no row; a row that cannot be written refuses the act (HistoryError).
A row never holds a secret: of a trigger's inputs only the names are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from daemon.serve.control import user_name

log = logging.getLogger("daemon.audit")

ACTS = ("trigger", "pause", "resume", "rerun", "backfill", "reload", "stop")
ON_A_SCHEDULE = ("trigger", "pause", "resume", "backfill")

Handler = Callable[[dict], Awaitable[dict]]


class AuditHistory(Protocol):
    async def get_run(self, run_id: int) -> object: ...

    async def add_audit(
        self,
        *,
        actor: str,
        via: str,
        action: str,
        schedule: str | None = None,
        run_id: int | None = None,
        detail: str | None = None,
    ) -> dict: ...


class Audit:
    """Records acts; `from_cli` is the control socket's hook, `from_http` the API's."""

    def __init__(
        self,
        history: AuditHistory,
        schedules: Callable[[], Mapping[str, object]],
        handlers: Mapping[str, Handler],
    ):
        self._history = history
        self._schedules = schedules
        self._handlers = handlers

    async def from_cli(self, request: dict, uid: int) -> None:
        """Before a control command runs: its row, if it is an act."""
        await self.record(str(request.get("cmd")), request, actor=user_name(uid), via="cli")

    async def from_http(self, action: str, request: dict, *, actor: str, client: str) -> dict:
        """An act asked over HTTP by an allowed token: its row, then the act."""
        await self.record(action, request, actor=actor, via="http", client=client)
        return await self._handlers[action](request)

    async def record(
        self, action: str, request: dict, *, actor: str, via: str, client: str | None = None
    ) -> bool:
        """Write the act's row (False: not an act, or one about to be refused)."""
        if action not in ACTS:
            return False
        schedule = request.get("schedule")
        if action in ON_A_SCHEDULE and schedule not in self._schedules():
            return False  # the handler refuses it: no act
        run_id = request.get("run_id") if action == "rerun" else None
        if action == "rerun":
            await self._history.get_run(int(run_id or 0))  # RunNotFound: refused, no act
        entry = await self._history.add_audit(
            actor=actor,
            via=via,
            action=action,
            schedule=schedule if isinstance(schedule, str) else None,
            run_id=run_id if isinstance(run_id, int) else None,
            detail=detail_of(action, request, client),
        )
        log.info("audit: %s %s %s via %s", entry["actor"], action, schedule or "", via)
        return True


def detail_of(action: str, request: dict, client: str | None) -> str | None:
    """What else says what the act was: the client, a trigger's input names (never their
    values), a backfill's range."""
    parts = [f"client {client}"] if client else []
    if action == "trigger" and request.get("inputs"):
        parts.append("inputs " + ", ".join(sorted(map(str, request["inputs"]))))
    if action == "backfill":
        parts.append(f"from {request.get('from')} to {request.get('to')}")
        if request.get("rerun"):
            parts.append("rerun")
    return "; ".join(parts) or None
