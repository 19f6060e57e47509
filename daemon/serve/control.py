"""The control channel: a Unix socket next to the database (mode 0600) that `flowerd
status | trigger | pause | resume | reload` talk to. One JSON request line, one JSON
response line. Written on asyncio's stream server; the protocol is too small for a
framework, and only local, same-user processes may connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from daemon.errors import DaemonNotRunning, FlowerdError

log = logging.getLogger("daemon.control")  # its name before the move

Handler = Callable[[dict], Awaitable[dict]]
Before = Callable[[dict, int], Awaitable[None]]  # (request, the peer's uid): the audit log
MAX_REQUEST_BYTES = 64 * 1024
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin


@contextlib.contextmanager
def _short_path(path: Path):
    """A Unix socket path must fit sun_path. A long one is reached through the directory's
    file descriptor (/proc/self/fd/N/name), which any length of directory path allows."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler], before: Before | None = None):
        self.path = path
        self._handlers = handlers
        self._before = before  # awaited before each handler; its error is the answer
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a dead daemon (the lock proves it dead)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: only this user may talk to the daemon
        try:
            with _short_path(self.path) as address:
                sock.bind(address)
        finally:
            os.umask(old_umask)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            response = await self._answer(line, peer_uid(writer))
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes, uid: int) -> dict:
        try:
            request = json.loads(line[:MAX_REQUEST_BYTES])
            handler = self._handlers[request["cmd"]]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": f"bad request; commands: {', '.join(self._handlers)}"}
        try:
            if self._before is not None:
                await self._before(request, uid)
            return {"ok": True, **(await handler(request))}
        except FlowerdError as exc:
            return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        except Exception as exc:
            log.exception("control command %r failed", request.get("cmd"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def peer_uid(writer: asyncio.StreamWriter) -> int:
    """The uid of the process at the other end (SO_PEERCRED: the kernel's word, as it
    was when that process connected)."""
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def user_name(uid: int) -> str:
    """The Unix user's name (pwd), or `uid N` for a uid without one."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def request(path: Path, cmd: str, *, timeout_s: float = 30.0, **args) -> dict:
    """Send one command to the running daemon (blocking; the CLI's side)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        with _short_path(path) as address:
            sock.connect(address)
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonNotRunning(
            f"no flowerd daemon is listening on {path}; start one with `flowerd serve`"
        ) from None
    except PermissionError:
        raise FlowerdError(_not_yours(path)) from None
    finally:
        sock.close()
    if not data:
        raise DaemonNotRunning(f"the daemon at {path} closed the connection without answering")
    return json.loads(data)


def _not_yours(path: Path) -> str:
    """Whose daemon it is, and what to do, when this user may not use its socket."""
    name = user_name
    try:
        owner = name(path.stat().st_uid)
    except OSError:  # not even the path is ours to look at
        owner = name(path.parent.stat().st_uid) if path.parent.exists() else "another user"
    return (
        f"the daemon's control socket {path} belongs to {owner}, and this user "
        f"({name(os.getuid())}) may not use it: run this command as {owner} "
        f"(e.g. `sudo -u {owner} flowerd ...`) or as root"
    )
