"""systemd integration: the notify protocol (`SystemdNotifier`) and the unit file (`render_unit`).

The notify protocol is written here by hand, deliberately, instead of depending on
python-systemd or sdnotify: a message is one datagram of newline-separated `KEY=VALUE`
lines sent to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or `@name` for the
abstract namespace). That is the whole protocol, and owning it lets us make every send
non-fatal and testable against a real socket. See sd_notify(3).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from daemon.errors import FlowerdError, UsageError
from daemon.http.address import unit_notes
from daemon.serve.credentials import credential_lines
from daemon.settings import Settings, sqlite_path

log = logging.getLogger("daemon.systemd")  # its name before the move

SEND_TIMEOUT_S = 0.25  # a manager that stops reading must not stall the event loop for long


class SystemdNotifier:
    """Tells the service manager about start-up, reloads, shutdown and liveness.

    A no-op when $NOTIFY_SOCKET is unset (not under systemd, or Type= is not notify), so
    the daemon calls it unconditionally. Sends never raise: a lost notification must not
    take the daemon down; the first failure is logged at debug level.
    """

    def __init__(self, address: str | None = None, *, watchdog_interval_s: float | None = None):
        self.address = address  # a filesystem path, or "\0name" for an abstract socket
        self.watchdog_interval_s = watchdog_interval_s if address else None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """NOTIFY_SOCKET, and the watchdog from WATCHDOG_USEC when WATCHDOG_PID is unset or
        names this process (a child that inherited the variables must not ping)."""
        address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        interval_s = None
        watchdog_pid = environ.get("WATCHDOG_PID", "").strip()
        if not watchdog_pid or watchdog_pid == str(os.getpid()):
            interval_s = _watchdog_interval_s(environ.get("WATCHDOG_USEC", ""))
        return cls(address, watchdog_interval_s=interval_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # -- the messages ----------------------------------------------------------------
    def notify(self, **fields: object) -> None:
        """notify(READY=1, STATUS="...") sends "READY=1\\nSTATUS=...\\n" as one datagram."""
        if not self.enabled or not fields:
            return
        lines = (f"{key}={_one_line(value)}\n" for key, value in fields.items())
        self._send("".join(lines).encode())

    def ready(self, status: str | None = None) -> None:
        self.notify(READY=1, **self._status_field(status))

    def status(self, text: str) -> None:
        """STATUS=text, sent only when it differs from the last status sent."""
        self.notify(**self._status_field(text))

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic time, so the manager can tell reloads apart;
        send ready() once the new configuration is in effect (or the old one is kept)."""
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=now_us)

    def stopping(self, status: str | None = None) -> None:
        self.notify(STOPPING=1, **self._status_field(status))

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more from now before the start/stop timeout fires."""
        self.notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)

    async def watchdog_loop(self) -> None:
        """Ping every watchdog_interval_s, forever. It runs on the event loop itself, not in
        a thread, so a loop stalled by a blocking call misses its pings and systemd notices.
        Returns at once when there is no watchdog."""
        if self.watchdog_interval_s is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_interval_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------
    def _status_field(self, text: str | None) -> dict[str, str]:
        if text is None:
            return {}
        text = _one_line(text)
        if text == self._last_status:
            return {}
        self._last_status = text
        return {"STATUS": text}

    def _send(self, datagram: bytes) -> None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendto(datagram, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.debug("cannot notify the service manager at %r: %s", self.address, exc)


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:  # e.g. vsock:... (systemd >= 253 in VMs); not supported, so not under systemd
        log.debug("ignoring unsupported NOTIFY_SOCKET %r", value)
    return None


def _watchdog_interval_s(value: str) -> float | None:
    """Half of WATCHDOG_USEC, in seconds, as sd_watchdog_enabled(3) recommends."""
    try:
        usec = int(value)
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


def _one_line(value: object) -> str:
    return " ".join(str(value).splitlines())


# -- the unit file -------------------------------------------------------------------
UNIT_PREFIX = "flowerd-"  # flowerd-<project>.service: two projects on one host never clash
_UNIT_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
WATCHDOG_S = 30
STOP_MARGIN_S = 15  # TimeoutStopSec = shutdown_grace + this: drain, record, close the db

# Sandboxing that needs no privileges (seccomp, with NoNewPrivileges), so it applies in
# both system units and user units.
_SECCOMP_HARDENING = (
    "NoNewPrivileges=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",  # pipelines may talk to databases
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged",  # @resources stays: BLAS/torch/dask set affinity, limits
    "SystemCallErrorNumber=EPERM",
    "# MemoryDenyWriteExecute= is left out on purpose: pipelines may use JIT compilers",
    "# (numba/llvmlite, PyTorch, cffi callbacks), which it breaks at run time.",
)

# Needs mount namespaces or privileges, which a per-user manager does not have.
_SYSTEM_HARDENING = (
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RemoveIPC=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
)


def project_name(base_dir: Path, given: str | None = None) -> str:
    """The project's name in its unit (`flowerd-<name>.service`) and state directory
    (`flowerd/<name>`): `given` (checked), else the base dir's name, made unit-safe."""
    if given is not None:
        if not _UNIT_WORD.fullmatch(given):
            raise UsageError(
                f"--name {given!r}: a unit name may hold only letters, digits, '_', '.' and "
                "'-', and starts with a letter, a digit or '_'"
            )
        return given
    found = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(base_dir).absolute().name).strip("-.")
    return found or "project"


