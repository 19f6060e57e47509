"""`flowerd serve` under a real NOTIFY_SOCKET (issue 5): what systemd sees of a Type=notify
daemon -- READY=1 only once it can answer, WATCHDOG=1 at half of WATCHDOG_USEC, STATUS=
kept current, RELOADING=1 / READY=1 around SIGHUP, STOPPING=1 on SIGTERM, exit 0.

The notify socket is read by a thread all along, as systemd reads it: a Unix datagram queue
holds only net.unix.max_dgram_qlen (often 10) messages, and a sender facing a full one
blocks (the daemon for up to SEND_TIMEOUT_S per message), which would skew every rate and
order measured here.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.settings import sqlite_path
from tests.contract import bound
from tests.notify_socket import Message, NotifySocket
from tests.serve import Served, make_project, rows_where, wait_for

pytestmark = pytest.mark.timeout(120)

KEYS = {
    "READY",
    "STATUS",
    "RELOADING",
    "MONOTONIC_USEC",
    "STOPPING",
    "EXTEND_TIMEOUT_USEC",
    "WATCHDOG",
}
GRACE_S = 5  # what tests/serve.Served gives the daemon

SLEEPY = """
import asyncio

async def slept(seconds: float = 0.6) -> float:
    await asyncio.sleep(seconds)
    return seconds
"""

ONE_SLEEPY_SCHEDULE = """
[slow]
pipeline = "sleepy"
interval = "1h"
"""


class Listener:
    """A NotifySocket drained by a thread; waits are bounded and read what it collected.
    `freeze_on(predicate, pid)` SIGSTOPs `pid` the moment a matching message arrives, so a
    test can look at the daemon's state exactly as it was when it sent that message."""

    def __init__(self, ns: NotifySocket):
        self.ns = ns
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._freeze: tuple[Callable[[Message], bool], int] | None = None
        self._thread = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            select.select([self.ns.sock], [], [], 0.05)
            with self._cond:
                new = self.ns.drain()
                if self._freeze and any(self._freeze[0](m) for m in new):
                    os.kill(self._freeze[1], signal.SIGSTOP)
                    self._freeze = None
                if new:
                    self._cond.notify_all()

    def freeze_on(self, predicate: Callable[[Message], bool], pid: int) -> None:
        with self._cond:
            assert not self._find(predicate, 0), "arrived before the test could watch for it"
            self._freeze = (predicate, pid)

    def wait_for(self, predicate, *, after: int = 0, timeout_s: float = 5) -> Message:
        timeout_s = bound(timeout_s)
        with self._cond:
            found = self._cond.wait_for(lambda: self._find(predicate, after), timeout_s)
            if not found:
                seen = [m.fields for m in self.ns.messages[after:]]
                raise AssertionError(f"no such notification in {timeout_s} s; received: {seen}")
            return found

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self.ns.messages)

    def _find(self, predicate, after: int) -> Message | None:
        return next((m for m in self.ns.messages[after:] if predicate(m)), None)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=bound(2))


@pytest.fixture
def listener() -> Iterator[Listener]:
    with NotifySocket() as ns:
        listener = Listener(ns)
        try:
            yield listener
        finally:
            listener.close()
        assert_well_formed(listener.messages)


def assert_well_formed(messages: list[Message]) -> None:
    """Every datagram is KEY=VALUE lines of known keys: a multi-line STATUS would leak here."""
    for m in messages:
        lines = m.raw.decode().splitlines()
        assert all("=" in line and line.split("=", 1)[0] in KEYS for line in lines), m.raw
        assert len(lines) == len(m.fields), m.raw


def serve(base: Path, listener: Listener, **env: str) -> Served:
    return Served(base, env={**listener.ns.env, **env})


def is_ready(m: Message) -> bool:
    return m.get("READY") == "1"


def test_ready_only_once_migrated_and_answering(tmp_path: Path, listener: Listener):
    base = make_project(tmp_path, ONE_SLEEPY_SCHEDULE, sleepy=SLEEPY)
    with serve(base, listener) as served, ThreadPoolExecutor(1) as pool:
        listener.freeze_on(is_ready, served.proc.pid)
        ready = listener.wait_for(is_ready, timeout_s=20)
        try:  # the daemon is stopped exactly where it sent READY=1
            db = sqlite_path(served.settings.db_url)
            assert db is not None and db.is_file(), "READY=1 before the database exists"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            conn.close()
            assert {"runs", "alembic_version"} <= tables
            asked = pool.submit(served.ask, "status", timeout_s=10)  # connects: it listens
            time.sleep(0.2)
            if asked.done():  # DaemonNotRunning: READY=1 came before the control socket
                raise AssertionError(f"answered while stopped: {asked.exception()!r}")
        finally:
            served.signal(signal.SIGCONT)
        status = asked.result(timeout=bound(10))
        assert served.stop() == 0
    assert status["ok"] and [s["id"] for s in status["schedules"]] == ["slow"]
    assert [m for m in listener.messages if "READY" in m] == [ready]  # no READY before this
    assert ready["STATUS"].startswith("1 schedule(s), 0 running, next fire ")
    next_fire = datetime.fromisoformat(status["schedules"][0]["next"]).astimezone(UTC)
    assert ready["STATUS"].endswith(next_fire.isoformat(timespec="seconds"))  # the setting's zone


