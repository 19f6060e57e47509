"""`flowerd serve` end to end: real processes, real signals, real SQLite, real Hamilton."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.serve import Served, cli, make_project, rows_where, runs, wait_for

pytestmark = pytest.mark.timeout(300)

WHERE = """
import threading

def where(tag: str = "x") -> str:
    return threading.current_thread().name
"""

SLEEPY = """
import asyncio

async def slept(seconds: float = 30.0) -> float:
    await asyncio.sleep(seconds)
    return seconds
"""

SLEEPY_SYNC = """
import time

def slept_sync(seconds: float = 30.0) -> float:
    time.sleep(seconds)
    return seconds
"""

EXITS = """
import sys

async def exits(code: int = 3) -> int:
    sys.exit(code)
"""


def test_interval_schedules_in_both_driver_modes(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [hello_async]
        pipeline = "hello_world"
        interval = "1s"
        inputs = { name = "async" }

        [where_sync]
        pipeline = "where"
        interval = 1
        async_driver = false
        """,
        where=WHERE,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(rows_where(base, schedule="where_sync", status="success")) >= 2
                 and rows_where(base, schedule="hello_async", status="success"),
                 what="two successful slots of each schedule")
        assert served.stop() == 0
    sync_rows = rows_where(base, schedule="where_sync", status="success")
    assert all("flowerd-run" in r.result_summary for r in sync_rows)  # off the loop thread
    assert not any(r.async_driver for r in sync_rows)
    hello = rows_where(base, schedule="hello_async", status="success")[0]
    assert "Hello, async!" in hello.result_summary and hello.async_driver
    assert hello.trigger == "schedule" and hello.attempts == 1
    assert 0 <= hello.lateness_s < 1.0
    slots = [(r.schedule, r.scheduled_at) for r in runs(base)]
    assert len(slots) == len(set(slots))
    assert all(r.scheduled_at.microsecond == 0 for r in runs(base))  # epoch-aligned slots


def test_sigterm_drains_and_records_cancelled(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [sleepy]
        pipeline = "sleepy"
        interval = "1s"
        overlap = "allow"
        """,
        sleepy=SLEEPY,
    )
    with Served(base, env={"FLOWERD_SHUTDOWN_GRACE": "0.5"}) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, status="running"), what="a running run")
        started = time.monotonic()
        assert served.stop() == 0
        assert time.monotonic() - started < 10
    rows = runs(base)
    assert rows and {r.status for r in rows} <= {"cancelled", "missed", "skipped"}
    cancelled = [r for r in rows if r.status == "cancelled"]
    assert cancelled and all(r.finished_at and r.error for r in cancelled)


def test_kill_9_then_restart_marks_crashed_and_keeps_history(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [hello]
        pipeline = "hello_world"
        interval = "1s"

        [sleepy]
        pipeline = "sleepy"
        interval = "1s"
        catchup = "none"
        """,
        sleepy=SLEEPY,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, schedule="sleepy", status="running")
                 and rows_where(base, schedule="hello", status="success"), what="runs")
        served.kill()
    before = {r.id: r for r in runs(base) if r.status not in ("running", "queued")}
    running = {r.id for r in runs(base) if r.status in ("running", "queued")}
    assert running
    with Served(base) as served:
        served.wait_ready()
        after = {r.id: r for r in runs(base)}
        assert served.stop() == 0
    for run_id in running:
        assert after[run_id].status == "crashed"
        assert after[run_id].finished_at is not None
        assert "pid" in after[run_id].error.message
    for run_id, row in before.items():
        assert after[run_id] == row  # no earlier row lost or changed


def test_overlap_skip_and_timeout(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [sleepy]
        pipeline = "sleepy"
        interval = "1s"
        inputs = { seconds = 2.5 }
        overlap = "skip"

        [hung]
        pipeline = "sleepy_sync"
        interval = "1s"
        async_driver = false
        timeout = 0.5
        overlap = "allow"
        """,
        sleepy=SLEEPY,
        sleepy_sync=SLEEPY_SYNC,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, schedule="sleepy", status="skipped")
                 and rows_where(base, schedule="hung", status="timed_out"), what="skip + timeout")
        assert served.stop() == 0
    skipped = rows_where(base, schedule="sleepy", status="skipped")[0]
    # the true reason: the run going, or (a loaded machine) its claim still being written
    assert any(why in skipped.error.message for why in ("still running", "its claim"))
    timed_out = rows_where(base, schedule="hung", status="timed_out")[0]
    assert timed_out.duration_s < 2
    assert "timeout" in timed_out.error.message


def test_pipeline_calling_sys_exit_fails_and_daemon_lives(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [exits]
        pipeline = "exits"
        interval = "1s"
        """,
        exits=EXITS,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(rows_where(base, schedule="exits", status="failed")) >= 2,
                 what="two failed runs")
        assert served.proc.poll() is None
        assert served.stop() == 0
    failed = rows_where(base, schedule="exits", status="failed")[0]
    assert failed.error.type == "SystemExit"


