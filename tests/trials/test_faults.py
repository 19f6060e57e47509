"""History faults, tried as an operator meets them: a database locked by another process,
a disk that fills up, a stop while the history cannot be written, a start-up that cannot
get at the database. Real `flowerd serve` processes, real SQLite files, real locks, a real
tmpfs for the full disk.

The invariant under every fault: each slot of a schedule is exactly one row (none lost,
none doubled), none is left `running`, and the daemon says what is wrong while it is."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.errors import DaemonNotRunning
from tests.contract import bound, sized
from tests.serve import Served, make_project, runs, wait_for

pytestmark = pytest.mark.timeout(360)
# The trial holds the lock 20 s; `make soak` does, `make test` a sized-down 8 s
# (the writer's busy wait is 2 s, so the outage is seen and held either way).
LOCK_S = sized(8, 20)

TICK = """
[tick]
pipeline = "hello_world"
interval = "1s"
catchup = "all"
"""

BIG_RESULT = """
def blob(size: int = 4096) -> str:
    return "x" * size
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process (a backup, a sqlite3 shell) holding the database's write lock."""
    code = textwrap.dedent(
        f"""
        import sqlite3, sys, time
        conn = sqlite3.connect({str(db)!r}, isolation_level=None, timeout={bound(30)})
        conn.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        time.sleep({seconds})
        conn.execute("ROLLBACK")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.stdout.close()
    return proc


def one_row_per_slot(rows, schedule: str) -> list:
    """Every slot between the first and the last row has exactly one row."""
    slots = sorted(r.scheduled_at for r in rows if r.schedule == schedule)
    assert len(slots) == len(set(slots)), f"{schedule}: a slot has two rows"
    gaps = {b - a for a, b in zip(slots, slots[1:], strict=False)}
    assert gaps <= {timedelta(seconds=1)}, f"{schedule}: slots missing: {sorted(gaps)}"
    return slots


def test_a_locked_database_holds_rows_and_says_so(tmp_path: Path):
    base = make_project(tmp_path, TICK)
    with Served(base) as served:
        served.wait_ready()
        db = served.settings.state_dir / "history.db"
        wait_for(lambda: len(runs(base)) >= 3, what="three rows before the lock")
        locker = hold_lock(db, LOCK_S)
        health = wait_for(
            lambda: (h := served.ask("status")["health"]["history"]) != "ok" and h,
            timeout_s=15,
            what="status to report the history outage",
        )
        assert "unavailable since" in health
        locker.wait(timeout=bound(40))
        wait_for(lambda: served.ask("status")["health"]["history"] == "ok", timeout_s=40)
        time.sleep(2)
        assert served.stop() == 0
    rows = runs(base)
    assert not [r for r in rows if r.status in ("queued", "running")]
    slots = one_row_per_slot(rows, "tick")
    assert slots[-1] - slots[0] >= timedelta(seconds=LOCK_S + 4), "it fired on through the lock"
    log = served.log
    assert "the history cannot be written" in log and "writable again" in log
    assert "Traceback" not in log


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "16m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def use_database(base: Path, db: Path) -> Path:
    """The project's flowerd.toml names the database (the daemon and the test agree)."""
    (base / "flowerd.toml").write_text(f'database_url = "{db}"\n')
    return db


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_holds_rows_and_writes_them_when_space_returns(tmp_path, small_disk):
    base = make_project(
        tmp_path,
        TICK.replace("hello_world", "blob") + 'inputs = { size = 4096 }\nfinal_vars = ["blob"]\n',
        blob=BIG_RESULT,
    )
    use_database(base, small_disk / "history.db")
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base, schedule="tick")) >= 3)
        filler = fill(small_disk)
        wait_for(
            lambda: served.ask("status")["health"]["history"] != "ok",
            timeout_s=30,
            what="status to report the full disk",
        )
        time.sleep(3)  # slots keep firing while nothing can be written
        filler.unlink()
        wait_for(lambda: served.ask("status")["health"]["history"] == "ok", timeout_s=40)
        time.sleep(2)
        assert served.stop() == 0
    rows = runs(base)
    assert not [r for r in rows if r.status in ("queued", "running")]
    one_row_per_slot(rows, "tick")
    assert "full" in served.log


