"""Opening the history for writing at start-up: bounded, and plain about what is wrong.

A database locked by another process (a backup, a `sqlite3` shell, a VACUUM) is waited
for -- said every few seconds -- for at most `wait_s`; anything else that keeps the file
from being opened or migrated (corrupt, read-only, a directory, a full disk, a server
that does not answer) ends with one paragraph that names the database and what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from daemon.errors import HistoryError
from daemon.history.engine import WRITER_BUSY_TIMEOUT_MS, corrupt_advice, describe, is_corrupt
from daemon.history.migrate import upgrade
from daemon.settings import sqlite_path

log = logging.getLogger(__name__)

REPORT_EVERY_S = 5.0
RETRY_S = 0.5


async def open_bounded(url: str, *, wait_s: float) -> str | None:
    """Migrate the database to head, waiting at most `wait_s` while it is locked."""
    path = sqlite_path(url)
    if path is not None and path.is_dir():  # said before any driver thread starts
        raise HistoryError(explain(url, "is a directory"))
    started = time.monotonic()
    reported = started - REPORT_EVERY_S
    while True:
        try:
            return await upgrade(url, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS, probe_write=True)
        except HistoryError as exc:
            waited = time.monotonic() - started
            if not is_locked(str(exc)) or waited >= wait_s:
                raise HistoryError(explain(url, str(exc), waited_s=waited)) from None
            if time.monotonic() - reported >= REPORT_EVERY_S:
                reported = time.monotonic()
                log.warning(
                    "waiting for the history database %s: it is locked by another process "
                    "(%.0f s so far; giving up after %g s)",
                    describe(url),
                    waited,
                    wait_s,
                )
        await asyncio.sleep(RETRY_S)


def is_locked(message: str) -> bool:
    return "locked" in message or "SQLITE_BUSY" in message


def explain(url: str, message: str, *, waited_s: float = 0.0) -> str:
    """One paragraph: which database, what is wrong with it, and what to do."""
    name = describe(url)
    if message.startswith(f"the history database {name} "):  # said already (unusable())
        return message
    path = sqlite_path(url)
    if path is not None:
        found = _explain_file(path, message, waited_s)
        if found:
            return f"the history database {name} {found}"
    elif "refused" in message or "connect" in message.lower():
        return (
            f"cannot connect to the history database {name}: {_detail(message)}. Is the "
            "server running and reachable from here, and are the URL's credentials right?"
        )
    return f"cannot use the history database {name}: {_detail(message)}"


def _explain_file(path: Path, message: str, waited_s: float) -> str | None:
    if path.is_dir():
        return "is a directory, not a database file: point --db (or database_url) at a file"
    if is_locked(message):
        return (
            f"stayed locked by another process for {waited_s:.0f} s (a backup, a sqlite3 "
            "shell or a VACUUM?). Let it finish, or raise history_outage_s"
        )
    if is_corrupt(message):
        return corrupt_advice(path, _detail(message))
    if "readonly" in message or "read-only" in message:
        return (
            f"is read-only for this user (uid {os.getuid()}): give the user running flowerd "
            f"write access to {path} and its directory {path.parent}"
        )
    if "full" in message:
        return f"cannot be written: the disk holding {path.parent} is full. Free some space"
    if "unable to open" in message or "Permission" in message:
        return (
            f"cannot be opened ({_detail(message)}): check that {path.parent} exists and "
            f"that uid {os.getuid()} may write there"
        )
    return None


def _detail(message: str) -> str:
    """The driver's own words, without SQLAlchemy's '(Background on this error ...)'."""
    text = message.split("\n", 1)[0]
    if ": cannot use the history database: " in text:
        text = text.split(": cannot use the history database: ", 1)[1]
    return text.strip().rstrip(".")
