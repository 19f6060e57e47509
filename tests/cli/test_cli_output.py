"""Output a new user can trust (issue 15, items 5 and 6): tables fit 80 columns, `--json`
is the only thing on stdout, results are JSON, one timezone rule, help without noise,
and the small things (`--log-level` after `run`, pause twice, unknown schedules)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.history import History, RunError
from daemon.settings import load_settings
from tests.serve import Served, cli, cli_here, make_project, wait_for

NARROW = {"COLUMNS": "80"}
SCHEDULES = """
[hello_every_minute_long_name]
pipeline = "hello_world"
cron = "* * * * *"
timezone = "Asia/Tokyo"
final_vars = ["full_greeting"]

[crash_daily_report_x]
pipeline = "crashy"
cron = "0 9 * * *"
timezone = "Asia/Tokyo"
final_vars = ["boom"]
"""
CRASHY = """
def boom() -> int:
    raise ValueError("something went terribly wrong while computing the thing" * 3)
"""
PRINTY = """
import os


def out() -> dict:
    print("hello from print")
    os.write(1, b"raw fd write\\n")
    return {"a": 1, "nested": [1, 2]}


def obj() -> object:
    return object()
"""


def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "p", SCHEDULES, crashy=CRASHY, printy=PRINTY)


def seed(base: Path) -> None:
    async def write() -> None:
        async with History.open(load_settings(base).db_url) as h:
            now = datetime.now(UTC).replace(microsecond=0)
            for n in range(6):
                schedule, pipeline = (
                    ("hello_every_minute_long_name", "hello_world")
                    if n % 2
                    else ("crash_daily_report_x", "crashy")
                )
                slot = now - timedelta(hours=n)
                run_id = await h.claim(
                    pipeline=pipeline,
                    trigger="schedule",
                    schedule=schedule,
                    scheduled_at=slot,
                    async_driver=True,
                )
                await h.mark_running(run_id, started_at=slot)
                error = RunError(type="ValueError", message="wrong " * 40 + "\nline 2")
                await h.finish(
                    run_id,
                    status="success" if n % 2 else "failed",
                    finished_at=slot + timedelta(seconds=2),
                    attempts=1,
                    error=None if n % 2 else error,
                )

    asyncio.run(write())


def assert_fits(text: str, *words: str) -> None:
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, text
    for word in words:
        assert re.search(rf"(?<![\w…]){re.escape(word)}(?![\w…])", text), (word, text)


def test_runs_stats_and_schedules_fit_80_columns(tmp_path: Path):
    base = project(tmp_path)
    seed(base)
    runs = cli_here(base, "runs", env=NARROW)
    assert runs.returncode == 0, runs.stderr
    assert_fits(runs.stdout, "hello_every_minute_long_name", "crash_daily_report_x", "failed")
    assert all(str(n) in runs.stdout for n in range(1, 7))
    assert "line 2" not in runs.stdout  # errors stay on one line; `runs show` has the rest
    stats = cli_here(base, "stats", env=NARROW)
    assert stats.returncode == 0, stats.stderr
    assert_fits(stats.stdout, "hello_every_minute_long_name", "crash_daily_report_x", "success")
    assert "JST" in stats.stdout  # next fire in the schedule's own zone
    assert "p50" in stats.stdout and "p95" in stats.stdout  # what stats are for
    schedules = cli_here(base, "schedules", env=NARROW)
    assert schedules.returncode == 0, schedules.stderr
    assert_fits(schedules.stdout, "hello_every_minute_long_name", "enabled")
    assert "09:00:00+09:00" in schedules.stdout


def test_status_fits_and_shows_the_schedule_zone(tmp_path: Path):
    base = project(tmp_path)
    with Served(base) as served:
        served.wait_ready()
        status = cli_here(base, "status", env=NARROW)
        assert served.stop() == 0
    assert status.returncode == 0, status.stderr
    assert_fits(status.stdout, "hello_every_minute_long_name", "crash_daily_report_x")
    assert "+09:00" in status.stdout


def test_run_json_is_the_only_thing_on_stdout_and_the_result_is_json(tmp_path: Path):
    base = project(tmp_path)
    done = cli(base, "run", "printy", "--final-var", "out", "--final-var", "obj", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["result"]["out"] == {"a": 1, "nested": [1, 2]}
    assert doc["result"]["obj"].startswith("<object object at")  # not JSON-able: its repr
    assert "hello from print" in done.stderr and "raw fd write" in done.stderr
    shown = cli_here(base, "runs", "show", str(doc["id"]))
    assert shown.returncode == 0, shown.stderr
    assert '"nested": [' in shown.stdout and '"a": 1' in shown.stdout


def test_runs_show_gives_the_whole_error(tmp_path: Path):
    base = project(tmp_path)
    seed(base)
    shown = cli_here(base, "runs", "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert "line 2" in shown.stdout
    assert "+09:00" in shown.stdout  # the slot in the schedule's zone


def test_help_has_no_bool_noise():
    for args in (("--help",), ("runs", "--help"), ("run", "--help"), ("status", "--help")):
        done = cli(Path("."), *args)
        assert done.returncode == 0, done.stderr
        assert "<bool>" not in done.stdout, args
    top = cli(Path("."), "--help").stdout
    assert "Print the version and exit." in top


def test_help_is_wrapped_by_the_terminal_not_the_source():
    """A docstring's line breaks are the source's; a wide terminal shows each on one line."""
    top = cli(Path("."), "--help").stdout  # COLUMNS=200
    assert "oldest first, trigger `backfill`; slots already in the history" in top
    assert "recorded with trigger `manual`. Prints the result" in top
    narrow = cli(Path("."), "run", "--help", env={"COLUMNS": "60"}).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_log_level_after_run_and_debug_without_plugin_noise(tmp_path: Path):
    base = project(tmp_path)
    done = cli(base, "run", "hello_world", "--log-level", "DEBUG")
    assert done.returncode == 0, done.stderr
    assert "Computing full_greeting" in done.stderr
    assert "hamilton.registry" not in done.stderr and "Did not load" not in done.stderr


def test_runs_for_an_unknown_schedule_says_so(tmp_path: Path):
    base = project(tmp_path)
    seed(base)
    for json_flag in ((), ("--json",)):
        done = cli_here(base, "runs", "--schedule", "crash_daily_reprt_x", *json_flag)
        assert (done.returncode, done.stdout) == (1, "")  # an error, never also "no runs"
        assert "no schedule 'crash_daily_reprt_x'" in done.stderr
        assert "did you mean 'crash_daily_report_x'" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_pause_twice_says_so_and_the_daemon_logs_it(tmp_path: Path):
    base = project(tmp_path)
    with Served(base) as served:
        served.wait_ready()
        first = cli_here(base, "pause", "crash_daily_report_x")
        second = cli_here(base, "pause", "crash_daily_report_x")
        resumed = cli_here(base, "resume", "crash_daily_report_x")
        wait_for(lambda: "resumed crash_daily_report_x" in served.log, what="the log line")
        assert served.stop() == 0
    assert first.stdout.strip() == "paused crash_daily_report_x"
    assert second.stdout.strip() == "crash_daily_report_x was paused already"
    assert resumed.returncode == 0
    assert "paused crash_daily_report_x" in served.log


FLAKY = """
from pathlib import Path


