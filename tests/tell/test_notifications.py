"""Notifications through Apprise, to a real HTTP receiver (`json://`) and a real SMTP
server (`mailto://`, aiosmtpd) on 127.0.0.1, from real runs and a real daemon."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from daemon.errors import ScheduleError
from daemon.history import History
from daemon.pipeline import Pipelines, RunConfig
from daemon.runner.runner import Runner
from daemon.schedule import Schedule, load_schedules
from daemon.settings import sqlite_url
from daemon.tell.delivery import DeliveryCounts, Sender, private, scrub
from daemon.tell.notifications import Notifications
from tests.serve import Served, cli, cli_here, make_project, rows_where, wait_for

pytestmark = pytest.mark.timeout(300)

FLAKY = """
from pathlib import Path

def flaky(flag: str) -> str:
    if Path(flag).exists():
        raise ValueError(f"flag {flag} is up")
    return "fine"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Hook:
    """A real HTTP receiver in a thread: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                size = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: every message's text."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=port)
        self.controller.start()
        self.url = f"mailto://127.0.0.1:{port}?from=flowerd@example.com&to=ops@example.com"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def hook():
    receiver = Hook()
    yield receiver
    receiver.close()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.close()


def _types(received: list[dict]) -> list[str]:
    return [message["type"] for message in received]


# --------------------------------------------------------------------------- validation


def test_notify_on_names_an_unknown_state(tmp_path: Path):
    (tmp_path / "s.toml").write_text(
        '[a]\npipeline = "hello_world"\ncron = "* * * * *"\nnotify_on = ["faild"]\n'
        'notify = ["slack"]\n'
    )
    with pytest.raises(ScheduleError) as caught:
        load_schedules(tmp_path)
    text = str(caught.value)
    assert "[a] field 'notify_on'" in text and "did you mean 'failed'" in text
    assert "[a] field 'notify'" in text


def test_schedule_notify_defaults(tmp_path: Path):
    (tmp_path / "s.toml").write_text('[a]\npipeline = "p"\ncron = "* * * * *"\n')
    (schedule,) = load_schedules(tmp_path)
    assert schedule.notify is None
    assert schedule.notify_on == ("failed", "timed_out", "crashed", "missed", "recovered", "paused")


def test_validate_names_a_url_apprise_cannot_use_without_its_secret(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [a]
        pipeline = "hello_world"
        cron = "* * * * *"
        notify = ["nosuchservice://user:hunter22@example.com"]
        """,
    )
    done = cli_here(base, "validate")
    assert done.returncode == 1
    assert "[a] field 'notify': [0] nosuchservice://…" in done.stderr
    assert "hunter22" not in done.stderr


def test_private_and_scrub_hide_passwords_and_tokens():
    url = "json://admin:hunter22@127.0.0.1:9/hook"
    assert "hunter22" not in private(url) and "127.0.0.1" in private(url)
    assert scrub("failed to send to admin:hunter22@127.0.0.1", url).count("hunter22") == 0


# --------------------------------------------------------------------------- delivery


def test_notify_test_reaches_http_and_smtp_and_says_which_failed(tmp_path, hook, mailbox):
    base = make_project(
        tmp_path,
        f"""
        [a]
        pipeline = "hello_world"
        cron = "* * * * *"
        notify = ["{hook.url}", "{mailbox.url}"]
        """,
    )
    done = cli(base, "notify", "test", "a")
    assert done.returncode == 0, done.stderr
    assert len(hook.received) == 1 and "test notification" in hook.received[0]["title"]
    assert len(mailbox.messages) == 1 and "test notification" in mailbox.messages[0]
    dead = f"json://user:hunter22@127.0.0.1:{free_port()}/x"
    failed = cli(base, "notify", "test", env={"FLOWERD_NOTIFY": json.dumps([dead])})
    assert failed.returncode == 1
    assert "failed" in failed.stderr and "hunter22" not in failed.stderr + failed.stdout
    assert cli(base, "notify", "test", "nope").returncode == 1


def _schedule(base: Path, targets: list[str], **more) -> Schedule:
    return Schedule(
        id="flaky", file=base / "s.toml", pipeline="flaky", at=datetime(2099, 1, 1, tzinfo=UTC),
        final_vars=("flaky",), inputs={"flag": str(base / "flag")}, notify=tuple(targets), **more,
    )  # fmt: skip


