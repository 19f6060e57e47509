"""`flowerd validate` and `flowerd run` through the real CLI, on real files: the console
script in a process of its own where the process is the point (exit status, `--json` on
stdout), its entry point in this process (cli_here) where what it prints is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.contract import CONTRACT_KEYS, FLOWERD, bound
from tests.serve import Served, cli, cli_here, make_project, runs

BOOM = """
def boom(code: int = 1) -> int:
    raise RuntimeError(f"disk full ({code})")
"""

TYPED = """
def described(count: int, ratio: float, flag: bool, label: str) -> str:
    return f"{count!r} {ratio!r} {flag!r} {label!r}"
"""


def test_validate_accepts_the_repo_examples_without_warnings(tmp_path: Path):
    base = make_project(tmp_path)
    (base / "schedules" / "example.toml").write_text(
        (Path(__file__).parent.parent.parent / "schedules" / "example.toml").read_text()
    )
    done = cli(base, "validate")
    assert done.returncode == 0, done.stderr
    assert "3 schedule(s) valid" in done.stdout and "warning" not in done.stderr


def test_validate_warns_about_sync_pipelines_on_the_async_driver(tmp_path: Path):
    base = make_project(tmp_path, '[hello]\npipeline = "hello_world"\ninterval = "1h"\n')
    done = cli_here(base, "validate")
    assert done.returncode == 0, done.stderr
    assert "test.toml: [hello]" in done.stderr and "only sync functions" in done.stderr


def test_validate_lists_every_problem_with_file_id_and_field(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [missing_var]
        pipeline = "hello_world"
        interval = "1h"
        final_vars = ["full_greting"]

        [refused]
        pipeline = "hello_world"
        interval = "1h"
        cache = true
        """,
    )
    (base / "schedules" / "other.toml").write_text(
        '[needs_input]\npipeline = "typed"\ninterval = "1h"\nasync_driver = false\n'
    )
    (base / "pipelines" / "typed.py").write_text(TYPED)
    done = cli_here(base, "validate")
    assert done.returncode == 1
    err = done.stderr
    assert "test.toml: [missing_var]" in err and "did you mean 'full_greeting'" in err
    assert "other.toml: [needs_input]" in err and "count" in err
    assert "test.toml: [refused]" in err
    assert "Traceback" not in err


def test_run_records_a_manual_run_and_prints_the_result(tmp_path: Path):
    base = make_project(tmp_path)
    done = cli_here(base, "run", "hello_world", "--input", "name=Ada")
    assert done.returncode == 0, done.stderr
    assert "Hello, Ada!" in done.stdout
    (row,) = runs(base)
    assert (row.schedule, row.trigger, row.status, row.pipeline) == (
        None, "manual", "success", "hello_world",
    )  # fmt: skip
    assert row.async_driver and row.inputs == {"name": "Ada"}


