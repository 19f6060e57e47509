"""The slot reaches the pipeline (`scheduled_at`, `run_id`), `flowerd backfill` and
`flowerd rerun`: real `flowerd` processes, real daemons, real SQLite files."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.contract import FLOWERD, bound
from tests.serve import Served, cli, cli_here, make_project, rows_where, runs, wait_for

BERLIN = ZoneInfo("Europe/Berlin")

SLOTTED = """
    from datetime import datetime


    def day(scheduled_at: datetime) -> str:
        return scheduled_at.isoformat()


    def which(run_id: int) -> int:
        return run_id
"""

SLOW = """
    import time
    from datetime import datetime


    def slept(scheduled_at: datetime) -> str:
        time.sleep(0.6)
        return scheduled_at.isoformat()
"""

DAILY = """
    [daily]
    pipeline = "slotted"
    cron = "0 0 * * *"
    timezone = "Europe/Berlin"
    catchup = "none"
"""


def project(tmp_path: Path, schedules: str = DAILY) -> Path:
    return make_project(tmp_path, schedules, slotted=SLOTTED, slow=SLOW)


def day_of(record) -> datetime:
    """The `scheduled_at` the pipeline got (it returns its isoformat)."""
    return datetime.fromisoformat(record.result["day"])


def backfill(base: Path, *args: str, env: dict | None = None):
    """`flowerd backfill` run in this process (each process of its own imports Hamilton:
    ~3 CPU-s); test_backfill_bad_input_is_one_line and the slow trials run the real one."""
    return cli_here(base, "backfill", *args, env=env)


# --------------------------------------------------------------------------- the inputs


def test_every_trigger_passes_the_slot_and_the_run_id(tmp_path: Path):
    """Schedule, catch-up, trigger, backfill and rerun in a real daemon, then `flowerd
    run`: each run's `scheduled_at` is its slot in the schedule's timezone."""
    base = project(
        tmp_path,
        """
        [tick]
        pipeline = "slotted"
        interval = "1s"
        timezone = "Europe/Berlin"
        catchup = "all"
        """,
    )
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, trigger="schedule", status="success"), what="a run")
        assert served.stop() == 0
    time.sleep(2.2)  # downtime: catch-up runs the slots that passed
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: rows_where(base, trigger="catchup", status="success"), what="catch-up")
        assert cli_here(base, "trigger", "tick").returncode == 0
        wait_for(lambda: rows_where(base, trigger="manual", status="success"), what="trigger")
        done = backfill(
            base,
            "tick",
            "--from",
            "2026-03-29T01:59:58+01:00",
            "--to",
            "2026-03-29T03:00:01+02:00",
            "--json",
        )
        assert done.returncode == 0, done.stderr
        filled = json.loads(done.stdout)
        assert [r["daemon"] for r in filled] == [served.wait_ready()["daemon"]] * 4
        again = cli_here(base, "rerun", str(filled[0]["id"]), "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["rerun_of"] == filled[0]["id"]
        assert served.stop() == 0
    done = cli(base, "run", "slotted")
    assert done.returncode == 0, done.stderr
    rows = [r for r in runs(base) if r.status == "success"]
    assert {r.trigger for r in rows} == {"schedule", "catchup", "manual", "backfill", "rerun"}
    for record in rows:
        assert record.result["which"] == record.id
        if record.schedule is None:  # `flowerd run`: when it was asked for (UTC setting)
            minute = record.started_at.replace(second=0, microsecond=0)
            assert record.started_at >= day_of(record) >= minute  # asked for, then started
            continue
        assert day_of(record) == record.scheduled_at
        assert day_of(record).utcoffset() == record.scheduled_at.astimezone(BERLIN).utcoffset()
    backfilled = sorted(day_of(r).isoformat() for r in rows if r.trigger == "backfill")
    assert backfilled == [  # the spring-forward gap: 02:00-03:00 does not exist
        "2026-03-29T01:59:58+01:00",
        "2026-03-29T01:59:59+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:00:01+02:00",
    ]


def test_python_api_with_history_passes_the_time_asked(tmp_path: Path):
    from daemon import PipelineManager

    base = project(tmp_path)
    before = datetime.now(BERLIN)
    result = PipelineManager(base, history=True).run("slotted")
    record = runs(base)[0]
    assert before <= datetime.fromisoformat(result["day"]) <= record.finished_at
    assert result["which"] == record.id and record.trigger == "manual"


def test_a_pipeline_without_slot_inputs_is_untouched(tmp_path: Path):
    base = make_project(tmp_path, '[h]\npipeline = "hello_world"\ncron = "0 0 * * *"\n')
    done = backfill(base, "h", "--from", "2026-01-01", "--to", "2026-01-02", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["inputs"] for r in json.loads(done.stdout)] == [{}, {}]


def test_the_slot_inputs_are_reserved(tmp_path: Path):
    base = project(
        tmp_path,
        """
        [daily]
        pipeline = "slotted"
        cron = "0 0 * * *"
        inputs = { run_id = 3 }
        """,
    )
    done = cli_here(base, "validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "test.toml" in done.stderr and "[daily]" in done.stderr
    assert "field 'inputs'" in done.stderr and "'run_id' is reserved" in done.stderr
    done = cli(base, "run", "slotted", "--input", "scheduled_at=2026-01-01")
    assert done.returncode == 2 and "'scheduled_at' is reserved" in done.stderr


# --------------------------------------------------------------------------- backfill


def test_backfill_across_dst_without_a_daemon_then_skip_then_rerun(tmp_path: Path):
    base = project(tmp_path)
    done = backfill(base, "daily", "--from", "2026-03-28", "--to", "2026-03-30", "--json")
    assert done.returncode == 0, done.stderr
    filled = json.loads(done.stdout)
    assert [r["result"]["day"] for r in filled] == [
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",  # after the change: still local midnight
    ]
    assert {r["trigger"] for r in filled} == {"backfill"} and filled[0]["daemon"] is None
    started = [r["started_at"] for r in filled]
    assert started == sorted(started)  # oldest first

    done = backfill(base, "daily", "--from", "2026-03-27", "--to", "2026-03-30")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already in the history: slot") == 3
    assert "slot 2026-03-30T00:00:00+02:00 (run 3, success)" in done.stdout
    assert len(runs(base)) == 4  # only the 27th was new

    done = backfill(
        base, "daily", "--from", "2026-03-28", "--to", "2026-03-29", "--rerun", "--json"
    )
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert [r["trigger"] for r in again] == ["rerun", "rerun"]
    assert [r["rerun_of"] for r in again] == [filled[0]["id"], filled[1]["id"]]
    assert [r["scheduled_at"] for r in again] == [r["scheduled_at"] for r in filled[:2]]
    assert [r["result"]["day"] for r in again] == [r["result"]["day"] for r in filled[:2]]

    shown = cli_here(base, "runs", "show", str(filled[0]["id"]))
    assert f"repeated by {again[0]['id']}" in shown.stdout
    shown = json.loads(cli_here(base, "runs", "show", str(again[0]["id"]), "--json").stdout)
    assert shown["rerun_of"] == filled[0]["id"] and shown["reruns"] == []
    listed = json.loads(cli_here(base, "runs", "--trigger", "rerun", "--json").stdout)
    assert sorted(r["id"] for r in listed) == sorted(r["id"] for r in again)


NIGHTLY_0315 = """
    [sales_nightly]
    pipeline = "slotted"
    cron = "15 3 * * *"
    timezone = "Europe/Berlin"
    catchup = "none"