async def test_failure_then_recovered_and_a_dead_target_never_delays_a_run(
    tmp_path: Path, hook: Hook, caplog
):
    caplog.set_level(logging.INFO)
    base = make_project(tmp_path, flaky=FLAKY)
    dead = f"json://user:hunter22@127.0.0.1:{free_port()}/x"
    schedule = _schedule(base, [hook.url, dead])
    history = await History.open(sqlite_url(base / "history.db"))
    runner = Runner(pm=Pipelines(base), history=history, max_concurrent_runs=4, threads=1)
    counts = DeliveryCounts()
    notifier = Notifications(history, sender=Sender(counts=counts, backoff_s=2.0)).attach(
        runner.events
    )
    cfg = RunConfig(**schedule.run_config_kwargs())
    try:
        (base / "flag").write_text("up")
        started = time.perf_counter()
        failed = await runner.run_manual("flaky", cfg, schedule=schedule)
        (base / "flag").unlink()
        ok = await runner.run_manual("flaky", cfg, schedule=schedule)
        both_s = time.perf_counter() - started
        again = await runner.run_manual("flaky", cfg, schedule=schedule)
        await asyncio.wait_for(_until(lambda: counts.by_result["error"] == 2), 30)
    finally:
        await notifier.close()
        runner.close()
        await history.close()
    # the dead target's retries (2 s, 4 s) held up no run: held up, two runs would take
    # 6 s or more; the bound leaves room for a loaded 2-core machine
    assert both_s < 4.0
    assert failed.error is not None and ok.error is None and again.error is None
    assert _types(hook.received) == ["failure", "success"]  # nothing for `again`
    failure, recovered = hook.received
    assert f"run {failed.run_id}" in failure["title"] and "failed" in failure["title"]
    assert "ValueError" in failure["message"] and "flag" in failure["message"]
    assert f"flowerd runs show {failed.run_id}" in failure["message"]
    assert "recovered" in recovered["title"] and f"run {ok.run_id}" in recovered["title"]
    assert counts.by_result == {"sent": 2, "error": 2, "dropped": 0}
    told = [r.getMessage() for r in caplog.records if r.name == "daemon.notify"]
    failures = [line for line in told if "failed after 3 attempt(s)" in line]
    assert len(failures) == 2 and "user:****@127.0.0.1" in failures[0]
    assert not any("hunter22" in r.getMessage() for r in caplog.records)


async def _until(predicate, interval_s: float = 0.05) -> None:
    while not predicate():
        await asyncio.sleep(interval_s)


def test_a_daemon_tells_a_failure_by_mail_and_recovery_across_a_restart(tmp_path, mailbox):
    dead = f"json://user:hunter22@127.0.0.1:{free_port()}/x"
    base = make_project(
        tmp_path,
        f"""
        [flaky]
        pipeline = "flaky"
        at = "2099-01-01T00:00:00+00:00"
        inputs = {{ flag = "{tmp_path / "flag"}" }}
        notify = ["{mailbox.url}", "{dead}"]
        notify_on = ["failed", "recovered"]
        """,
        flaky=FLAKY,
    )
    (tmp_path / "flag").write_text("up")
    with Served(base) as served:
        served.wait_ready()
        served.ask("trigger", schedule="flaky")
        wait_for(lambda: mailbox.messages, what="the failure's mail")
        wait_for(lambda: "failed after" in served.log, timeout_s=40, what="the dead target")
        assert served.stop() == 0
    # Apprise's own lines stay out of the daemon's log; ours show the URL masked
    assert "hunter22" not in served.log and "user:****@127.0.0.1" in served.log
    (failed,) = rows_where(base, status="failed")
    assert f"run {failed.id}" in mailbox.messages[0] and "ValueError" in mailbox.messages[0]
    (tmp_path / "flag").unlink()
    with Served(base) as served:  # `recovered` is read from the history: a restart between
        served.wait_ready()
        served.ask("trigger", schedule="flaky")
        wait_for(lambda: len(mailbox.messages) == 2, what="the recovery's mail")
        assert served.stop() == 0
    assert "recovered" in mailbox.messages[1]


def test_an_outage_is_told_once_per_schedule(tmp_path: Path, hook: Hook):
    base = make_project(
        tmp_path,
        f"""
        [often]
        pipeline = "hello_world"
        interval = "1m"
        catchup = "none"
        notify = ["{hook.url}"]
        """,
    )
    db = sqlite_url(base / ".flowerd" / "history.db")

    async def before_the_outage() -> None:
        async with History.open(db) as history:
            await history.record_slot(
                schedule="often", pipeline="hello_world", status="success",
                scheduled_at=datetime.now(UTC) - timedelta(minutes=30), async_driver=True,
            )  # fmt: skip

    asyncio.run(before_the_outage())
    with Served(base, env={"PYTHONUNBUFFERED": "1"}) as served:
        served.wait_ready()
        wait_for(lambda: hook.received, what="the outage's message")
        time.sleep(1)  # a burst is told once: nothing else comes
        assert served.stop() == 0
    assert len(rows_where(base, status="missed")) >= 28
    (message,) = hook.received
    assert "often" in message["title"] and "missed" in message["title"]
    assert message["type"] == "failure"


async def test_a_history_outage_and_its_end_are_told_once_each(tmp_path: Path, hook: Hook):
    history = await History.open(sqlite_url(tmp_path / "history.db"))
    counts = DeliveryCounts()
    notifier = Notifications(history, default_targets=[hook.url], sender=Sender(counts=counts))
    try:
        notifier.history_health("ok")
        for _ in range(3):
            notifier.history_health("unavailable since 2026-12-01T02:30:00+00:00: locked")
        notifier.history_health("ok")
        await asyncio.wait_for(_until(lambda: counts.by_result["sent"] == 2), 20)
    finally:
        await notifier.close()
        await history.close()
    assert sorted(m["title"].split(": ", 1)[1] for m in hook.received) == [
        "history unavailable",
        "history writable again",
    ]
    assert "locked" in next(m for m in hook.received if m["type"] == "failure")["message"]