def test_run_json_is_the_contract(tmp_path: Path):
    base = make_project(tmp_path)
    done = cli(base, "run", "hello_world", "--sync", "--final-var", "greeting", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert CONTRACT_KEYS <= set(record)
    assert record["async_driver"] is False and record["final_vars"] == ["greeting"]
    assert record["started_at"].endswith("+00:00") and record["error"] is None


def test_run_that_fails_exits_1_and_is_recorded_with_its_error(tmp_path: Path):
    base = make_project(tmp_path, boom=BOOM)
    done = cli(base, "run", "boom", "--input", "code=7", "--json")
    assert done.returncode == 1
    record = json.loads(done.stdout)
    assert record["status"] == "failed"
    assert record["error"]["type"] == "RuntimeError"
    assert record["error"]["message"] == "disk full (7)"
    assert "Traceback" in record["error"]["traceback"]


def test_run_coerces_inputs_to_declared_types(tmp_path: Path):
    base = make_project(tmp_path, typed=TYPED)
    done = cli_here(
        base, "run", "typed", "--sync",
        "--input", "count=3", "--input", "ratio=2", "--input", "flag=yes", "--input", "label=7",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 2.0 True '7'" in done.stdout


def test_run_bad_input_is_refused_without_a_row(tmp_path: Path):
    base = make_project(tmp_path)
    cases = [
        (["run", "helo_world"], 1, "did you mean 'hello_world'"),
        (["run", "../etc/passwd"], 1, "not a plain identifier"),
        (["run", "hello_world", "--final-var", "nope"], 1, "no node 'nope'"),
        (["run", "hello_world", "--input", "nam=1"], 1, "did you mean 'name'"),
        (["run", "hello_world", "--input", "novalue"], 2, "KEY=VALUE"),
    ]
    for index, (args, code, message) in enumerate(cases):
        done = (cli if index in (0, len(cases) - 1) else cli_here)(base, *args)  # 2 processes
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert runs(base) == []


def test_version(tmp_path: Path):
    done = cli(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.startswith("flowerd ")


def test_each_command_registers_from_its_room_and_help_lists_them_all(tmp_path: Path):
    """main() imports only the invoked command's room: ROOMS must name every command,
    and the one it names must register it (checked in a fresh interpreter per room)."""
    import subprocess
    import sys

    from daemon.cli import ALL_ROOMS, ROOMS, command_of

    code = (
        "import sys, typer.main\nfrom daemon.cli import app, register\n"
        "register(sys.argv[1] or None)\n"
        "print(' '.join(sorted(typer.main.get_command(app).commands)))"
    )
    every = subprocess.run([sys.executable, "-c", code, ""], capture_output=True, text=True)
    assert set(every.stdout.split()) == set(ROOMS), every.stderr
    for room in set(ROOMS.values()):
        command = min(name for name, its in ROOMS.items() if its == room)
        done = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True)
        assert command in done.stdout.split(), (room, done.stderr)
    assert set(ROOMS.values()) == set(ALL_ROOMS)
    assert command_of(["--base-dir", "x", "--db=y.db", "--log-level", "DEBUG", "stats"]) == "stats"
    assert command_of(["--db", "runs", "runs"]) == "runs"  # a value, then the command
    assert command_of(["--help"]) is None and command_of(["--version", "runs"]) is None
    assert command_of([]) is None
    listed = cli(tmp_path, "--help").stdout
    assert all(name in listed for name in ROOMS)


def test_schedules_beside_a_daemon_on_sqlite_take_its_state_without_sqlalchemy(tmp_path: Path):
    """With a daemon on SQLite (the only writer of its history), `flowerd schedules` takes
    paused state and pending events from the daemon's answer -- what the history says --
    and never imports SQLAlchemy; stopped, the same from the history itself."""
    base = make_project(
        tmp_path,
        """
        [early]
        pipeline = "hello_world"
        cron = "0 3 * * *"

        [late]
        pipeline = "hello_world"
        cron = "0 4 * * *"
        """,
    )

    def state(listed: list[dict]) -> dict:
        return {r["id"]: (r["paused"], r["paused_reason"], r["pending"]) for r in listed}

    with Served(base) as served:
        served.wait_ready()
        assert cli_here(base, "pause", "early").returncode == 0
        done = subprocess.run(
            [sys.executable, "-X", "importtime", FLOWERD, "--base-dir", str(base)]
            + ["schedules", "--json"],
            capture_output=True,
            text=True,
            timeout=bound(60),
            check=True,
        )
        beside = json.loads(done.stdout)
        assert [r["loaded"] for r in beside] == [True, True]
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
        assert "daemon.cli" in imported and "sqlalchemy" not in imported
        assert served.stop() == 0
    alone = json.loads(cli_here(base, "schedules", "--json").stdout)
    assert (
        state(beside)
        == state(alone)
        == {
            "early": (True, None, None),
            "late": (False, None, None),
        }
    )
