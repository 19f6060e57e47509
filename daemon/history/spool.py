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

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

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