@pytest.mark.slow  # ~50 s: the stop waits out its grace and the held rows' close
def test_past_history_outage_s_the_daemon_exits_non_zero_and_spools(tmp_path, small_disk):
    base = make_project(tmp_path, TICK)
    db = use_database(base, small_disk / "history.db")
    with Served(base, env={"FLOWERD_HISTORY_OUTAGE_S": "4"}) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base)) >= 2)
        filler = fill(small_disk)
        code = served.wait(timeout_s=60)
    assert code != 0, served.log
    assert "history_outage_s" in served.log
    filler.unlink()
    spool = db.with_name(db.name + ".spool")
    with Served(base) as served:  # systemd restarts it
        served.wait_ready()
        time.sleep(1.5)
        assert served.stop() == 0
    assert not spool.exists(), "the spool is written at the next start"
    rows = runs(base)
    assert not [r for r in rows if r.status in ("queued", "running")]
    one_row_per_slot(rows, "tick")


def test_sigterm_during_a_start_up_stuck_on_a_locked_database_exits_in_time(tmp_path: Path):
    base = make_project(tmp_path, TICK)
    with Served(base) as served:  # create and migrate the database once
        served.wait_ready()
        assert served.stop() == 0
    db = base / ".flowerd" / "history.db"
    locker = hold_lock(db, 60)
    try:
        with Served(base) as served:
            wait_for(lambda: "waiting for the history database" in served.log, timeout_s=20)
            started = time.monotonic()
            served.signal(signal.SIGTERM)
            code = served.wait(timeout_s=30)
            took = time.monotonic() - started
    finally:
        locker.kill()
        locker.wait()
    assert code == 0, served.log
    assert took < 5 + 1, f"took {took:.1f} s to stop (shutdown_grace is 5 s)"
    assert "Traceback" not in served.log


def test_a_database_that_stays_locked_ends_start_up_with_one_paragraph(tmp_path: Path):
    base = make_project(tmp_path, TICK)
    with Served(base) as served:
        served.wait_ready()
        assert served.stop() == 0
    locker = hold_lock(base / ".flowerd" / "history.db", 60)
    try:
        with Served(base, env={"FLOWERD_HISTORY_OUTAGE_S": "2"}) as served:
            code = served.wait(timeout_s=40)
    finally:
        locker.kill()
        locker.wait()
    assert code == 1
    assert "stayed locked by another process" in served.log
    assert "Traceback" not in served.log


@pytest.mark.parametrize("where", ["header", "runs", "audit_log"])
def test_a_corrupt_database_stops_the_daemon_with_one_paragraph(tmp_path: Path, where: str):
    """A page wiped: the file's header, or the page of a table. Start-up reads the header
    and the runs, so it stops there; a page nothing reads at start (the audit log's) is
    found when the daemon next writes it -- the audit row of a `pause` -- and it stops
    then, the same way, instead of waiting on an outage that waiting does not mend."""
    base = make_project(tmp_path, TICK)
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base)) >= 5)
        assert served.stop() == 0
    db = base / ".flowerd" / "history.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (page,) = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = ?", (where,)
    ).fetchone() or (1,)
    conn.close()
    with open(db, "r+b") as raw:  # what a failing disk or a bad copy leaves
        raw.seek((page - 1) * page_size)
        raw.write(b"\xff" * page_size)
    with Served(base) as served:
        if where == "audit_log":
            served.wait_ready()
            with contextlib.suppress(OSError, ValueError, DaemonNotRunning):
                served.ask("pause", schedule="tick")
        code = served.wait(timeout_s=30)
    assert code == 1, served.log
    said = served.log.replace(str(tmp_path), "<tmp>")  # the test's own name holds "corrupt"
    assert "corrupt (" in said and "from a backup" in said, said
    assert "Traceback" not in said and "<tmp>/.flowerd/history.db" in said


def test_a_database_path_that_is_a_directory_is_named(tmp_path: Path):
    from tests.contract import flowerd

    base = make_project(tmp_path, TICK)
    (tmp_path / "db").mkdir()
    done = flowerd(base, "--db", str(tmp_path / "db"), "run", "hello_world")
    assert done.returncode == 1
    assert "is a directory" in done.stderr and "Traceback" not in done.stderr