"""


@pytest.mark.parametrize("daemon", [False, True], ids=["in-process", "through-daemon"])
def test_a_date_as_to_includes_that_whole_day(tmp_path: Path, daemon: bool):
    """A slot at 03:15 is on Dec 4 even though midnight of Dec 4 is before it: a bare
    date as --to covers every slot of that day; a full time is the bound, included."""
    base = project(tmp_path, NIGHTLY_0315)

    def days(*args: str) -> list[str]:
        done = backfill(base, "sales_nightly", *args, "--json")
        assert done.returncode == 0, done.stderr
        return [r["result"]["day"] for r in json.loads(done.stdout)]

    with contextlib.ExitStack() as stack:
        if daemon:
            stack.enter_context(Served(base)).wait_ready()
        assert days("--from", "2026-12-01", "--to", "2026-12-03") == [
            f"2026-12-0{d}T03:15:00+01:00" for d in (1, 2, 3)
        ]
        assert days("--from", "2026-12-04", "--to", "2026-12-04") == ["2026-12-04T03:15:00+01:00"]
        assert days("--from", "2026-12-05T03:15", "--to", "2026-12-06T03:15") == [
            "2026-12-05T03:15:00+01:00",
            "2026-12-06T03:15:00+01:00",
        ]
        assert days("--from", "2026-12-01", "--to", "2026-12-04", "--rerun") == [
            f"2026-12-0{d}T03:15:00+01:00" for d in (1, 2, 3, 4)
        ]
    assert len(rows_where(base, trigger="backfill")) == 6


@pytest.mark.slow  # sized down in tests/runner/test_backfill_job.py
def test_backfill_through_a_running_daemon(tmp_path: Path):
    base = project(
        tmp_path,
        DAILY
        + """
        [allowed]
        pipeline = "slow"
        interval = "1h"
        overlap = "allow"
        """,
    )
    env = {"FLOWERD_MAX_CONCURRENT_RUNS": "3"}
    with Served(base, env=env) as served:
        daemon = served.wait_ready()["daemon"]
        done = backfill(base, "daily", "--from", "2026-03-28", "--to", "2026-03-30", "--json")
        assert done.returncode == 0, done.stderr
        assert {r["daemon"] for r in json.loads(done.stdout)} == {daemon}
        done = backfill(
            base, "allowed", "--from", "2026-01-01T00:00Z", "--to", "2026-01-01T03:00Z", "--json"
        )
        assert done.returncode == 0, done.stderr
        filled = json.loads(done.stdout)
        assert len(filled) == 4 and {r["daemon"] for r in filled} == {daemon}
        assert served.stop() == 0
    # overlap = "allow": two at a time (of the limit 3, one stays free for scheduled slots)
    rows = rows_where(base, schedule="allowed", trigger="backfill")
    overlapping = max(
        sum(1 for o in rows if o.started_at < r.finished_at and o.finished_at > r.started_at)
        for r in rows
    )
    assert overlapping == 2


def test_backfill_slots_of_interval_and_one_shot_schedules(tmp_path: Path):
    base = project(
        tmp_path,
        """
        [every5]
        pipeline = "slotted"
        interval = "5m"

        [once]
        pipeline = "slotted"
        at = "2026-06-01T09:00:00+02:00"
        timezone = "Europe/Berlin"
        """,
    )
    done = backfill(
        base, "every5", "--from", "2026-01-01T00:02Z", "--to", "2026-01-01T00:15Z", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert [r["scheduled_at"] for r in json.loads(done.stdout)] == [
        "2026-01-01T00:05:00+00:00",
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T00:15:00+00:00",
    ]
    done = backfill(base, "once", "--from", "2026-01-01", "--to", "2026-12-31", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["result"]["day"] for r in json.loads(done.stdout)] == ["2026-06-01T09:00:00+02:00"]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["dialy", "--from", "2026-03-28", "--to", "2026-03-30"], 1, "did you mean 'daily'"),
        (["daily", "--from", "2026-03-30", "--to", "2026-03-28"], 2, "is after --to"),
        (["daily", "--from", "2026-03-28T01:00", "--to", "2026-03-28T02:00"], 1, "has no slot"),
        (["daily", "--from", "2000-01-01", "--to", "2040-01-01"], 2, "add --yes"),
        (["daily", "--from", "next week", "--to", "2026-03-28"], 2, "--from: 'next week'"),
        (["daily", "--from", "2040-01-01", "--to", "2040-01-02"], 1, "still to come"),
    ],
)
def test_backfill_bad_input_is_one_line(tmp_path: Path, args, code, says):
    base = project(tmp_path)
    done = cli(base, "backfill", *args, timeout_s=120)
    assert done.returncode == code, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_rerun_of_an_unknown_run_or_a_pipeline_gone(tmp_path: Path):
    base = project(tmp_path)
    done = cli(base, "rerun", "42")
    assert done.returncode == 1 and "no run 42" in done.stderr
    assert cli(base, "run", "slotted").returncode == 0
    (base / "pipelines" / "slotted.py").unlink()
    done = cli(base, "rerun", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pipeline 'slotted' is gone" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # sized down in tests/runner/test_backfill_job.py
def test_rerun_without_a_daemon_repeats_inputs_final_vars_and_slot(tmp_path: Path):
    base = project(tmp_path)
    first = json.loads(
        cli(
            base,
            "run",
            "hello_world",
            "--input",
            "name=Ada",
            "--final-var",
            "full_greeting",
            "--json",
        ).stdout
    )
    done = cli(base, "rerun", str(first["id"]), "--json")
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["trigger"] == "rerun" and again["rerun_of"] == first["id"]
    for key in ("pipeline", "inputs", "final_vars", "schedule", "scheduled_at", "result"):
        assert again[key] == first[key], key


# --------------------------------------------------------------------------- stopping


SLOW_DAILY = """
    [slow]
    pipeline = "slow"
    cron = "0 0 * * *"
    timezone = "Europe/Berlin"
