"""Orchestration between schedules (DESIGN.md "Across schedules"), end to end: real
`flowerd serve`, real time, real files."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.runner.pools import Pools
from tests.contract import bound
from tests.serve import Served, cli, cli_here, make_project, rows_where, wait_for
from tests.tell.test_notifications import Hook

pytestmark = pytest.mark.timeout(300)

DOUBLE = """
def doubled(n: int = 1) -> int:
    return n * 2
"""


def test_trigger_with_inputs_overrides_for_that_run_only(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [double]
        pipeline = "double"
        interval = "1h"
        final_vars = ["doubled"]
        inputs = { n = 5 }
        """,
        double=DOUBLE,
    )
    with Served(base) as served:
        served.wait_ready()
        done = cli_here(base, "trigger", "double", "--input", "n=21")
        assert done.returncode == 0, done.stderr
        row = wait_for(lambda: rows_where(base, schedule="double", status="success"))[0]
        assert row.result == {"doubled": 42} and row.inputs == {"n": 21}
        assert cli_here(base, "trigger", "double").returncode == 0
        wait_for(lambda: len(rows_where(base, schedule="double", status="success")) == 2)
        again = rows_where(base, schedule="double", status="success")[0]  # newest first
        assert again.result == {"doubled": 10}
        reserved = cli_here(base, "trigger", "double", "--input", "run_id=3")
        assert reserved.returncode == 2 and "reserved" in reserved.stderr
        unknown = cli_here(base, "trigger", "double", "--input", "m=3")
        assert unknown.returncode == 1 and "no input 'm'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        bad = cli_here(base, "trigger", "double", "--input", "n=abc")
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert served.stop() == 0


def test_holidays_and_exclude_leave_slots_out(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [payroll]
        pipeline = "hello_world"
        cron = "0 9 * * *"
        timezone = "Europe/Berlin"
        holidays = "DE"
        exclude = ["2026-12-28"]
        """,
    )
    listed = cli_here(
        base, "schedules", "--next", "3", "--from", "2026-12-23T12:00:00+00:00", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    (payroll,) = json.loads(listed.stdout)
    assert [t[:10] for t in payroll["next"]] == ["2026-12-24", "2026-12-27", "2026-12-29"]


def test_an_excluded_slot_is_a_skipped_row_naming_the_date(tmp_path: Path):
    today = datetime.now(UTC).date().isoformat()
    base = make_project(
        tmp_path,
        f"""
        [every]
        pipeline = "hello_world"
        interval = "1s"
        exclude = ["{today}"]
        """,
    )
    with Served(base) as served:
        served.wait_ready()
        row = wait_for(lambda: rows_where(base, schedule="every", status="skipped"))[0]
        assert served.stop() == 0
    assert row.error.type == "Excluded" and today in row.error.message
    time.sleep(2.5)  # downtime: its slots are excluded too, not missed
    with Served(base) as served:
        served.wait_ready()
        assert served.stop() == 0
    assert not rows_where(base, schedule="every", status="success")
    assert not rows_where(base, schedule="every", status="missed")


def test_calendar_mistakes_are_named(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [a]
        pipeline = "hello_world"
        cron = "0 9 * * *"
        holidays = "DX"
        exclude = ["2026-13-01"]

        [b]
        pipeline = "hello_world"
        cron = "0 9 * * *"
        holidays = "DE-BZ"

        [c]
        pipeline = "hello_world"
        cron = "0 9 * * *"
        holidays = "de-by"
        """,
    )
    found = cli_here(base, "validate")
    assert found.returncode == 1 and "Traceback" not in found.stderr
    assert "[a] field 'holidays'" in found.stderr and "'DX'" in found.stderr
    assert "[a] field 'exclude" in found.stderr and "2026-13-01" in found.stderr
    assert "[b] field 'holidays'" in found.stderr and "'BZ'" in found.stderr
    assert "[c] field 'holidays'" in found.stderr and "did you mean 'DE'?" in found.stderr


FAILS = """
def broken(x: int = 1) -> int:
    raise ValueError("always")
"""


