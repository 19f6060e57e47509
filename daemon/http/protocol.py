"""uvicorn's h11 protocol with what it lacks for a daemon that must stay reachable.

uvicorn (0.55) offers `timeout_keep_alive` (idle time between requests, reset by every
byte received) and `limit_concurrency` (past it, every new request -- /healthz too --
answers 503 while the slow connections that fill it stay open). It has no read timeout:
a client sending one header byte a second holds its connection for ever (uvicorn issue
#157; other projects wrap the protocol the same way). So, written here, per connection:

- a read deadline: a request's line and headers must arrive within `read_timeout_s` of
  the connection opening (or of its first byte, on a kept-alive connection), and its
  body within `read_timeout_s` of the headers; else the connection is closed;
- a bound on open connections that never locks out a new client: at the bound, the
  oldest connection that is not being answered (idle, or still sending its request) is
  closed to make room; only when every one is being answered is the new one refused;
- strict parsing h11 leaves to us: a request with both Content-Length and
  Transfer-Encoding (RFC 9112 6.3: a smuggling vector behind a proxy) and any HTTP
  version but 1.0 and 1.1 are refused with 400, as uvicorn refuses what h11 rejects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

VERSIONS = (b"1.0", b"1.1")
MAX_HEAD_BYTES = 16 * 1024  # h11's default bound on a request's line and headers
READING = (h11.IDLE, h11.SEND_BODY)  # their states while a request is still arriving


class StrictConnection(h11.Connection):
    """h11's server connection, refusing the requests RFC 9112 lets a server refuse."""

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            refuse_smuggling(event)
        return event


def refuse_smuggling(request: h11.Request) -> None:
    if request.http_version not in VERSIONS:
        raise h11.RemoteProtocolError(f"HTTP/{request.http_version.decode()} is not supported")
    names = {name for name, _ in request.headers}  # h11 gives them lower-cased
    if b"content-length" in names and b"transfer-encoding" in names:
        raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")


class BoundedProtocol(H11Protocol):
    """One connection. `read_timeout_s` and `max_connections` are set by `protocol()`."""

    read_timeout_s: float = 10.0
    max_connections: int = 64

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size or MAX_HEAD_BYTES
        self.conn = StrictConnection(h11.SERVER, size)
        self.opened_at = time.monotonic()
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        room = make_room(self.connections, self.max_connections)
        super().connection_made(transport)
        if not room:
            log.warning(
                "HTTP: all %d connections are being answered: one refused",
                len(self.connections) - 1,
            )
            transport.close()
            return
        self._arm()  # the first request's line and headers

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # a new request on a kept-alive connection
        before = self.conn.their_state
        super().data_received(data)
        self._follow(before)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state in READING and self.conn.trailing_data[0]:
            self._arm()  # a pipelined request already under way

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def answering(self) -> bool:
        """A whole request of this connection is in the app, its answer not yet sent
        (not idle, and not still sending its request)."""
        cycle = self.cycle
        in_app = cycle is not None and not cycle.response_complete
        return in_app and self.conn.their_state not in READING

    def _follow(self, before: Any) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY and before is not h11.SEND_BODY:
            self._arm()  # headers in: now the body has read_timeout_s
        elif state not in READING:
            self._disarm()  # the whole request is in (or the connection is done)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state in READING and not self.transport.is_closing():
            log.info(
                "HTTP: closed a connection from %s: its request did not arrive within %g s "
                "(setting http_read_timeout_s)",
                _peer(self.client),
                self.read_timeout_s,
            )
            self.transport.close()


def make_room(connections: set, max_connections: int) -> bool:
    """False when the bound is reached and every connection is being answered; else
    True, after closing the oldest connection that is idle or still sending."""
    if len(connections) < max_connections:
        return True
    waiting = [c for c in connections if isinstance(c, BoundedProtocol) and not c.answering()]
    if not waiting:
        return False
    oldest = min(waiting, key=lambda c: c.opened_at)
    log.info(
        "HTTP: %d connections open: closed the oldest idle one, from %s",
        len(connections),
        _peer(oldest.client),
    )
    oldest.transport.close()
    connections.discard(oldest)  # counted out now; connection_lost follows on the loop
    return True


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def protocol(read_timeout_s: float, max_connections: int) -> type[BoundedProtocol]:
    """The protocol class for uvicorn.Config(http=...), with the daemon's settings."""
    return type(
        "BoundedProtocol",
        (BoundedProtocol,),
        {"read_timeout_s": read_timeout_s, "max_connections": max_connections},
    )
