"""Where an operator used to get a traceback, one or two sentences naming the path and
what to do: a read-only project for an unprivileged user, another user's daemon socket, a
symlink loop among the schedule files. Real processes, a real unprivileged user (CI runs
as root; the tests skip elsewhere)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.contract import bound, flowerd
from tests.serve import Served, make_project, wait_for

pytestmark = pytest.mark.timeout(240)

TICK = """
[tick]
pipeline = "hello_world"
interval = "1h"
"""


REPO = Path(__file__).resolve().parent.parent.parent
ENTRY = "import sys; from daemon.cli import main; sys.argv[0] = 'flowerd'; main()"


def _interpreters() -> list[str]:
    """Pythons of this version the user nobody may execute: the venv's own python often
    lives under /root (pyenv), so a system python of the same minor version, given this
    venv's site-packages, runs the very same flowerd code."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return [os.path.realpath(sys.executable), f"/usr/bin/{version}", f"/usr/local/bin/{version}"]


def _nobody_env() -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWERD_", "PYTHON"))}
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    return {**clean, "HOME": "/", "COLUMNS": "200", "PYTHONPATH": ":".join([str(REPO), *site_dirs])}


def as_nobody(python: str, base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-c", ENTRY, "--base-dir", str(base), *args],
        capture_output=True,
        text=True,
        timeout=bound(60),
        user="nobody",
        env=_nobody_env(),
    )


@pytest.fixture
def open_dir():
    """A directory an unprivileged user can reach (pytest's tmp_path is 0700 root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run flowerd as another user")
    path = Path(tempfile.mkdtemp(prefix="flowerd-plain-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nobody_python(open_dir) -> str:
    """An interpreter with which the user nobody runs this flowerd (or a skip saying why)."""
    for python in _interpreters():
        try:
            probe = as_nobody(python, open_dir, "--version")
        except OSError:
            continue
        if probe.returncode == 0 and "flowerd" in probe.stdout:
            return python
    pytest.skip("no python the user nobody may run can import this flowerd here")


def test_serve_as_a_user_who_may_not_write_the_project_says_so(nobody_python, open_dir):
    base = make_project(open_dir / "project", TICK)
    done = as_nobody(nobody_python, base, "serve")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert str(base / ".flowerd") in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr


def test_status_against_another_users_daemon_names_whose_it_is(nobody_python, open_dir):
    base = make_project(open_dir / "project", TICK)
    with Served(base) as served:
        served.wait_ready()
        for command in (["status"], ["pause", "tick"]):
            done = as_nobody(nobody_python, base, *command)
            assert done.returncode == 1, done.stderr
            assert "belongs to root" in done.stderr and "Traceback" not in done.stderr
        assert served.stop() == 0


def test_a_symlink_loop_among_schedule_files_is_one_line(tmp_path: Path):
    base = make_project(tmp_path, TICK)
    loop = base / "schedules" / "loop.toml"
    loop.symlink_to(loop)
    done = flowerd(base, "validate")
    assert done.returncode == 1
    assert "loop.toml" in done.stderr and "symbolic links" in done.stderr
    assert "Traceback" not in done.stderr
    served = Served(base)
    assert served.wait(timeout_s=30) == 1
    assert "loop.toml" in served.log and "Traceback" not in served.log


def test_sighup_with_a_symlink_loop_keeps_the_schedules_and_says_why(tmp_path: Path):
    base = make_project(tmp_path, TICK)
    with Served(base) as served:
        served.wait_ready()
        loop = base / "schedules" / "loop.toml"
        loop.symlink_to(loop)
        served.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in served.log, timeout_s=20)
        time.sleep(0.5)
        assert [s["id"] for s in served.ask("status")["schedules"]] == ["tick"]
        assert served.stop() == 0
    assert "Task exception was never retrieved" not in served.log
    assert "Traceback" not in served.log


def test_a_read_only_database_ends_start_up_with_one_paragraph(nobody_python, open_dir):
    base = make_project(open_dir / "project", TICK)
    shutil.chown(base, "nobody")
    for path in base.rglob("*"):
        shutil.chown(path, "nobody")
    done = as_nobody(nobody_python, base, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    db = base / ".flowerd" / "history.db"
    for path in db.parent.glob("history.db*"):
        path.chmod(0o444)
    started = time.monotonic()
    done = as_nobody(nobody_python, base, "serve")
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 20
    assert "read-only" in done.stderr and str(db) in done.stderr
    assert "Traceback" not in done.stderr