def test_a_large_input_is_stored_as_a_marker_and_the_run_gets_the_real_value(tmp_path: Path):
    from tests.contract import flowerd

    base = make_project(
        tmp_path,
        """
        [big]
        pipeline = "measure"
        interval = "1h"
        inputs = { text = "%s" }
        """
        % ("y" * 1_000_000),
        measure="def length(text: str) -> int:\n    return len(text)\n",
    )
    with Served(base) as served:
        served.wait_ready()
        served.ask("trigger", schedule="big")
        row = wait_for(lambda: [r for r in runs(base) if r.status == "success"])[0]
        assert served.stop() == 0
    assert row.result == {"length": 1_000_000}, "the run computed with the whole value"
    stored = row.inputs["text"]
    assert stored.startswith("<not stored: 1,000,002 bytes") and "sha256" in stored
    db = base / ".flowerd" / "history.db"
    assert db.stat().st_size < 1_000_000
    assert flowerd(base, "runs", "--json").returncode == 0


@pytest.mark.slow  # ~50 s; test_history's spool tests keep the mechanism in make test
def test_a_stop_during_a_lock_spools_the_held_rows_and_the_next_start_writes_them(tmp_path):
    base = make_project(tmp_path, TICK)
    db = base / ".flowerd" / "history.db"
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base)) >= 3)
        locker = hold_lock(db, 60)
        wait_for(lambda: served.ask("status")["health"]["history"] != "ok", timeout_s=15)
        time.sleep(2)
        served.signal(signal.SIGTERM)
        code = served.wait(timeout_s=40)
    assert code == 1, "rows not written: the exit status says so"
    log = served.log
    assert "held in" in log and ".spool" in log
    assert "finished: success" not in log.split("the history cannot be written")[1]
    locker.kill()
    locker.wait()
    with Served(base) as served:
        served.wait_ready()
        time.sleep(1.5)
        assert served.stop() == 0
    assert "held in the spool" in served.log
    assert not db.with_name("history.db.spool").exists()
    rows = runs(base)
    assert not [r for r in rows if r.status in ("queued", "running")]
    one_row_per_slot(rows, "tick")
    assert [r for r in rows if r.error and "history was unavailable" in r.error.message]


def test_a_deleted_database_is_noticed_and_recreated(tmp_path: Path):
    base = make_project(tmp_path, TICK)
    db = base / ".flowerd" / "history.db"
    with Served(base) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base)) >= 2)
        for path in (db, db.with_name("history.db-wal"), db.with_name("history.db-shm")):
            path.unlink(missing_ok=True)
        wait_for(lambda: db.exists() and len(runs(base)) >= 2, timeout_s=20)
        assert served.stop() == 0
    assert "was deleted" in served.log
    assert not [r for r in runs(base) if r.status in ("queued", "running")]


def test_an_outage_exit_waits_only_for_executing_runs(tmp_path: Path):
    """history_outage_s = 5, a 1-second schedule, another process holding the write lock:
    the slots whose claims could not be written never started, so the exit is not held
    for them (shutdown_grace 30 s is for executing pipelines); after the restart every
    slot is one row."""
    base = make_project(tmp_path, TICK)
    db = base / ".flowerd" / "history.db"
    env = {"FLOWERD_HISTORY_OUTAGE_S": "5", "FLOWERD_SHUTDOWN_GRACE": "30"}
    with Served(base, env=env) as served:
        served.wait_ready()
        wait_for(lambda: len(runs(base)) >= 2, what="two rows before the lock")
        locker = hold_lock(db, 120)
        locked_at = time.monotonic()
        try:
            code = served.wait(timeout_s=90)
            took = time.monotonic() - locked_at
        finally:
            locker.kill()
            locker.wait()
    print(f"\nlock -> exit {took:.1f} s (history_outage_s 5, shutdown_grace 30)")
    assert code == 1, served.log
    assert took < 5 + 10, f"the exit took {took:.1f} s after the lock:\n{served.log}"
    with Served(base) as served:
        served.wait_ready()
        time.sleep(1.5)
        assert served.stop() == 0, served.log
    rows = runs(base)
    assert not [r for r in rows if r.status in ("queued", "running")]
    slots = one_row_per_slot(rows, "tick")
    skipped = [r.error.message for r in rows if r.status == "skipped"]
    assert any("waiting for its claim" in m and "locked" in m for m in skipped), skipped
    print(f"slots expected {int((slots[-1] - slots[0]).total_seconds()) + 1} / rows {len(slots)} "
          f"/ doubled {len(slots) - len(set(slots))}")  # fmt: skip
