"""`flowerd runs / runs show / stats / db` as a user runs them, against a real SQLite file
that the test fills through History: what a command prints is read from its entry point
run in this process (flowerd_here); exit codes, one-line errors and what a command
imports, from the real console script in a subprocess."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.history import History, RunError
from tests.contract import CONTRACT_KEYS, FLOWERD, bound, flowerd, flowerd_here

NOW = datetime.now(UTC).replace(microsecond=0)


def as_json(base: Path, *args: str):
    done = flowerd_here(base, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def fill(db_url: str) -> dict[str, int]:
    """nightly: 4 runs an hour apart (the 2h-ago one failed); hourly: 1 success;
    a manual run of `adhoc`; a missed slot. Returns ids by name."""
    ids = {}
    async with History.open(db_url) as history:
        for hours in range(4):
            slot = NOW - timedelta(hours=hours)
            run_id = await history.claim(
                pipeline="hello_world",
                trigger="schedule",
                schedule="nightly",
                scheduled_at=slot,
                async_driver=True,
                inputs={"name": "W", "token": "t0p"},
            )
            await history.mark_running(run_id, started_at=slot + timedelta(seconds=1))
            failed = hours == 2
            await history.finish(
                run_id,
                status="failed" if failed else "success",
                finished_at=slot + timedelta(seconds=3),
                attempts=2 if failed else 1,
                error=RunError(type="ValueError", message="bad", traceback="Traceback: x")
                if failed
                else None,
            )
            ids[f"nightly-{hours}"] = run_id
        ids["hourly"] = await history.claim(
            pipeline="where",
            trigger="catchup",
            schedule="hourly",
            scheduled_at=NOW - timedelta(days=3),
            async_driver=False,
        )
        await history.finish(ids["hourly"], status="success", finished_at=NOW, attempts=1)
        ids["manual"] = await history.claim(
            pipeline="adhoc", trigger="manual", async_driver=True, started_at=NOW, status="running"
        )
        ids["missed"] = await history.record_slot(
            schedule="hourly",
            pipeline="where",
            scheduled_at=NOW - timedelta(days=4),
            status="missed",
        )
    return ids


@pytest.fixture
def filled(base_dir: Path, db_url: str) -> dict[str, int]:
    return asyncio.run(fill(db_url))


def test_no_database_yet_is_an_empty_answer(base_dir: Path, db_path: Path):
    assert as_json(base_dir, "runs") == []
    assert as_json(base_dir, "stats")["schedules"] == []
    human = flowerd_here(base_dir, "runs")
    assert human.returncode == 0 and "no runs" in human.stdout
    assert not db_path.exists(), "a read-only command must not create the database"


def test_runs_json_is_the_contract_newest_first(base_dir: Path, filled: dict):
    rows = as_json(base_dir, "runs")
    assert len(rows) == 7
    assert all(CONTRACT_KEYS <= set(row) for row in rows)
    assert rows[0]["id"] == filled["manual"]
    assert rows[0]["schedule"] is None and rows[0]["trigger"] == "manual"
    failed = next(row for row in rows if row["id"] == filled["nightly-2"])
    assert failed["error"] == {"type": "ValueError", "message": "bad", "traceback": "Traceback: x"}
    assert failed["scheduled_at"].endswith("+00:00") and failed["duration_s"] == 2.0
    assert failed["inputs"] == {"name": "W", "token": "***"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--schedule", "nightly"], ["nightly-0", "nightly-1", "nightly-2", "nightly-3"]),
        (["--schedule", "nightly", "--status", "failed"], ["nightly-2"]),
        (["--pipeline", "where"], ["hourly", "missed"]),
        (["--status", "missed"], ["missed"]),
        (["--trigger", "catchup"], ["hourly"]),
        (["--trigger", "manual"], ["manual"]),
        (["--since", "90m"], ["manual", "nightly-0", "nightly-1"]),
        (["--until", "2d", "--since", "5d"], ["hourly", "missed"]),
        (["--schedule", "nightly", "--limit", "2"], ["nightly-0", "nightly-1"]),
    ],
)
def test_runs_filters(base_dir: Path, filled: dict, args: list[str], expected: list[str]):
    ids = [row["id"] for row in as_json(base_dir, "runs", *args)]
    assert ids == [filled[name] for name in expected]


def test_schedule_not_known_is_an_error(base_dir: Path, filled: dict):
    done = flowerd(base_dir, "runs", "--schedule", "nosuch")
    assert (done.returncode, done.stdout) == (1, "")
    assert "no schedule 'nosuch'" in done.stderr and "nightly" in done.stderr


async def fill_around_midnight(db_url: str) -> dict[str, int]:
    """nightly runs at 23:30 Berlin on Dec 3 and Dec 4, and 00:30 on Dec 5."""
    ids = {}
    async with History.open(db_url) as history:
        for name, slot in (
            ("dec3", "2026-12-03T22:30:00+00:00"),
            ("dec4", "2026-12-04T22:30:00+00:00"),
            ("dec5", "2026-12-04T23:30:00+00:00"),
        ):
            ids[name] = await history.record_slot(
                schedule="nightly",
                pipeline="hello_world",
                scheduled_at=datetime.fromisoformat(slot),
                status="missed",
            )
    return ids


def test_a_date_as_until_includes_that_whole_day(base_dir: Path, db_url: str):
    ids = asyncio.run(fill_around_midnight(db_url))
    berlin = {"FLOWERD_TIMEZONE": "Europe/Berlin"}  # dates and naive times: that zone

    def found(*args: str) -> list[int]:
        done = flowerd_here(base_dir, "runs", *args, "--json", env=berlin)
        assert done.returncode == 0, done.stderr
        return [row["id"] for row in json.loads(done.stdout)]

    assert found("--since", "2026-12-04", "--until", "2026-12-04") == [ids["dec4"]]
    assert found("--until", "2026-12-04") == [ids["dec4"], ids["dec3"]]
    assert found("--since", "2026-12-05") == [ids["dec5"]]
    assert found("--until", "2026-12-04T23:30") == [ids["dec3"]]  # a time: the bound


def test_since_takes_iso_times(base_dir: Path, filled: dict):
    since = (NOW - timedelta(minutes=30)).astimezone().isoformat()
    ids = [row["id"] for row in as_json(base_dir, "runs", "--since", since)]
    assert ids == [filled["manual"], filled["nightly-0"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "--status", "fialed"], "did you mean 'failed'"),
        (["runs", "--trigger", "cron"], "unknown trigger"),
        (["runs", "--since", "yesterday"], "--since"),
        (["runs", "--until", "2026-13-40"], "--until"),
        (["runs", "--limit", "-1"], "--limit"),
        (["stats", "--since", "soon"], "--since"),
        (["db", "prune", "--older-than", "a while"], "--older-than"),
    ],
)
def test_bad_input_exits_2_with_one_line(base_dir: Path, filled: dict, args, message):
    done = flowerd(base_dir, *args)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_runs_show(base_dir: Path, filled: dict):
    doc = as_json(base_dir, "runs", "show", str(filled["nightly-2"]))
    assert CONTRACT_KEYS <= set(doc) and doc["status"] == "failed" and doc["attempts"] == 2
    human = flowerd_here(base_dir, "runs", "show", str(filled["nightly-2"]))
    assert human.returncode == 0
    assert "ValueError: bad" in human.stdout and "Traceback: x" in human.stdout


def test_runs_show_unknown_id_exits_1(base_dir: Path, filled: dict):
    done = flowerd(base_dir, "runs", "show", "4242")
    assert done.returncode == 1
    assert "no run 4242" in done.stderr and "Traceback" not in done.stderr


def test_human_table_has_statuses_and_relative_times(base_dir: Path, filled: dict):
    done = flowerd_here(base_dir, "runs", "--schedule", "nightly")
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout and "success" in done.stdout
    assert "2h ago" in done.stdout and "ValueError: bad" in done.stdout


def test_stats(base_dir: Path, filled: dict):
    (base_dir / "schedules").mkdir(exist_ok=True)
    (base_dir / "schedules" / "jobs.toml").write_text(
        '[nightly]\npipeline = "hello_world"\ncron = "0 3 * * *"\n\n'
        '[fresh]\npipeline = "hello_world"\ninterval = "5m"\n'
    )
    doc = as_json(base_dir, "stats")
    by_id = {row["schedule"]: row for row in doc["schedules"]}
    nightly = by_id["nightly"]
    assert (nightly["runs"], nightly["successes"], nightly["failures"]) == (4, 3, 1)
    assert nightly["success_rate"] == 0.75
    assert nightly["p50_s"] == pytest.approx(2.0, abs=0.002)
    assert nightly["last_status"] == "success"
    assert by_id["hourly"]["missed"] == 1 and by_id["hourly"]["next_fire"] is None
    assert by_id["fresh"]["runs"] == 0  # configured, never run yet
    if nightly["next_fire"] is not None:  # blank until daemon.schedule.firetimes can say
        assert datetime.fromisoformat(nightly["next_fire"]) > NOW
    assert {row["name"] for row in doc["pipelines"]} == {"hello_world", "where", "adhoc"}
    human = flowerd_here(base_dir, "stats")
    assert human.returncode == 0 and "nightly" in human.stdout and "75%" in human.stdout


def test_stats_with_invalid_schedule_files_still_answers(base_dir: Path, filled: dict):
    (base_dir / "schedules").mkdir(exist_ok=True)
    (base_dir / "schedules" / "broken.toml").write_text("[nightly]\ncron = \n")
    doc = as_json(base_dir, "stats", "--since", "1d")
    assert {row["schedule"]: row["next_fire"] for row in doc["schedules"]} == {"nightly": None}


def test_corrupt_database_exits_1_naming_the_file(base_dir: Path, db_path: Path):
    db_path.parent.mkdir()
    db_path.write_bytes(b"garbage" * 1000)
    for args in (["runs"], ["runs", "show", "1"], ["stats"], ["db", "upgrade"]):
        done = flowerd(base_dir, *args)
        assert done.returncode == 1, (args, done)
        assert str(db_path) in done.stderr and "Traceback" not in done.stderr


def test_db_upgrade_then_prune(base_dir: Path, db_path: Path, db_url: str):
    done = flowerd_here(base_dir, "db", "upgrade")
    assert done.returncode == 0 and "head" in done.stdout and db_path.exists()
    nothing = flowerd_here(base_dir, "db", "prune", "--older-than", "30d")
    assert nothing.returncode == 0 and "no finished runs before" in nothing.stdout

    async def old_and_new() -> None:
        async with History.open(db_url) as history:
            for days in (60, 45, 1):
                slot = NOW - timedelta(days=days)
                run_id = await history.claim(
                    pipeline="p",
                    trigger="schedule",
                    schedule="s",
                    scheduled_at=slot,
                    async_driver=True,
                )
                await history.finish(run_id, status="success", finished_at=slot, attempts=1)

    asyncio.run(old_and_new())
    done = flowerd_here(base_dir, "db", "prune", "--older-than", "30d", "--yes")
    assert done.returncode == 0 and "deleted 2" in done.stdout
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    conn.close()


def test_db_prune_without_a_database(base_dir: Path, db_path: Path):
    done = flowerd_here(base_dir, "db", "prune", "--older-than", "7d")
    assert done.returncode == 0 and "nothing to prune" in done.stdout
    assert not db_path.exists()


CHECK_IMPORTS = """
import sys
from daemon import cli
sys.argv = ["flowerd", "--base-dir", sys.argv[1], *sys.argv[2:]]
try:
    cli.main()
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(m for m in ("hamilton", "pandas", "numpy") if m in sys.modules)
print(",".join(heavy) or "none", file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["runs", "--json"], ["runs", "show", "1"], ["stats"]])
def test_read_commands_do_not_import_hamilton(base_dir: Path, filled: dict, args: list[str]):
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, str(base_dir), *args],
        capture_output=True,
        text=True,
        timeout=bound(30),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "none"


def test_db_flag_takes_a_plain_path(tmp_path: Path, base_dir: Path, filled: dict, db_path: Path):
    other = tmp_path / "elsewhere.db"
    db_path.rename(other)
    done = subprocess.run(
        [FLOWERD, "--base-dir", str(base_dir), "--db", str(other), "runs", "--json"],
        capture_output=True,
        text=True,
        timeout=bound(30),
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 7


HEAVY = ("hamilton", "apscheduler", "alembic", "rich", "aiosqlite", "greenlet")


@pytest.mark.parametrize("args", [["runs", "--limit", "50"], ["stats"], ["runs", "show", "1"]])
def test_reading_commands_import_only_what_they_need(base_dir: Path, filled: dict, args):
    """The reading commands start fast (issue 12: `runs` <= 0.25 s as a whole command):
    `python -X importtime` showed these packages' cost; none is needed to print JSON."""
    code = (
        "import sys\nfrom daemon.cli import main\n"
        f"sys.argv = ['flowerd', '--base-dir', {str(base_dir)!r}, *{args!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}), "
        "sorted(m for m in sys.modules if m.startswith(('sqlalchemy.orm', 'sqlalchemy.ext'))),"
        " file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=bound(60)
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[] []", done.stderr