def unit_name(name: str) -> str:
    return f"{UNIT_PREFIX}{name}.service"


def check_user(user: str) -> None:
    """--run-as names a user of this host (systemd would only fail at start)."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise UsageError(
            f"--run-as: no user {user!r} on this host; create it (useradd --system {user}), "
            "name another, or give 'dynamic' for a transient user (DynamicUser=yes)"
        ) from None


def render_unit(
    settings: Settings,
    *,
    user: bool,
    flowerd_path: str | None = None,
    run_as: str | None = None,
    watchdog_s: int = WATCHDOG_S,
    name: str | None = None,
) -> str:
    """The flowerd-<name>.service unit for this install, as text.

    `user`: a unit for the per-user manager (`systemctl --user`), else a system unit.
    `run_as`: a system unit's User=; None means DynamicUser=yes (a transient user that can
    only read world-readable files). See `default_run_as`. Ignored for user units.
    `name`: the project's name (see `project_name`; default: the base dir's).
    """
    base = Path(settings.base_dir).absolute()
    name = project_name(base, name)
    exe = flowerd_path or flowerd_executable()
    lines = [
        f"# {unit_name(name)} for {base}, written by `flowerd service print`.",
        *unit_notes(settings.http, bool(settings.http_token or settings.http_tokens)),
        "[Unit]",
        f"Description=flowerd scheduled pipelines ({_value(str(base))})",
    ]
    if not user:  # the user manager has no network-online.target
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_exec_arg(a) for a in (exe, "--base-dir", str(base), "serve")),
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WorkingDirectory={_value(str(base))}",
        "Restart=on-failure",
        "RestartSec=5",
        f"WatchdogSec={watchdog_s}",
        f"TimeoutStopSec={math.ceil(settings.shutdown_grace + STOP_MARGIN_S)}",
        # Stop: SIGTERM to flowerd alone, which drains and kills its own workers (their
        # runs recorded `cancelled`); SIGKILL to whatever is left in the cgroup after
        # TimeoutStopSec. (control-group would SIGTERM every worker at once, so runs that
        # could finish within the grace would die mid-run instead.)
        "KillMode=mixed",
        # The kernel's OOM killer ending one run's worker (isolation = "process") fails
        # that run (WorkerDied); it must not stop the whole service. Workers raise their
        # own oom_score_adj, so the kernel picks them before flowerd.
        "OOMPolicy=continue",
        "SyslogIdentifier=flowerd",
        "Environment=PYTHONUNBUFFERED=1",
        *_state_lines(settings, user=user, name=name),
        *credential_lines(settings, unit_name(name)),
    ]
    if not user:
        lines += [f"User={run_as}" if run_as else "DynamicUser=yes"]
    lines += ["", "# Hardening: read-only everywhere except the state directory.", "UMask=0077"]
    lines += _SECCOMP_HARDENING
    if user:
        lines += ["# Mount-namespace sandboxing (ProtectSystem=, ...) needs a system unit."]
    else:
        lines += _SYSTEM_HARDENING
    lines += ["", "[Install]", "WantedBy=" + ("default.target" if user else "multi-user.target")]
    return "\n".join(lines) + "\n"


def _state_lines(settings: Settings, *, user: bool, name: str) -> list[str]:
    """StateDirectory= (writable even under ProtectSystem=strict) holds the history
    database, its lock and the control socket, one directory per project. A non-SQLite
    database_url (PostgreSQL) is left to flowerd.toml, so no password ends up in a
    world-readable unit file."""
    lines = [f"StateDirectory=flowerd/{name}"]
    if settings.database_url and sqlite_path(settings.database_url) is None:
        lines.append("# database_url: not SQLite, so read from flowerd.toml as configured.")
        return lines
    state = "%S" if user else "/var/lib"  # %S: the user's state directory
    lines.append(
        f"Environment=FLOWERD_DATABASE_URL=sqlite+aiosqlite:///{state}/flowerd/{name}/history.db"
    )
    return lines


def unit_path(*, user: bool, name: str, home: Path | None = None) -> Path:
    """Where `flowerd service install` writes the unit."""
    if not user:
        return SYSTEM_UNIT_DIR / unit_name(name)
    config = os.environ.get("XDG_CONFIG_HOME") or str((home or Path.home()) / ".config")
    return Path(config) / "systemd" / "user" / unit_name(name)


def enable_commands(*, user: bool, name: str) -> str:
    systemctl = "systemctl --user" if user else "systemctl"
    return f"{systemctl} daemon-reload && {systemctl} enable --now {UNIT_PREFIX}{name}"


def database_hint(settings: Settings, *, user: bool, name: str) -> str | None:
    """The SQLite file the unit's daemon uses, for `flowerd --db ... runs` on the shell
    (None when the database is not SQLite: flowerd.toml already says where it is)."""
    if settings.database_url and sqlite_path(settings.database_url) is None:
        return None
    return f"{_user_state_dir() if user else '/var/lib'}/flowerd/{name}/history.db"


def _user_state_dir() -> str:
    """What %S means to this user's manager: $XDG_STATE_HOME since systemd 254,
    $XDG_CONFIG_HOME before (systemd.exec(5), "Automatic directory creation")."""
    for key in ("user-state-private", "user-configuration"):
        try:
            found = subprocess.run(
                ["systemd-path", key], capture_output=True, text=True, timeout=5, check=True
            )
            return found.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return "%S"


def world_readable(path: Path) -> bool:
    """Whether a DynamicUser (in no group, owning nothing) can reach and read `path`:
    'other' may read it (and enter it, for a directory) and enter every parent."""
    path = Path(path).absolute()
    try:
        mode = path.stat().st_mode
        need = 0o005 if stat.S_ISDIR(mode) else 0o004
        if mode & need != need:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in path.parents)
    except OSError:
        return False


def flowerd_executable() -> str:
    """The absolute path of this install's `flowerd`: next to the running interpreter (a
    venv's bin/, not resolved through symlinks), else the one on $PATH."""
    beside = Path(sys.executable).parent / "flowerd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("flowerd")
    if found:
        return str(Path(found).absolute())
    raise FlowerdError(
        f"cannot find the flowerd executable (not in {beside.parent} nor on PATH); "
        "install flowerd (pip install flowerd) into the environment that should run it"
    )


def default_run_as(base_dir: Path) -> str | None:
    """The owner of the base directory, unless that is root: the daemon then reads the
    owner's pipelines with the owner's rights. For a root-owned base dir, None (a
    DynamicUser): running pipelines as root is never the default."""
    try:
        uid = Path(base_dir).stat().st_uid
        return pwd.getpwuid(uid).pw_name if uid != 0 else None
    except (OSError, KeyError):
        return None


def _value(text: str) -> str:
    """A unit-file value: '%' would start a specifier."""
    return text.replace("%", "%%")


def _exec_arg(arg: str) -> str:
    """One ExecStart= word: specifiers and $VARIABLES escaped, quoted when needed."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg == ";" or re.search(r"[\s\"'\\]", arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg
