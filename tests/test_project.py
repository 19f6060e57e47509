"""A wrong path is an error, one daemon per project, and the CLI finds the service's
history (issue 15, items 1 and 4) -- through the real CLI and a real `serve`."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.contract import FLOWERD, bound
from tests.serve import Served, cli, make_project

HELLO = """
[hello]
pipeline = "hello_world"
cron = "@yearly"
final_vars = ["full_greeting"]
"""


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (("validate",), "missing"),
        (("serve",), "empty"),
        (("schedules",), "missing"),
        (("run", "hello_world"), "empty"),
        (("runs",), "empty"),
    ],
)
def test_a_base_dir_that_is_no_project_is_an_error_naming_what_is_missing(tmp_path, args, where):
    missing = tmp_path / "no" / "such" / "dir"
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli(missing if where == "missing" else empty, *args)
    assert done.returncode == 2, done.stdout
    if where == "missing":
        assert f"--base-dir {missing} does not exist" in done.stderr
    else:
        assert f"--base-dir {empty} is not a flowerd project: it has no " in done.stderr
    assert "Traceback" not in done.stderr
    assert list(empty.iterdir()) == []  # nothing created
    assert not missing.exists()


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_a_named_history_that_does_not_exist_is_an_error_for_reading_commands(tmp_path, how):
    base = make_project(tmp_path / "p", HELLO)
    typo = tmp_path / "histroy.db"
    flags, env = (), {}
    if how == "flag":
        flags = ("--db", str(typo))
    elif how == "env":
        env = {"FLOWERD_DATABASE_URL": str(typo)}
    else:
        (base / "flowerd.toml").write_text(f'database_url = "{typo}"\n')
    commands = [("runs",), ("stats",), ("runs", "show", "1"), ("runs", "--json")]
    for args in commands if how == "flag" else commands[:1]:
        done = cli(base, *flags, *args, env=env)
        assert done.returncode == 1, (args, done.stdout)
        assert done.stderr.strip() == f"flowerd: no such history: {typo}", args
        assert done.stdout == ""
    assert not typo.exists()
    if how == "flag":
        done = cli(base, *flags, "run", "hello_world", env=env)  # run creates it
        assert done.returncode == 0, done.stderr
        assert cli(base, *flags, "runs", env=env).returncode == 0


def test_db_upgrade_creates_a_named_history(tmp_path):
    base = make_project(tmp_path / "p", HELLO)
    new = tmp_path / "new.db"
    done = cli(base, "--db", str(new), "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert new.exists()


def test_a_second_daemon_on_the_same_project_is_refused_even_with_another_db(tmp_path):
    base = make_project(tmp_path / "p", HELLO)
    with Served(base) as first:
        first.wait_ready()
        second = cli(base, "--db", str(tmp_path / "other.db"), "serve", timeout_s=60)
        assert first.stop() == 0
    assert second.returncode == 1
    assert f"pid {first.proc.pid} on " in second.stderr
    assert f"already serves the project {base}" in second.stderr
    assert "Traceback" not in second.stderr


def test_service_install_with_a_path_writes_that_file_alone(tmp_path):
    base = make_project(tmp_path / "p", HELLO)
    (base / "flowerd.toml").write_text('timezone = "UTC"')
    unit = tmp_path / "flowerd.service"
    done = subprocess.run(
        [FLOWERD, "--base-dir", str(base), "service", "install", "--path", str(unit)],
        capture_output=True,
        text=True,
        timeout=bound(30),
        env={k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")},
    )
    assert done.returncode == 0, done.stderr
    assert (base / "flowerd.toml").read_text() == 'timezone = "UTC"'  # untouched
    assert not (base / ".flowerd").exists()  # no lock, no history: nothing but the unit
    service_db = "/var/lib/flowerd/p/history.db"
    assert f"FLOWERD_DATABASE_URL=sqlite+aiosqlite:///{service_db}" in unit.read_text()
    assert f"`flowerd --db {service_db} runs` reads it" in done.stdout
    assert "systemctl enable --now flowerd-p" in done.stdout
    runs = cli(base, "runs")  # the project's own history, as before
    assert runs.returncode == 0 and "no such history" not in runs.stderr
