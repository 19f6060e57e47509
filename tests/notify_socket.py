"""A real NOTIFY_SOCKET for tests: plays systemd's side of the sd_notify protocol.

    with NotifySocket() as ns:
        proc = subprocess.Popen([...], env={**os.environ, **ns.env, "WATCHDOG_USEC": "200000"})
        ready = ns.wait_for(lambda m: m.get("READY") == "1", timeout=10)
        reloaded = ns.wait_for(lambda m: "READY" in m, after=ns.index_of(reloading) + 1)
        await ns.async_wait_for(lambda m: "STOPPING" in m, timeout=10)

Every datagram received is kept, in order, in `messages` as a `Message` (its fields, its
monotonic arrival time `at`, its position `index`), so tests can check order and rates.
"""

from __future__ import annotations

import asyncio
import select
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.contract import bound


@dataclass(frozen=True)
class Message:
    fields: dict[str, str]
    at: float  # time.monotonic() when it arrived
    index: int
    raw: bytes = field(repr=False)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self.fields


Predicate = Callable[[Message], bool]


class NotifySocket:
    """An AF_UNIX datagram socket bound where NOTIFY_SOCKET points. Unix socket paths must
    be shorter than 108 bytes and pytest's tmp_path can be longer, so by default it binds
    in a fresh short directory under /tmp (removed on close). `abstract=True` binds in the
    abstract namespace instead (NOTIFY_SOCKET=@name)."""

    def __init__(self, directory: str | Path | None = None, *, abstract: bool = False):
        self.messages: list[Message] = []
        self._own_dir: str | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            if abstract:
                name = f"flowerd-test-{uuid.uuid4().hex}"
                self.sock.bind("\0" + name)
                self.address = "@" + name
            else:
                if directory is None:
                    directory = self._own_dir = tempfile.mkdtemp(prefix="fdn-", dir="/tmp")
                path = str(Path(directory) / "notify.sock")
                self.sock.bind(path)
                self.address = path
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    @property
    def env(self) -> dict[str, str]:
        """The environment for the process under test (merge it into os.environ)."""
        return {"NOTIFY_SOCKET": self.address}

    # -- reading -----------------------------------------------------------------------
    def drain(self) -> list[Message]:
        """Read every datagram waiting now; return the new messages."""
        new = []
        while True:
            try:
                raw = self.sock.recv(65536)
            except BlockingIOError:
                return new
            new.append(self._record(raw))

    def wait_for(self, predicate: Predicate, timeout: float = 5.0, *, after: int = 0) -> Message:
        """The first message (at index >= `after`) matching `predicate`, waiting up to
        `timeout` seconds for it (blocking); TimeoutError lists what did arrive."""
        timeout = bound(timeout)
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            found = self._find(predicate, after)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(self._timeout_message(timeout, after))
            select.select([self.sock], [], [], remaining)

    async def async_wait_for(
        self, predicate: Predicate, timeout: float = 5.0, *, after: int = 0
    ) -> Message:
        """Like wait_for, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        timeout = bound(timeout)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self.drain()
                    found = self._find(predicate, after)
                    if found is not None:
                        return found
                    self._record(await loop.sock_recv(self.sock, 65536))
        except TimeoutError:
            raise TimeoutError(self._timeout_message(timeout, after)) from None

    def with_key(self, key: str, value: str | None = None) -> list[Message]:
        """Messages received so far that carry `key` (with `value`, if given)."""
        self.drain()
        return [m for m in self.messages if key in m and (value is None or m[key] == value)]

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        self.sock.close()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Message]:
        self.drain()
        return iter(list(self.messages))

    # -- internals ---------------------------------------------------------------------
    def _record(self, raw: bytes) -> Message:
        fields = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
        message = Message(fields=fields, at=time.monotonic(), index=len(self.messages), raw=raw)
        self.messages.append(message)
        return message

    def _find(self, predicate: Predicate, after: int) -> Message | None:
        return next((m for m in self.messages[after:] if predicate(m)), None)

    def _timeout_message(self, timeout: float, after: int) -> str:
        seen = [m.fields for m in self.messages[after:]]
        return f"no matching notification within {timeout}s; received: {seen}"