async def test_state_changes_are_told_as_notify_on_says(tmp_path: Path, hook: Hook):
    history = await History.open(sqlite_url(tmp_path / "history.db"))
    counts = DeliveryCounts()
    notifier = Notifications(history, default_targets=[hook.url], sender=Sender(counts=counts))
    default = _schedule(tmp_path, [hook.url])
    only_late = _schedule(tmp_path, [hook.url], notify_on=("late",))
    try:
        notifier.notify_state(default, "paused", "3 runs in a row failed")
        notifier.notify_state(default, "late", "not finished 45m after its slot")  # not asked
        notifier.notify_state(only_late, "late", "not finished 45m after its slot")
        await asyncio.wait_for(_until(lambda: counts.by_result["sent"] == 2), 20)
    finally:
        await notifier.close()
        await history.close()
    assert sorted(m["title"] for m in hook.received) == [
        "flowerd: flaky late",
        "flowerd: flaky paused",
    ]
    assert {m["type"] for m in hook.received} == {"failure"}


# --------------------------------------------------------------------------- short, and the user's


DEEP = """
import logging

log = logging.getLogger(__name__)

def _down(n: int) -> int:
    if n == 0:
        raise ValueError("the source table has no rows for " + "x" * 400)
    return _down(n - 1)

def total(depth: int) -> int:
    log.info("counting %d levels", depth)
    return _down(depth)
"""


def test_a_failure_is_told_short_with_the_users_traceback_in_every_isolation(tmp_path, hook):
    """A failing pipeline with a long traceback, retried, in the thread pool (sync driver),
    on the loop (async driver) and in a worker process: each row's traceback holds none
    of flowerd's frames and ends at the raising line; each run's log holds it once; each
    notification is under 1,000 characters, its log excerpt's tail kept, its slot the
    run's start, its link under public_url; the stop says nothing of stuck threads."""
    common = 'pipeline = "deep"\nat = "2099-01-01T00:00:00+00:00"\ninputs = { depth = 12 }\n'
    common += "max_retries = 2\nretry_delay = 0.1\n"
    base = make_project(
        tmp_path,
        f"[thread_sync]\n{common}async_driver = false\n"
        f"[thread_async]\n{common}"
        f'[process]\n{common}async_driver = false\nisolation = "process"\n',
        deep=DEEP,
    )
    env = {"FLOWERD_NOTIFY": json.dumps([hook.url]), "FLOWERD_HTTP": "127.0.0.1:0",
           "FLOWERD_PUBLIC_URL": "https://flowerd.example.com/"}  # fmt: skip
    names = ("thread_sync", "thread_async", "process")
    with Served(base, env=env) as served:
        served.wait_ready()
        for name in names:
            served.ask("trigger", schedule=name)
        wait_for(lambda: len(hook.received) == 3, timeout_s=60, what="three notifications")
        assert served.stop() == 0
    assert "did not return" not in served.log
    ours = str(Path(__file__).resolve().parent.parent.parent / "daemon") + "/"
    for name in names:
        (row,) = rows_where(base, schedule=name)
        frames = [line for line in row.error.traceback.splitlines() if "File " in line]
        assert frames and not [f for f in frames if ours in f], (name, row.error.traceback)
        assert "deep.py" in frames[-1] and "in _down" in frames[-1]
        logged = cli_here(base, "runs", "logs", str(row.id)).stdout
        assert logged.count("Traceback (most recent call last)") == 1, (name, logged)
        if name != "thread_async":  # the sync driver logs which node raised, per attempt
            assert logged.count("encountered an error") == 3
    for message in hook.received:
        body = message["body"] if "body" in message else message["message"]
        assert len(body) < 1000, body
        assert "slot: -" not in body and "slot: 20" in body
        assert "ValueError: the source table" in body.split("log, last", 1)[1]  # the tail
        run_id = int(message["title"].split("(run ", 1)[1].split(",")[0])
        assert f"web: https://flowerd.example.com/runs/{run_id}" in body


def test_without_public_url_a_message_has_no_link():
    from daemon.history import RunError
    from daemon.runner.events import RunEvent
    from daemon.tell.notifications import compose, page_url_for

    started = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    event = RunEvent(
        kind="finished", run_id=51, schedule=None, pipeline="p", trigger="manual",
        status="failed", started_at=started, finished_at=started + timedelta(seconds=2),
        error=RunError(type="ValueError", message="x" * 5000),
    )  # fmt: skip
    lines = [{"level": "INFO", "logger": "p", "message": f"line {i} {'y' * 300}"} for i in range(9)]
    message = compose(event, "failed", targets=["json://x"], lines=lines, page_url=None)
    assert page_url_for(None)(51) is None
    assert "web:" not in message.body and "127.0.0.1" not in message.body
    assert len(message.body) < 1000 and "line 8" in message.body and "line 0" not in message.body
    assert f"slot: {started.isoformat()}" in message.body