def test_pause_after_failures_stops_at_n_and_says_why(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [flaky]
        pipeline = "fails"
        interval = "1s"
        async_driver = false
        pause_after_failures = 2
        """,
        fails=FAILS,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: served.ask("status")["schedules"][0]["paused"], what="self-pause")
        time.sleep(1.5)  # more slots would have come
        assert len(rows_where(base, schedule="flaky", status="failed")) == 2
        (status,) = served.ask("status")["schedules"]
        assert "2 runs in a row" in status["paused_reason"]
        assert "paused itself" in served.log
        listed = json.loads(cli_here(base, "schedules", "--json").stdout)
        assert listed[0]["paused"] and "2 runs in a row" in listed[0]["paused_reason"]
        assert "paused because" in cli_here(base, "status").stdout  # the plain status says why too
        assert cli_here(base, "resume", "flaky").returncode == 0
        (status,) = served.ask("status")["schedules"]
        assert not status["paused"] and status["paused_reason"] is None
        wait_for(lambda: served.ask("status")["schedules"][0]["paused"], what="second pause")
        assert len(rows_where(base, schedule="flaky", status="failed")) == 4  # 2 fresh tries
        assert served.stop() == 0


SLOW = """
import time

def slow(seconds: float = 3.0) -> float:
    time.sleep(seconds)
    return seconds
"""


def _metrics(url: str) -> str:
    return urllib.request.urlopen(f"{url}/metrics", timeout=bound(10)).read().decode()


def test_deadline_tells_late_once_before_the_run_ends(tmp_path: Path):
    hook = Hook()
    try:
        base = make_project(
            tmp_path,
            f"""
            [load]
            pipeline = "slow"
            interval = "1s"
            async_driver = false
            deadline = "1s"
            notify = ["{hook.url}"]
            notify_on = ["late"]
            """,
            slow=SLOW,
        )
        with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:
            url = served.wait_ready()["http"]
            wait_for(lambda: hook.received, timeout_s=15, what="a late notification")
            # the run goes on; a slot is late while its claim is still being written too
            # (slow under load), so its run may join `running` just after the notification
            running = wait_for(lambda: served.ask("status")["running"], what="the late run")
            assert running[0]["pipeline"] == "slow"
            # the counter and the notification hang off one `late` event; on a loaded
            # machine the page may be asked before the counter's listener has run
            late_line = 'flowerd_runs_late_total{schedule="load"} '
            metrics = wait_for(
                lambda: late_line in (text := _metrics(url)) and text, what="the late counter"
            )
            assert float(metrics.split(late_line, 1)[1].split()[0]) >= 1.0
            row = wait_for(lambda: rows_where(base, schedule="load", status="success"))[0]
            assert served.stop() == 0
        late = [m for m in hook.received if "late" in m["title"]]
        assert len(late) >= 1 and "deadline" in late[0]["message"]
        slots = {m["message"].split("slot ")[1].split(" ")[0] for m in late}
        assert len(slots) == len(late)  # once per slot
        assert row.finished_at is not None
    finally:
        hook.close()


NAP = """
import time

def napped(seconds: float = 0.4) -> float:
    time.sleep(seconds)
    return seconds
"""


def test_a_pool_of_one_never_runs_two_at_once(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [hourly]
        pipeline = "nap"
        interval = "1s"
        async_driver = false
        pool = "warehouse"
        overlap = "queue"

        [daily]
        pipeline = "nap"
        interval = "1s"
        async_driver = false
        pool = "warehouse"
        overlap = "queue"
        """,
        nap=NAP,
    )
    (base / "flowerd.toml").write_text("pools = { warehouse = 1 }\nthreads = 4\n")
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(rows_where(base, status="success")) >= 6, what="six runs")
        assert served.stop() == 0
    done = sorted(rows_where(base, status="success"), key=lambda r: r.started_at)
    assert {r.schedule for r in done} == {"hourly", "daily"}
    for before, after in zip(done, done[1:], strict=False):
        assert after.started_at >= before.finished_at, (before, after)


