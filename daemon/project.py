"""The project a command works on: its directories, its history file, and its lock.

A project is a base dir holding `schedules/` and `pipelines/`. A base dir without them is
an error naming what is missing -- never silently an empty project (`serve` never
creates one). A database named explicitly (`--db`, FLOWERD_DATABASE_URL, `database_url`
in flowerd.toml) must exist for the commands that only read it. One daemon serves a
project: `project_lock` holds `<base-dir>/.flowerd/project.lock` beside the per-database
lock, so a second `serve` on the same base dir with another `--db` is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from daemon.errors import DaemonAlreadyRunning, FlowerdError, HistoryError, UsageError
from daemon.settings import STATE_DIR, Settings, sqlite_path

log = logging.getLogger(__name__)

LOCK_NAME = "project.lock"
PARTS = ("schedules", "pipelines")


class NotAProject(UsageError):
    """--base-dir does not name a project (exit 2)."""


def require_project(base_dir: Path, parts: tuple[str, ...] = PARTS) -> None:
    """Refuse a base dir that is missing, not a directory, or lacks one of `parts`
    (schedules/, pipelines/); the message names each missing part."""
    base = Path(base_dir)
    if not base.is_dir():
        what = "does not exist" if not base.exists() else "is not a directory"
        raise NotAProject(
            f"--base-dir {base} {what}; give the directory holding schedules/ and pipelines/"
        )
    missing = [f"{part}/" for part in parts if not (base / part).is_dir()]
    if missing:
        raise NotAProject(
            f"--base-dir {base} is not a flowerd project: it has no {' and no '.join(missing)} "
            "(a project holds schedules/*.toml and pipelines/*.py; see README)"
        )


def require_history(settings: Settings) -> None:
    """A database named explicitly must exist before a command only reads it."""
    path = sqlite_path(settings.db_url)
    if settings.database_url and path is not None and not path.exists():
        raise HistoryError(f"no such history: {path}")


def lock_path(base_dir: Path) -> Path:
    return Path(base_dir) / STATE_DIR / LOCK_NAME


@contextlib.contextmanager
def project_lock(base_dir: Path, database: str) -> Iterator[None]:
    """One daemon per project. Under a read-only base dir (a hardened system unit) the
    lock file is opened read-only -- flock needs no write access -- and when it cannot be
    opened at all the per-database lock alone guards the daemon (said in the log)."""
    path = lock_path(base_dir)
    fd = _open_lock(path)
    if fd is None:
        yield
        return
    try:
        _take(fd, f"already serves the project {base_dir}; one daemon per project", path)
        _write_holder(fd, database)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def database_lock(state_dir: Path, database: str) -> Iterator[None]:
    """One daemon per database: a second `flowerd serve` refuses to start."""
    path = state_dir / "flowerd.lock"
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise FlowerdError(
            f"cannot create the daemon's lock {path}: {exc.strerror}. Run flowerd as a user "
            f"who may write {state_dir} (the service's user, or its owner), or give "
            "--db a database in a directory this user may write"
        ) from None
    try:
        _take(fd, f"is already serving {describe_database(database)}", path)
        _write_holder(fd, database)
        yield
    finally:
        os.close(fd)


def _take(fd: int, what: str, path: Path) -> None:
    """flock the lock file, or refuse naming the holder (its text: `pid N on HOST ...`)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "holder unknown"
        raise DaemonAlreadyRunning(
            f"another flowerd daemon ({holder}) {what}: stop it first (lock: {path})"
        ) from None


def describe_database(database: str) -> str:
    """A database as messages name it: its file, or 'a database server' (no password)."""
    return str(sqlite_path(database) or "a database server")


def prepare_lock(base_dir: Path, *, for_anyone: bool) -> Path:
    """`service install`: create the lock file before the service starts, since a
    hardened unit sees the base dir read-only and cannot create it (it can still lock it:
    flock needs only a read-only descriptor). Owned by the base dir's owner; readable by
    anyone (`for_anyone`) when the service runs as a DynamicUser."""
    path = lock_path(base_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    owner = Path(base_dir).stat()
    if os.geteuid() == 0:
        for made in (path.parent, path):
            os.chown(made, owner.st_uid, owner.st_gid)
    if for_anyone:
        path.parent.chmod(path.parent.stat().st_mode | 0o111)
        path.chmod(path.stat().st_mode | 0o444)
    return path


def _open_lock(path: Path) -> int | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as exc:
        log.warning(
            "cannot open the project lock %s (%s); only the database lock guards against "
            "a second daemon on this project",
            path,
            exc.strerror or exc,
        )
        return None


def _write_holder(fd: int, database: str) -> None:
    """`pid N on HOST, history PATH` -- never a URL, which may hold a password."""
    history = sqlite_path(database) or "on a database server"
    with contextlib.suppress(OSError):  # a read-only lock file keeps the last holder's text
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, history {history}".encode(), 0)