"""


def _start_backfill(base: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            FLOWERD,
            "--base-dir",
            str(base),
            "backfill",
            "slow",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-06",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _started(base: Path) -> list:
    return [r for r in rows_where(base, trigger="backfill") if r.started_at is not None]


def _complete_again(base: Path) -> None:
    done = backfill(base, "slow", "--from", "2026-03-01", "--to", "2026-03-06")
    assert done.returncode == 0, done.stderr
    filled = rows_where(base, trigger="backfill")
    assert len(filled) == 6 and {r.status for r in filled} == {"success"}


@pytest.mark.slow  # sized down in tests/runner/test_backfill_job.py
def test_ctrl_c_stops_a_backfill_in_the_daemon_and_the_same_command_completes_it(
    tmp_path: Path,
):
    base = project(tmp_path, SLOW_DAILY)
    with Served(base) as served:
        served.wait_ready()
        proc = _start_backfill(base)
        wait_for(lambda: _started(base), what="the first run")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=bound(30))
        assert proc.returncode == 1, err
        assert "not started" in out and "Traceback" not in err
        rows = rows_where(base, trigger="backfill")
        assert 1 <= len(rows) < 6 and {r.status for r in rows} == {"success"}
        _complete_again(base)
        assert served.stop() == 0


@pytest.mark.slow  # sized down in tests/runner/test_backfill_job.py
def test_a_daemon_stop_leaves_started_slots_finished_and_the_rest_untouched(tmp_path: Path):
    base = project(tmp_path, SLOW_DAILY)
    with Served(base) as served:
        served.wait_ready()
        proc = _start_backfill(base)
        wait_for(lambda: _started(base), what="the first run")
        assert served.stop() == 0
        _, err = proc.communicate(timeout=bound(30))
        assert proc.returncode == 1 and "Traceback" not in err
    rows = rows_where(base, trigger="backfill")
    assert 1 <= len(rows) < 6 and {r.status for r in rows} <= {"success", "cancelled"}
    assert {r.status for r in rows} == {"success"}  # the grace (5 s) lets the one going end
    _complete_again(base)


@pytest.mark.slow  # sized down in tests/runner/test_backfill_job.py
def test_ctrl_c_stops_a_backfill_in_this_process(tmp_path: Path):
    base = project(tmp_path, SLOW_DAILY)
    proc = _start_backfill(base)
    wait_for(lambda: _started(base), what="the first run")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=bound(30))
    assert proc.returncode == 1 and "Traceback" not in err, err
    rows = rows_where(base, trigger="backfill")
    assert 1 <= len(rows) < 6 and {r.status for r in rows} == {"success"}
    _complete_again(base)