def test_sighup_adds_schedules_and_a_bad_file_keeps_the_old(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [first]
        pipeline = "hello_world"
        interval = "1h"
        """,
    )
    with Served(base) as served:
        served.wait_ready()
        (base / "schedules" / "more.toml").write_text(
            '[second]\npipeline = "hello_world"\ninterval = "1s"\n'
        )
        served.signal(signal.SIGHUP)
        wait_for(lambda: rows_where(base, schedule="second", status="success"), what="second")
        (base / "schedules" / "bad.toml").write_text('[third]\npipeline = "nope"\ncron = "x"\n')
        served.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in served.log, what="refused reload")
        ids = {s["id"] for s in served.ask("status")["schedules"]}
        assert ids == {"first", "second"}
        done = cli(base, "reload")
        assert done.returncode == 1 and "bad.toml" in done.stderr
        assert served.stop() == 0


def test_schedules_says_what_the_daemon_fires_and_reload_names_what_changed(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [nightly]
        pipeline = "hello_world"
        interval = "1h"

        [hourly]
        pipeline = "hello_world"
        interval = "2h"
        """,
    )

    def loaded() -> dict:
        done = cli(base, "schedules", "--json")
        assert done.returncode == 0, done.stderr
        return {row["id"]: row["loaded"] for row in json.loads(done.stdout)}

    assert loaded() == {"nightly": False, "hourly": False}  # no daemon runs them yet
    assert "no daemon is running" in cli(base, "schedules").stdout
    with Served(base) as served:
        served.wait_ready()
        assert loaded() == {"nightly": True, "hourly": True}
        assert "flowerd reload" not in cli(base, "schedules").stdout
        test_toml = base / "schedules" / "test.toml"
        test_toml.write_text(test_toml.read_text().replace('"1h"', '"30m"'))
        (base / "schedules" / "more.toml").write_text('[weekly]\npipeline = "hello_world"\n'
                                                     'interval = "7d"\n')  # fmt: skip
        assert loaded() == {"nightly": False, "hourly": True, "weekly": False}
        shown = cli(base, "schedules").stdout
        assert "changed in the files since the daemon loaded them: nightly" in shown
        assert "not loaded yet: weekly" in shown and "`flowerd reload`" in shown
        done = cli(base, "reload")
        assert done.returncode == 0, done.stderr
        assert "reloaded: 1 added (weekly), 0 removed, 1 changed (nightly), 1 unchanged" in (
            done.stdout
        )
        assert loaded() == {"nightly": True, "hourly": True, "weekly": True}
        assert served.stop() == 0


@pytest.mark.parametrize(
    ("policy", "runs_expected"),
    [("none", 0), ("latest", 1), ("all", None)],
)
def test_catch_up_after_downtime(tmp_path: Path, policy: str, runs_expected: int | None):
    base = make_project(
        tmp_path,
        f"""
        [tick]
        pipeline = "hello_world"
        interval = "1s"
        catchup = "{policy}"
        """,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, schedule="tick", status="success"), what="a run")
        assert served.stop() == 0
    last_before = max(r.scheduled_at for r in runs(base))
    time.sleep(3.2)
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: not served.ask("status")["running"], what="catch-up done")
        assert served.stop() == 0
    after = [r for r in runs(base) if r.trigger == "catchup"]
    missed = [r for r in after if r.status == "missed"]
    ran = [r for r in after if r.status != "missed"]
    assert all(r.scheduled_at > last_before for r in after)
    assert len(after) >= 3
    if runs_expected is None:
        assert not missed and all(r.status == "success" for r in ran)
        by_start = sorted(ran, key=lambda r: r.started_at)
        assert [r.scheduled_at for r in by_start] == sorted(r.scheduled_at for r in ran)
    else:
        assert len(ran) == runs_expected and len(missed) == len(after) - runs_expected
        if ran:
            assert ran[0].scheduled_at == max(r.scheduled_at for r in after)


