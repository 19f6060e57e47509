"""Events through faults, with real daemons: kill -9 while files land, restart -> every file
one row, none twice; two daemons on one PostgreSQL watching one directory -> each file runs
once, also when one of them is killed mid-way (the other adopts its queued events once its
lease expires). The counts (files / rows / doubled / lost) are printed for the closing note."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from daemon.history import History
from tests import pg
from tests.serve import Served, make_project, runs, wait_for

SOAK = bool(os.environ.get("FLOWERD_SOAK"))

WORK = """
import time


def seen(trigger_path: str) -> str:
    time.sleep(0.02)  # runs queue behind each other (overlap = "queue"): some wait at the kill
    return trigger_path
"""


def _schedule(inbox: Path) -> str:
    return f"""
[inbox]
pipeline = "work"
final_vars = ["seen"]
async_driver = false
on_file = {{ path = "{inbox}", pattern = "*.csv", settle = "0.2s" }}
"""


def _drop_slowly(inbox: Path, names: range, gap_s: float) -> list[Path]:
    paths = []
    for i in names:
        tmp = inbox / f".{i}.part"
        tmp.write_text(f"{i}\n")
        path = inbox / f"f{i:04d}.csv"
        tmp.rename(path)
        paths.append(path)
        time.sleep(gap_s)
    return paths


def _report(rows: list, paths: list[Path]) -> dict:
    by_path = Counter(r.event["path"] for r in rows if r.trigger == "file")
    wanted = {str(p.resolve()) for p in paths}
    return {
        "files": len(wanted),
        "rows": sum(by_path.values()),
        "doubled": sum(n - 1 for n in by_path.values()),
        "lost": len(wanted - set(by_path)),
        "statuses": dict(Counter(r.status for r in rows)),
    }


def _adopted(log: str) -> int:
    """How many queued events a daemon took over from a dead one (its log says so)."""
    marker = " event(s) recorded by a daemon that stopped before running them"
    return sum(
        int(line.split(marker)[0].rsplit(" ", 1)[-1]) for line in log.splitlines() if marker in line
    )


def _settled(rows_of, count: int):
    def done():
        rows = [r for r in rows_of() if r.trigger == "file"]
        return len(rows) >= count and all(r.status not in ("queued", "running") for r in rows)

    return done


@pytest.mark.parametrize("count", [pytest.param(100, marks=pytest.mark.slow), 30])
def test_kill9_while_files_land_then_restart_runs_each_once(tmp_path, count):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base = make_project(tmp_path / "p", _schedule(inbox), work=WORK)
    (base / "flowerd.toml").write_text('http = "off"\n')
    paths: list[Path] = []
    served = Served(base)
    served.wait_ready()
    lander = threading.Thread(
        target=lambda: paths.extend(_drop_slowly(inbox, range(count), 0.02)), daemon=True
    )
    lander.start()
    wait_for(lambda: len(runs(base)) >= count // 3, timeout_s=30, what="a third recorded")
    served.proc.send_signal(signal.SIGKILL)  # while files still land and runs still queue
    served.wait()
    lander.join()
    with Served(base) as again:
        again.wait_ready()
        wait_for(_settled(lambda: runs(base), count), timeout_s=60, what="every file's run")
        assert again.stop() == 0
    report = {**_report(runs(base), paths), "adopted": _adopted(again.log)}
    print(f"kill -9 trial: {report}")
    assert report["doubled"] == 0 and report["lost"] == 0, report
    assert set(report["statuses"]) <= {"success", "crashed"}, report  # crashed: mid-run at the kill
    assert report["statuses"].get("crashed", 0) <= 1, report


@pg.needs_postgres
@pytest.mark.timeout(600)
@pytest.mark.parametrize("count", [pytest.param(200, marks=pytest.mark.slow), 40])
def test_two_daemons_on_postgresql_watching_one_directory_run_each_file_once(
    tmp_path, pg_url, count
):
    inbox = tmp_path / "shared-inbox"
    inbox.mkdir()
    bases = []
    for name in ("a", "b"):
        base = make_project(tmp_path / name, _schedule(inbox), work=WORK)
        (base / "flowerd.toml").write_text(
            f'database_url = "{pg_url}"\nlease_s = 3\nhttp = "off"\n'
        )
        bases.append(base)

    def rows():
        async def query():
            async with History.open(pg_url, readonly=True) as history:
                return await history.list_runs(limit=100_000)

        return asyncio.run(query())

    first, second = Served(bases[0]), Served(bases[1])
    with first, second:
        first.wait_ready()
        second.wait_ready()
        paths = _drop_slowly(inbox, range(count // 2), 0.005)
        wait_for(lambda: len(rows()) >= count // 4, timeout_s=30, what="a quarter recorded")
        first.proc.send_signal(signal.SIGKILL)  # its queued events: the other adopts them
        first.wait()
        paths += _drop_slowly(inbox, range(count // 2, count), 0.005)
        wait_for(_settled(rows, count), timeout_s=90, what="every file's run")
        assert second.stop() == 0
    found = rows()
    report = {**_report(found, paths), "adopted": _adopted(second.log)}
    daemons = Counter(r.instance_id for r in found)
    print(f"two-daemon trial: {report}, rows per daemon: {dict(daemons)}")
    assert report["doubled"] == 0 and report["lost"] == 0, report
    assert set(report["statuses"]) <= {"success", "crashed"}, report


pg_url = pg.pg_url
