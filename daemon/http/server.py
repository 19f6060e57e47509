"""uvicorn in the daemon's own event loop.

The daemon owns the process: its signals (SIGTERM drains, SIGHUP reloads) and its
logging. So uvicorn gets a socket we bound (a busy port is our message, not uvicorn's
`sys.exit`), `log_config=None`, no lifespan, and a Server whose signal capture is a
no-op; it stops when the daemon's AsyncExitStack unwinds, after the drain.

A slow or hostile client costs a connection, never a slot: handlers do no blocking work
(history reads run in a thread, the runs list in bounded pages: listing.py), a request
must arrive within `http_read_timeout_s` and open connections are bounded without ever
locking out a new client (protocol.py), and shutdown waits at most SHUTDOWN_S for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette

from daemon.http.address import base_url, is_loopback, parse_address
from daemon.http.protocol import protocol

if TYPE_CHECKING:
    from daemon.http.served import Served

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # beyond it the oldest idle or slow one is closed (protocol.py)
SHUTDOWN_S = 2.0
STOP_WAIT_S = 5.0
TICK_S = 1.0


class _Server(uvicorn.Server):
    """uvicorn.Server without its signal handlers: the daemon's own stay in place."""

    @contextlib.contextmanager
    def capture_signals(self):  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    async def main_loop(self) -> None:
        """uvicorn wakes ten times a second to refresh its Date header and look at
        should_exit; once a second, and at once on `stop()`, is plenty for an idle daemon."""
        self._wake = asyncio.Event()
        while not await self.on_tick(0):  # counter 0: the Date header on every tick
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()

    def stop(self) -> None:
        self.should_exit = True
        wake = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()


class HttpServer:
    """The bound address and the task serving it."""

    def __init__(self, server: _Server, sock: socket.socket, url: str):
        self._server = server
        self._sock = sock
        self.url = url
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="flowerd:http")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        self._server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        finally:
            self._sock.close()

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the HTTP server stopped: %r", task.exception())


async def start(daemon: Served, stack: AsyncExitStack) -> HttpServer | None:
    """Listen on the daemon's `http` setting; None when it is `off` or cannot listen (the
    daemon fires its slots either way; the reason is logged)."""
    settings = daemon.settings
    address = parse_address(settings.http)
    if address is None:
        return None
    host, port = address
    try:
        sock = _bind(host, port)
    except OSError as exc:
        daemon.http_health = f"could not listen on {settings.http}: {_reason(exc)}"
        log.error(
            "cannot listen on %s (setting http): %s; the daemon runs on without its HTTP "
            "server (metrics, API and page)",
            settings.http,
            exc.strerror or exc,
        )
        return None
    config = uvicorn.Config(
        build_app(daemon),
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        server_header=False,
        proxy_headers=False,
        # not uvicorn's limit_concurrency: it answers 503 to /healthz while slow clients
        # hold the connections it counts; the protocol bounds them instead
        http=protocol(settings.http_read_timeout_s, MAX_CONNECTIONS),
        timeout_graceful_shutdown=SHUTDOWN_S,
    )
    _quiet_uvicorn()
    url = base_url(host, sock.getsockname()[1])
    server = HttpServer(_Server(config), sock, url)
    stack.push_async_callback(server.stop)
    log.info("HTTP on %s (metrics: %s/metrics)", url, url)
    if not is_loopback(host) and not (settings.http_token or settings.http_tokens):
        log.warning(
            "HTTP listens on %s, beyond this machine, and no http_token is set: anyone who "
            "can reach it reads the history (changes stay refused without a token)",
            url,
        )
    return server


def _reason(exc: OSError) -> str:
    """`address in use`, `permission denied`: what `status` and its health say."""
    if exc.errno == errno.EADDRINUSE:
        return "address in use (another process listens there; change the http setting)"
    return (exc.strerror or str(exc)).lower()


def build_app(daemon: Served) -> Starlette:
    """The Starlette app: the API and metrics routes, then the page's; GETs behind the
    read check when `http_read_auth` is on (webhooks answer for themselves: signed). No CORS."""
    from starlette.middleware import Middleware

    from daemon.http import hooks, json_api, page
    from daemon.http.auth import ReadAuth, Tokens
    from daemon.http.listing import Listing

    listing = Listing(daemon.history)
    tokens = Tokens.from_settings(daemon.settings)
    routes = json_api.routes(daemon, listing, tokens) + hooks.routes(daemon)
    return Starlette(
        routes=routes + page.routes(daemon, listing),
        middleware=[Middleware(ReadAuth, tokens=tokens)],
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = infos[0] if infos else (family, 0, 0, "", (host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _quiet_uvicorn() -> None:
    """uvicorn's start/stop chatter is DEBUG to us; its errors still reach our log."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
