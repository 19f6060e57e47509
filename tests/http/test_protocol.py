"""The HTTP connection rules (daemon/http/protocol.py) with raw sockets against a real
`flowerd serve`: a request must arrive within `http_read_timeout_s`, open connections
are bounded without locking anyone out, smuggling-shaped requests are refused, and a
client's bad input or hang-up is a 400 or one log line, never a 500 or a traceback."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.contract import bound
from tests.http.test_server import TOKEN, fetch
from tests.serve import Served, make_project, wait_for

pytestmark = pytest.mark.timeout(180)

READ_TIMEOUT_S = 2.0
SLOW = 80  # more than the server's MAX_CONNECTIONS (64)


def serve(tmp_path: Path) -> Served:
    base = make_project(tmp_path, '[daily]\npipeline = "hello_world"\ninterval = "1d"\n')
    env = {
        "FLOWERD_HTTP": "127.0.0.1:0",
        "FLOWERD_HTTP_TOKEN": TOKEN,
        "FLOWERD_HTTP_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
    }
    return Served(base, env=env)


def stops_clean(served: Served) -> None:
    """No traceback, no ERROR line in the daemon's log; it stops with 0."""
    assert "Traceback" not in served.log and " ERROR " not in served.log
    assert served.stop() == 0


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=bound(30))


def exchange(url: str, raw: bytes) -> bytes:
    """Send `raw`, read the answer until the server closes or 30 s pass."""
    with connect(url) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed this connection (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def test_slow_and_idle_clients_never_lock_out_healthz(tmp_path: Path):
    with serve(tmp_path) as served:
        url = served.wait_ready()["http"]
        idle = connect(url)
        slow = [connect(url) for _ in range(SLOW)]
        opened = time.monotonic()
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        probes, open_ones = [], list(slow)
        while open_ones and time.monotonic() - opened < 60:
            for sock in list(open_ones):  # a byte each, as a slowloris client does
                try:
                    sock.sendall(b"a")
                except OSError:
                    open_ones.remove(sock)
            probes.append(fetch(f"{url}/healthz")[0])
            time.sleep(0.5)
        assert set(probes) == {200}, probes
        assert not open_ones, "slow connections the server never closed"
        # the deadline closed them, not the bound alone: well before the 60 s
        assert time.monotonic() - opened < 30 * READ_TIMEOUT_S
        assert wait_for(lambda: closed_by_server(idle), timeout_s=30, what="idle closed")
        assert "did not arrive within 2 s" in served.log
        for sock in [idle, *slow]:
            sock.close()
        stops_clean(served)


def test_a_slow_body_is_cut_and_a_hang_up_is_one_line(tmp_path: Path):
    with serve(tmp_path) as served:
        url = served.wait_ready()["http"]
        head = (
            "POST /api/schedules/daily/trigger HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n"
        ).encode()
        with connect(url) as stalled:
            stalled.sendall(head + b'{"inputs": ')
            started = time.monotonic()
            assert wait_for(lambda: closed_by_server(stalled), timeout_s=30, what="body cut")
            assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9
        with connect(url) as gone:
            gone.sendall(head + b'{"inputs": ')  # and hangs up
        hung_up = "the client hung up (or was cut"
        wait_for(lambda: served.log.count(hung_up) >= 2, what="the log lines")
        assert fetch(f"{url}/healthz")[0] == 200
        stops_clean(served)


def test_refused_requests_answer_400_never_500(tmp_path: Path):
    with serve(tmp_path) as served:
        url = served.wait_ready()["http"]
        smuggled = (
            b"POST /api/schedules/daily/trigger HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        assert exchange(url, smuggled).startswith(b"HTTP/1.1 400 ")
        assert exchange(url, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 400 "
        )
        ok = exchange(url, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"ok\n")
        deep = b'{"inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
        trigger = f"{url}/api/schedules/daily/trigger"
        status, _, body = fetch(trigger, method="POST", token=TOKEN, body=deep)
        assert status == 400 and "nested too deeply" in json.loads(body)["error"]
        stops_clean(served)