def test_watchdog_pings_at_half_of_watchdog_usec(tmp_path: Path, listener: Listener):
    base = make_project(tmp_path, ONE_SLEEPY_SCHEDULE, sleepy=SLEEPY)
    with serve(base, listener, WATCHDOG_USEC="400000") as served:
        ready = listener.wait_for(is_ready, timeout_s=20)
        time.sleep(2.0)
        pings = [m.at for m in listener.messages if "WATCHDOG" in m and m.at >= ready.at]
        assert served.stop() == 0
    assert all(m.fields == {"WATCHDOG": "1"} for m in listener.messages if "WATCHDOG" in m)
    assert len(pings) >= 5, pings
    intervals = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert 0.1 <= statistics.median(intervals) <= 0.35, intervals
    assert max(intervals) < 0.4, intervals  # never a gap systemd would call a hang


def test_no_watchdog_pings_when_watchdog_pid_is_another_process(tmp_path, listener):
    base = make_project(tmp_path, ONE_SLEEPY_SCHEDULE, sleepy=SLEEPY)
    env = {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    with serve(base, listener, **env) as served:
        listener.wait_for(is_ready, timeout_s=20)
        time.sleep(1.0)
        assert served.stop() == 0
    assert not [m for m in listener.messages if "WATCHDOG" in m]
    assert [m for m in listener.messages if "STOPPING" in m]  # the rest still flows


def test_status_is_refreshed_when_a_run_starts_and_ends(tmp_path: Path, listener: Listener):
    base = make_project(tmp_path, ONE_SLEEPY_SCHEDULE, sleepy=SLEEPY)
    with serve(base, listener) as served:
        ready = listener.wait_for(is_ready, timeout_s=20)
        assert served.ask("trigger", schedule="slow")["ok"]
        running = listener.wait_for(
            lambda m: "1 running" in m.get("STATUS", ""), after=ready.index + 1
        )
        idle = listener.wait_for(
            lambda m: "0 running" in m.get("STATUS", ""), after=running.index + 1
        )
        row = wait_for(
            lambda: rows_where(base, schedule="slow", status="success"),
            timeout_s=5,
            what="the triggered run",
        )[0]
        assert served.stop() == 0
    assert idle.at - running.at >= 0.5  # the run took its 0.6 s between the two
    assert row.duration_s >= 0.5
    for m in (ready, running, idle):
        assert m["STATUS"].startswith("1 schedule(s), ") and " next fire " in m["STATUS"]


def test_sighup_sends_reloading_then_ready(tmp_path: Path, listener: Listener):
    base = make_project(tmp_path, ONE_SLEEPY_SCHEDULE, sleepy=SLEEPY)
    with serve(base, listener) as served:
        ready = listener.wait_for(is_ready, timeout_s=20)
        (base / "schedules" / "more.toml").write_text(
            '[fast]\npipeline = "hello_world"\ninterval = "1h"\n'
        )
        served.signal(signal.SIGHUP)
        reloading = listener.wait_for(lambda m: "RELOADING" in m, after=ready.index + 1)
        reloaded = listener.wait_for(is_ready, after=reloading.index + 1)
        assert {s["id"] for s in served.ask("status")["schedules"]} == {"slow", "fast"}
        listener.wait_for(lambda m: m.get("STATUS", "").startswith("2 schedule(s)"))

        (base / "schedules" / "bad.toml").write_text('[bad]\npipeline = "nope"\ncron = "x"\n')
        served.signal(signal.SIGHUP)
        refused = listener.wait_for(lambda m: "RELOADING" in m, after=reloaded.index + 1)
        kept = listener.wait_for(is_ready, after=refused.index + 1)
        assert {s["id"] for s in served.ask("status")["schedules"]} == {"slow", "fast"}
        assert served.stop() == 0
    for m in (reloading, refused):
        assert m.fields.keys() == {"RELOADING", "MONOTONIC_USEC"} and m["RELOADING"] == "1"
        sent_s = int(m["MONOTONIC_USEC"]) / 1e6  # CLOCK_MONOTONIC, the clock of time.monotonic
        assert 0 <= m.at - sent_s < 1.0, (m.at, sent_s)
    assert int(refused["MONOTONIC_USEC"]) > int(reloading["MONOTONIC_USEC"])
    ready_and_reloading = [m.index for m in listener.messages if "READY" in m or "RELOADING" in m]
    assert ready_and_reloading == [
        ready.index,
        reloading.index,
        reloaded.index,
        refused.index,
        kept.index,
    ]


def test_sigterm_sends_stopping_keeps_pinging_while_draining_and_exits_0(tmp_path, listener):
    base = make_project(tmp_path, ONE_SLEEPY_SCHEDULE, sleepy=SLEEPY)
    with serve(base, listener, WATCHDOG_USEC="400000") as served:
        ready = listener.wait_for(is_ready, timeout_s=20)
        assert served.ask("trigger", schedule="slow")["ok"]
        listener.wait_for(lambda m: "1 running" in m.get("STATUS", ""), after=ready.index + 1)
        signalled_at = time.monotonic()
        served.signal(signal.SIGTERM)
        stopping = listener.wait_for(lambda m: "STOPPING" in m, after=ready.index + 1)
        extend = listener.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m, after=stopping.index)
        assert served.wait(timeout_s=10) == 0
        exited_at = time.monotonic()
    assert stopping.at - signalled_at < 1.0
    assert stopping["STOPPING"] == "1" and stopping["STATUS"] == "draining 1 run(s)"
    assert int(extend["EXTEND_TIMEOUT_USEC"]) == (GRACE_S + 15) * 1_000_000
    drained_pings = [m for m in listener.messages if "WATCHDOG" in m and m.index > stopping.index]
    assert len(drained_pings) >= 1  # the run's last ~0.5 s: the watchdog still runs
    assert all(m.at <= exited_at for m in listener.messages)
    assert not [m for m in listener.messages[stopping.index :] if "READY" in m]
    assert rows_where(base, schedule="slow", status="success")  # drained, not cancelled
