"""The spool: row writes the history could not take before the daemon stopped.

When a stop comes while the database is unavailable (locked, full, gone), the writer's
held rows are appended here, one JSON line each, beside the database (`<db>.spool`, or
`<state dir>/history.spool` for PostgreSQL), and the next `History.open` writes them
first -- before crashed runs are reaped, so a run that finished is not called `crashed`.
Replaying is idempotent: slot rows are inserted `ON CONFLICT DO NOTHING`, updates go by
run id. A claim that never reached the database is spooled as a `cancelled` row (its
pipeline never started: flowerd starts a pipeline only once its claim is durable).
A plain JSON-lines file, not a second SQLite file: when the disk is full or the database
file is the problem, an append to a small text file is the write most likely to work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.history.ops import Ops
from daemon.history.schema import ACTIVE, utcnow
from daemon.history.writer import await_write
from daemon.settings import sqlite_path

log = logging.getLogger(__name__)

_DATETIME = "$datetime"
SPOOLED_KINDS = ("insert", "running", "finish")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _decode(obj: dict) -> Any:
    if len(obj) == 1 and _DATETIME in obj:
        return datetime.fromisoformat(obj[_DATETIME])
    return obj


def write(path: Path, entries: list[tuple[str, dict]]) -> None:
    """Append (kind, values) entries and fsync: the spool is only worth it if durable."""
    lines = "".join(
        json.dumps({"kind": kind, "values": values}, default=_encode) + "\n"
        for kind, values in entries
    )
    if path is None:
        raise OSError("no spool: the history was opened without a state dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    size = os.fstat(fd).st_size
    try:
        data = lines.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)  # no torn half of these entries stays behind
        if size == 0:
            os.unlink(path)
        raise
    finally:
        os.close(fd)


def read(path: Path) -> list[tuple[str, dict]]:
    """The entries of a spool (a torn last line, from a crash mid-append, is skipped)."""
    entries = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line, object_hook=_decode)
            except ValueError:
                log.warning("%s line %d is torn or not JSON; skipped", path, number)
                continue
            if entry.get("kind") in SPOOLED_KINDS and isinstance(entry.get("values"), dict):
                entries.append((entry["kind"], entry["values"]))
    return entries


class Spool:
    """What `close` could not write goes to the spool at `path`; the next writer `open`
    writes it first. Counts what it held (`spooled`) and what it could not (`unwritten`)."""

    def __init__(self, path: Path | None, label: str, ops: Ops):
        self.path = path
        self.label = label
        self._ops = ops
        self.unwritten = 0  # row writes neither written nor spooled at close (lost)
        self.spooled = 0  # row writes left in the spool at close

    async def replay(self) -> None:
        """Rows a stop left in the spool are written before anything else happens."""
        path = self.path
        if path is None or not path.exists():
            return
        entries = read(path)
        ops = [self._ops.submit(kind, values) for kind, values in entries]
        await asyncio.gather(*(await_write(op) for op in ops))
        path.unlink()
        if ops:
            log.warning("%s: wrote %d row(s) held in the spool %s", self.label, len(ops), path)

    def hold(self, ops: list) -> None:
        entries = []
        for op in ops:
            if op.kind == "insert" and op.values.get("event_key") is not None:
                entries.append(("insert", op.values))  # an event stays queued: it runs next start
            elif op.kind == "insert" and op.values.get("status") in ACTIVE:
                # a claim that never landed: its pipeline never started
                entries.append(("insert", _never_started(op.values)))
            elif op.kind in SPOOLED_KINDS:
                entries.append((op.kind, op.values))
        dropped = len(ops) - len(entries)  # reads-and-writes ('call'): their callers retry
        message = f"{self.label}: the history was unavailable when flowerd stopped"
        try:
            if entries:
                write(self.path, entries)
        except (OSError, TypeError) as exc:
            self.unwritten += len(entries)
            slots = sum(1 for kind, values in entries if kind == "insert")
            log.critical(
                "%s; %d row write(s) could not be spooled to %s either (%s): %d slot row(s) "
                "are decided again by catch-up at the next start, and %d run(s) whose end "
                "was not written will be recorded 'crashed' then",
                message,
                len(entries),
                self.path,
                exc,
                slots,
                len(entries) - slots,
            )
            self._ops.fail(ops, f"{message}; the row could not be spooled: {exc}")
            return
        self.spooled += len(entries)
        if not entries:
            log.error("%s; %d write(s) failed", message, dropped)
            self._ops.fail(ops, message)
            return
        log.error(
            "%s; %d row write(s) held in %s are written at the next start%s",
            message,
            len(entries),
            self.path,
            f" ({dropped} other write(s) failed)" if dropped else "",
        )
        self._ops.fail(ops, f"{message}; the row is held in the spool {self.path}")


def spool_path_for(url: str, state_dir: Path | None = None) -> Path | None:
    """A SQLite file's spool lies beside it; any other database's in the project's
    state dir (each daemon on a shared PostgreSQL has its own); None: nowhere known."""
    path = sqlite_path(url)
    if path is not None:
        return path.with_name(path.name + ".spool")
    return Path(state_dir) / "history.spool" if state_dir is not None else None


def _never_started(values: dict) -> dict:
    return {
        **values,
        "status": "cancelled",
        "finished_at": utcnow(),
        "error_type": "Cancelled",
        "error_message": "the daemon stopped while the history was unavailable; "
        "the run never started (flowerd starts a pipeline only once its row is written)",
    }