def value(counter_file: str) -> int:
    counter = Path(counter_file)
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < 2:
        raise ConnectionError(f"attempt {seen + 1}: the server went away")
    return seen
"""


def test_a_success_after_retries_keeps_the_earlier_errors(tmp_path: Path):
    counter = tmp_path / "counter"
    base = make_project(
        tmp_path / "p",
        f"""
        [flaky]
        pipeline = "flaky"
        cron = "@yearly"
        final_vars = ["value"]
        inputs = {{ counter_file = "{counter}" }}
        max_retries = 3
        retry_delay = 0.01
        """,
        flaky=FLAKY,
    )
    with Served(base) as served:
        served.wait_ready()
        assert cli_here(base, "trigger", "flaky").returncode == 0
        listed = lambda: json.loads(cli_here(base, "runs", "--json").stdout)  # noqa: E731
        wait_for(listed, what="the triggered run")
        done = wait_for(
            lambda: [r for r in listed() if r["finished_at"]],
            what="the run to finish",
        )
        assert served.stop() == 0
    [run] = done
    assert (run["status"], run["attempts"], run["error"]) == ("success", 3, None)
    assert [e["message"] for e in run["attempt_errors"]] == [
        "attempt 1: the server went away",
        "attempt 2: the server went away",
    ]
    assert {e["type"] for e in run["attempt_errors"]} == {"ConnectionError"}
    failed_lines = [line for line in served.log.splitlines() if "the server went away" in line]
    assert len(failed_lines) == 2, served.log  # one line per failed attempt
    assert "Traceback" not in served.log and "Slack" not in served.log
    shown = cli_here(base, "runs", "show", str(run["id"]))
    assert "attempt error" in shown.stdout and "attempt 1: the server went away" in shown.stdout


def test_validate_warns_once_per_all_sync_pipeline_and_about_a_past_at(tmp_path: Path):
    base = make_project(
        tmp_path / "p",
        """
        [one]
        pipeline = "hello_world"
        cron = "@daily"
        [two]
        pipeline = "hello_world"
        interval = "1h"
        [gone]
        pipeline = "hello_world"
        at = "2020-01-01T09:00:00+00:00"
        async_driver = false
        """,
    )
    done = cli_here(base, "validate")
    assert done.returncode == 0, done.stderr
    sync = [line for line in done.stderr.splitlines() if "only sync functions" in line]
    assert len(sync) == 1, done.stderr  # once for the pipeline, naming both schedules
    assert "[one]" in sync[0] and "[two]" in sync[0] and "async_driver = false" in sync[0]
    past = [line for line in done.stderr.splitlines() if "in the past" in line]
    assert len(past) == 1 and "[gone]" in past[0] and "2020-01-01T09:00:00+00:00" in past[0]