def test_control_commands_and_second_daemon(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [hello]
        pipeline = "hello_world"
        interval = "1h"
        """,
    )
    with Served(base) as served:
        served.wait_ready()
        second = cli(base, "serve", timeout_s=60)
        assert second.returncode == 1 and "already serving" in second.stderr
        assert cli(base, "trigger", "hello").returncode == 0
        wait_for(lambda: rows_where(base, schedule="hello", trigger="manual", status="success"),
                 what="triggered run")
        assert cli(base, "trigger", "helo").returncode == 1
        assert cli(base, "pause", "hello").returncode == 0
        status = served.ask("status")
        assert status["schedules"][0]["paused"] and status["loop_lag_ms"] >= 0
        assert served.stop() == 0
    with Served(base) as served:  # pause survives a restart
        assert served.wait_ready()["schedules"][0]["paused"]
        assert cli(base, "resume", "hello").returncode == 0
        assert not served.ask("status")["schedules"][0]["paused"]
        assert served.stop() == 0
    mode = os.stat(served.settings.state_dir).st_mode & 0o777
    assert mode == 0o700


def test_no_daemon_exits_3(tmp_path: Path):
    base = make_project(tmp_path)
    for command in (["status"], ["reload"], ["trigger", "x"], ["pause", "x"], ["resume", "x"]):
        done = cli(base, *command)
        assert done.returncode == 3, (command, done.stderr)
        assert "no flowerd daemon" in done.stderr and "Traceback" not in done.stderr


def test_serve_refuses_invalid_schedules(tmp_path: Path):
    base = make_project(tmp_path, '[bad]\npipeline = "hello_world"\ncron = "61 * * * *"\n')
    done = cli(base, "serve")
    assert done.returncode == 1 and "test.toml" in done.stderr and "bad" in done.stderr
    assert "Traceback" not in done.stderr


def _intervals_overlap(rows) -> bool:
    spans = sorted((r.started_at, r.finished_at) for r in rows if r.started_at)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_overlap_queue_and_the_global_concurrency_limit(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [queued]
        pipeline = "sleepy"
        interval = "1s"
        inputs = { seconds = 1.4 }
        overlap = "queue"
        misfire_grace = 30

        [other]
        pipeline = "sleepy"
        interval = "1s"
        inputs = { seconds = 0.3 }
        overlap = "allow"
        misfire_grace = 30
        """,
        sleepy=SLEEPY,
    )
    with Served(base, env={"FLOWERD_MAX_CONCURRENT_RUNS": "1"}) as served:
        served.wait_ready()
        wait_for(lambda: len(rows_where(base, schedule="queued", status="success")) >= 2,
                 timeout_s=30, what="two queued runs done")
        assert served.stop() == 0
    done = [r for r in runs(base) if r.status == "success"]
    assert not rows_where(base, schedule="queued", status="skipped")
    assert not _intervals_overlap(done)  # one run at a time, across schedules


def test_slots_late_beyond_misfire_grace_are_recorded_missed(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [blocker]
        pipeline = "blocking"
        interval = "1h"

        [tick]
        pipeline = "hello_world"
        interval = "1s"
        misfire_grace = 0.5
        """,
        blocking="import time\n\ndef blocked(seconds: float = 3.0) -> float:\n"
        "    time.sleep(seconds)  # a sync node under the async driver stalls the loop\n"
        "    return seconds\n",
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, schedule="tick", status="success"), what="a tick")
        assert cli(base, "trigger", "blocker").returncode == 0
        wait_for(lambda: rows_where(base, schedule="blocker", status="success"), what="block")
        wait_for(lambda: len(rows_where(base, schedule="tick", status="success")) >= 3,
                 what="ticks after the block")
        assert served.ask("status")["loop_lag_ms"] >= 0
        assert served.stop() == 0
    missed = rows_where(base, schedule="tick", status="missed")
    assert len(missed) >= 2 and all("misfire_grace" in r.error.message for r in missed)
    ticks = sorted(r.scheduled_at for r in rows_where(base, schedule="tick"))
    gaps = {(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)}
    assert gaps == {1.0}  # every slot is a row: none dropped silently


def test_a_second_stop_signal_cancels_at_once(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [sleepy]
        pipeline = "sleepy"
        interval = "1h"
        """,
        sleepy=SLEEPY,
    )
    with Served(base, env={"FLOWERD_SHUTDOWN_GRACE": "60"}) as served:
        served.wait_ready()
        assert cli(base, "trigger", "sleepy").returncode == 0
        wait_for(lambda: rows_where(base, status="running"), what="a running run")
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert served.proc.poll() is None  # draining: grace is 60 s
        served.signal(signal.SIGINT)
        assert served.wait(timeout_s=15) == 0
        assert time.monotonic() - started < 10
    (row,) = runs(base)
    assert row.status == "cancelled" and row.trigger == "manual"


def test_a_long_outage_records_capped_missed_rows_and_one_that_counts_the_rest(tmp_path: Path):
    import asyncio
    import math
    from datetime import UTC, datetime, timedelta

    from daemon.history import History
    from daemon.settings import load_settings

    base = make_project(
        tmp_path, '[tick]\npipeline = "hello_world"\ninterval = "1s"\ncatchup = "none"\n'
    )
    started = time.monotonic()
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    async def ran_an_hour_ago() -> None:
        async with History.open(load_settings(base).db_url) as history:
            await history.record_slot(
                schedule="tick", pipeline="hello_world", scheduled_at=last, status="success"
            )

    asyncio.run(ran_an_hour_ago())
    with Served(base) as served:
        served.wait_ready()  # catch-up is done before the control socket answers
        took_s = time.monotonic() - started
        assert served.stop() == 0
    missed = rows_where(base, schedule="tick", status="missed")
    missed.sort(key=lambda r: r.scheduled_at)
    summary, listed = missed[0], missed[1:]
    assert len(listed) == 100 and summary.error.type == "MissedSlots"
    counted = int(summary.error.message.split()[0].replace(",", ""))
    # 3600 s of 1 s slots (and those of the start-up, however long a loaded machine takes
    # for it), less the 100 listed one by one
    assert 3500 <= counted <= 3500 + math.ceil(took_s) + 1
    assert summary.scheduled_at == last + timedelta(seconds=counted)
    after = [summary.scheduled_at + timedelta(seconds=i) for i in range(1, 101)]
    assert [r.scheduled_at for r in listed] == after
