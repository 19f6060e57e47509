"""`on_file` with a real `flowerd serve`: files dropped at once (renamed in, written slowly
in chunks, plain writes) each run once with the right `trigger_path`; files that landed
while no daemon ran run at start (not under catchup = "none"); a paused schedule keeps
events up to max_pending (then Overflow rows) and runs them on resume."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.contract import bound
from tests.contract import flowerd as cli
from tests.serve import Served, make_project, runs, wait_for

SOAK = bool(os.environ.get("FLOWERD_SOAK"))

ECHO = """
def seen(trigger_path: str, run_id: int) -> str:
    return trigger_path
"""


def schedules(catchup: str = "latest", settle: str = "0.3s", more: str = "") -> str:
    return f"""
[inbox]
pipeline = "echo_path"
final_vars = ["seen"]
async_driver = false
catchup = "{catchup}"
on_file = {{ path = "inbox", pattern = "*.csv", settle = "{settle}" }}
{more}
"""


def project(tmp_path: Path, **kw) -> Path:
    base = make_project(tmp_path / "p", schedules(**kw), echo_path=ECHO)
    (base / "inbox").mkdir()
    (base / "flowerd.toml").write_text('http = "off"\n')
    return base


def drop(inbox: Path, count: int, start: int = 0) -> list[Path]:
    """`count` files, a third each: renamed in (atomic), written slowly in chunks (each
    gap well under `settle`), plain writes. Also noise that does not match."""
    paths, slow = [], []
    for i in range(start, start + count):
        path = inbox / f"f{i:04d}.csv"
        paths.append(path)
        if i % 3 == 0:
            tmp = inbox / f".f{i:04d}.part"
            tmp.write_text(f"{i}\n" * 100)
            tmp.rename(path)
        elif i % 3 == 1:
            slow.append(path)
        else:
            path.write_text(f"{i}\n")
    (inbox / "ignored.txt").write_text("not a csv")

    def chunks(path: Path) -> None:
        with open(path, "w") as out:
            for n in range(4):
                out.write(f"chunk {n}\n" * 50)
                out.flush()
                time.sleep(0.05)

    threads = [threading.Thread(target=chunks, args=(p,)) for p in slow]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return paths


def _ok(base: Path, *args: str) -> str:
    done = cli(base, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def file_rows(base: Path) -> list:
    return [r for r in runs(base) if r.trigger == "file"]


def check_once(base: Path, paths: list[Path], *, ended=("success",)) -> dict:
    """Every file one row, none twice; returns the counts the closing note gives."""
    rows = file_rows(base)
    by_path = Counter(r.event["path"] for r in rows)
    wanted = {str(p.resolve()) for p in paths}
    report = {
        "files": len(wanted),
        "rows": len(rows),
        "doubled": sum(n - 1 for n in by_path.values()),
        "lost": len(wanted - set(by_path)),
        "strangers": len(set(by_path) - wanted),
    }
    assert report == {**report, "doubled": 0, "lost": 0, "strangers": 0}, report
    assert {r.status for r in rows} <= set(ended), Counter(r.status for r in rows)
    for row in rows:
        if row.status == "success":
            assert row.result == {"seen": row.event["path"]}  # trigger_path right
    return report


def _all_ran(base: Path, count: int):
    def done():
        rows = file_rows(base)
        return len(rows) >= count and all(r.status not in ("queued", "running") for r in rows)

    return done


@pytest.mark.parametrize("count", [pytest.param(200, marks=pytest.mark.slow), 12])
def test_files_dropped_at_once_each_run_once(tmp_path, count):
    base = project(tmp_path)
    (base / "flowerd.toml").write_text('http = "127.0.0.1:0"\n')
    with Served(base) as served:
        served.wait_ready()
        paths = drop(base / "inbox", count)
        wait_for(_all_ran(base, count), timeout_s=60, what=f"{count} file runs")
        # written again: a new identity, a new event; touched without change: nothing
        paths[0].write_text("new content\n")
        wait_for(_all_ran(base, count + 1), timeout_s=20, what="the rewritten file's run")
        # the watched directory goes and comes back: the watch is set up again, rescanned
        shutil.rmtree(base / "inbox")
        (base / "inbox").mkdir()
        back = drop(base / "inbox", 1, start=900)
        wait_for(_all_ran(base, count + 2), timeout_s=30, what="a file after the watch was lost")
        time.sleep(1.0)  # a second look: nothing more arrives
        metrics = urllib.request.urlopen(f"{served.ask('status')['http']}/metrics").read().decode()
        assert f'flowerd_events_total{{kind="file",schedule="inbox"}} {count + 2}.0' in metrics
        assert f"flowerd_event_start_seconds_count {count + 2}.0" in metrics
        assert served.stop() == 0
    assert "the watch on" in served.log and "is lost" in served.log
    rows = file_rows(base)
    assert len(rows) == count + 2
    assert str(back[0].resolve()) in {r.event["path"] for r in rows}
    assert Counter(r.event["path"] for r in rows)[str(paths[0].resolve())] == 2
    assert all(r.status == "success" for r in rows)
    event = rows[0].to_json()["event"]
    assert set(event) == {"kind", "key", "path", "received_at"}
    assert event["kind"] == "file" and event["key"].startswith(event["path"] + "|")
    listed = json.loads(_ok(base, "runs", "--trigger", "file", "--json"))
    assert len(listed) == count + 2


def test_files_that_landed_while_no_daemon_ran_run_at_start_not_under_catchup_none(tmp_path):
    """Two schedules, one daemon: `inbox` (catchup latest) runs what was there at start,
    `quiet` (catchup none) only what lands after; a second start runs nothing again."""
    base = project(tmp_path)
    (base / "quiet").mkdir()
    quiet = schedules(catchup="none").replace("[inbox]", "[quiet]").replace('"inbox"', '"quiet"')
    (base / "schedules" / "quiet.toml").write_text(quiet)
    paths = drop(base / "inbox", 4)
    drop(base / "quiet", 2)
    with Served(base) as served:
        served.wait_ready()
        late = drop(base / "quiet", 1, start=50)
        wait_for(_all_ran(base, 5), timeout_s=30, what="the files there at start, the late one")
        assert served.stop() == 0
    rows = file_rows(base)
    assert [r.event["path"] for r in rows if r.schedule == "quiet"] == [str(late[0].resolve())]
    check_once(base, paths + late)
    with Served(base) as served:  # the same files again: their rows are there, none runs
        served.wait_ready()
        more = drop(base / "inbox", 1, start=100)
        wait_for(_all_ran(base, 6), timeout_s=30, what="the new file")
        assert served.stop() == 0
    assert check_once(base, paths + late + more)["rows"] == 6


def test_paused_schedule_keeps_events_up_to_max_pending(tmp_path):
    base = project(tmp_path, more="max_pending = 2")
    with Served(base) as served:
        served.wait_ready()
        _ok(base, "pause", "inbox")
        paths = drop(base / "inbox", 3)
        wait_for(lambda: len(file_rows(base)) == 3, timeout_s=30, what="3 event rows")
        statuses = Counter(r.status for r in file_rows(base))
        assert statuses == {"queued": 2, "skipped": 1}, statuses
        overflow = next(r for r in file_rows(base) if r.status == "skipped")
        assert overflow.error.type == "Overflow" and "max_pending" in overflow.error.message
        shown = json.loads(_ok(base, "schedules", "--json"))
        assert shown[0]["pending"] == 2 and shown[0]["on_file"]["pattern"] == "*.csv"
        _ok(base, "resume", "inbox")
        wait_for(_all_ran(base, 3), timeout_s=30, what="the held events after resume")
        assert served.stop() == 0
    check_once(base, paths, ended=("success", "skipped"))
    assert Counter(r.status for r in file_rows(base)) == {"success": 2, "skipped": 1}


def test_a_watch_that_is_down_is_said_in_status_and_healthz_until_it_is_back(tmp_path):
    base = project(tmp_path)
    shutil.rmtree(base / "inbox")  # not there (yet): the watch cannot be set up
    (base / "flowerd.toml").write_text('http = "127.0.0.1:0"\n')
    with Served(base) as served:
        served.wait_ready()
        health = wait_for(
            lambda: (h := served.ask("status")["health"])["incoming"] != "ok" and h,
            what="the watch said down",
        )
        assert "inbox: the watch on" in health["incoming"] and "down since" in health["incoming"]
        url = served.ask("status")["http"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/healthz", timeout=bound(10))
        assert refused.value.code == 503 and b"incoming: inbox" in refused.value.read()
        (base / "inbox").mkdir()
        wait_for(lambda: served.ask("status")["health"]["incoming"] == "ok", timeout_s=30,
                 what="the watch back")  # fmt: skip
        drop(base / "inbox", 1)
        wait_for(_all_ran(base, 1), timeout_s=30, what="a file after the watch came back")
        assert urllib.request.urlopen(f"{url}/healthz", timeout=bound(10)).read() == b"ok\n"
        assert served.stop() == 0