def test_an_unknown_pool_is_named(tmp_path: Path):
    table = '[a]\npipeline = "hello_world"\ncron = "0 9 * * *"\npool = "wh"\n'
    base = make_project(tmp_path, table)
    (base / "flowerd.toml").write_text("pools = { warehouse = 1 }\n")
    found = cli_here(base, "validate")
    assert found.returncode == 1 and "Traceback" not in found.stderr
    assert "[a] field 'pool': no pool 'wh'" in found.stderr


async def test_pool_gives_a_free_place_to_the_oldest_waiting_slot():
    seen = []
    pools = Pools({"wh": 1}, on_waiting=lambda pool, count: seen.append(count))
    t0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
    release = await pools.acquire("wh", t0)
    order = []

    async def wait(minute: int):
        done = await pools.acquire("wh", t0.replace(minute=minute))
        order.append(minute)
        done()

    tasks = [asyncio.create_task(wait(m)) for m in (30, 10, 20)]
    await asyncio.sleep(0.01)
    assert pools.waiting("wh") == 3 and max(seen) == 3
    release()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=bound(5))
    assert order == [10, 20, 30] and pools.running("wh") == 0 and seen[-1] == 0


GRAPH = """
[extract]
pipeline = "hello_world"
interval = "1s"

[prices]
pipeline = "hello_world"
interval = "2s"

[report]
pipeline = "hello_world"
after = ["extract", "prices"]

[bad]
pipeline = "fails"
interval = "1s"
async_driver = false

[held]
pipeline = "hello_world"
after = ["bad", "extract"]
"""


@pytest.mark.parametrize("reports", [3, pytest.param(8, marks=pytest.mark.slow)])
def test_after_runs_once_per_slot_after_every_upstream_succeeded(tmp_path: Path, reports: int):
    base = make_project(tmp_path, GRAPH, fails=FAILS)
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(rows_where(base, schedule="report")) >= reports, what="reports")
        listed = cli_here(base, "schedules").stdout
        assert "after extract, prices" in listed
        assert served.stop() == 0
    reports = sorted(rows_where(base, schedule="report"), key=lambda r: r.scheduled_at)
    assert all(r.trigger == "upstream" and r.status == "success" for r in reports)
    slots = [r.scheduled_at for r in reports]
    assert len(set(slots)) == len(slots)  # never twice per slot
    ups = {
        name: [r for r in rows_where(base, schedule=name, status="success")]
        for name in ("extract", "prices")
    }
    previous = None
    for report in reports:
        for name, done in ups.items():
            newer = [
                r for r in done
                if (previous is None or r.scheduled_at > previous)
                and r.scheduled_at <= report.scheduled_at
                and r.finished_at <= report.started_at
            ]  # fmt: skip
            assert newer, f"report {report.scheduled_at} ran without a newer {name}"
        assert report.scheduled_at in {r.scheduled_at for d in ups.values() for r in d}
        previous = report.scheduled_at
    assert rows_where(base, schedule="bad", status="failed")
    assert not rows_where(base, schedule="held")  # a failing upstream holds it


def test_after_graph_mistakes_are_named(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [a]
        pipeline = "hello_world"
        after = ["c"]

        [b]
        pipeline = "hello_world"
        after = ["a"]

        [c]
        pipeline = "hello_world"
        after = ["b"]

        [d]
        pipeline = "hello_world"
        after = ["extrct"]

        [extract]
        pipeline = "hello_world"
        cron = "0 9 * * *"
        after = ["a"]
        """,
    )
    found = cli_here(base, "validate")
    assert found.returncode == 1 and "Traceback" not in found.stderr
    assert "a cycle: a -> c -> b -> a" in found.stderr or "a cycle: a -> b" in found.stderr
    cycle_line = next(line for line in found.stderr.splitlines() if "a cycle" in line)
    assert all(f" {name} " in cycle_line + " " for name in ("a", "b", "c"))
    assert "[d] field 'after': no schedule 'extrct' (did you mean 'extract'?)" in found.stderr
    assert "[extract] fields 'after' and 'cron'" in found.stderr
    refused = cli(base, "backfill", "a", "--from", "1d", "--to", "now")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
