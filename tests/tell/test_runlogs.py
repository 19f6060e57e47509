"""Each run's log: captured per run (contextvars), bounded, kept in the history, shown by
`flowerd runs logs` -- with real Hamilton runs, a real SQLite history, a real daemon."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import history as history_module
from daemon.history import History
from daemon.pipeline import Pipelines, RunConfig
from daemon.runner.runner import Runner
from daemon.settings import sqlite_url
from daemon.tell.runlogs import LINE_OVERHEAD_BYTES, RunLog, RunLogs
from tests.contract import FLOWERD, bound
from tests.serve import Served, cli, cli_here, make_project, rows_where, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _info(caplog):
    caplog.set_level(logging.INFO)  # as the daemon's root logger: flowerd's own lines too


TALKER = """
import asyncio
import logging

logger = logging.getLogger(__name__)

async def talked(who: str, n: int = 5) -> int:
    for i in range(n):
        logger.info("%s logs %d", who, i)
        print(f"{who} prints {i}")
        await asyncio.sleep(0.01)
    logger.debug("%s debug line", who)
    return n
"""

THREADS = """
import contextvars
import logging
import sys
import threading

logger = logging.getLogger(__name__)

def threaded(n: int = 3) -> int:
    for i in range(n):
        logger.warning("sync line %d", i)
    print("sync print", file=sys.stderr)
    copied = threading.Thread(target=contextvars.copy_context().run, args=(print, "copied"))
    bare = threading.Thread(target=print, args=("bare thread line",))
    for thread in (copied, bare):
        thread.start()
        thread.join()
    return n
"""

FLOOD = """
def flooded(lines: int = 30000) -> int:
    for i in range(lines):
        print(f"line {i:06d} " + "x" * 60)
    raise RuntimeError("the end is where the error is")
"""

SLOW = """
import asyncio
import logging

logger = logging.getLogger(__name__)

async def slow(n: int = 12) -> int:
    for i in range(n):
        logger.warning("tick %d", i)
        await asyncio.sleep(0.25)
    return n
"""


async def _runner(base: Path, *, max_bytes: int = 1024 * 1024, threads: int = 1):
    pm = Pipelines(base)
    history = await History.open(sqlite_url(base / "history.db"))
    runner = Runner(pm=pm, history=history, max_concurrent_runs=8, threads=threads)
    keeper = RunLogs(history, max_bytes=max_bytes, flush_every_s=0.2)
    await keeper.attach(runner.events).start()
    return history, runner, keeper


async def _done(history, runner, keeper) -> None:
    await keeper.close()
    runner.close()
    await history.close()


def _messages(lines: list[dict]) -> list[str]:
    return [line["message"] for line in lines]


async def test_interleaved_async_runs_keep_their_own_lines(tmp_path: Path):
    base = make_project(tmp_path, talker=TALKER)
    history, runner, keeper = await _runner(base)
    try:
        cfgs = [
            RunConfig(final_vars=["talked"], inputs={"who": who}, log_level=level)
            for who, level in (("ann", "INFO"), ("bob", "DEBUG"))
        ]
        outcomes = await asyncio.gather(*(runner.run_manual("talker", cfg) for cfg in cfgs))
        await keeper.close()
        ann, bob = [await history.log_lines(o.run_id) for o in outcomes]
    finally:
        await _done(history, runner, keeper)
    for who, lines, other in (("ann", ann, "bob"), ("bob", bob, "ann")):
        text = _messages(lines)
        assert [m for m in text if m.startswith(f"{who} logs")] == [
            f"{who} logs {i}" for i in range(5)
        ]
        assert [m for m in text if m.startswith(f"{who} prints")] == [
            f"{who} prints {i}" for i in range(5)
        ]
        assert not any(other in m for m in text), text
        assert text[0].startswith("run ") and "started" in text[0]
        assert "finished: success" in text[-1]
        assert [line["seq"] for line in lines] == list(range(len(lines)))
    # the run's log_level decides: DEBUG for bob only
    assert "bob debug line" in _messages(bob)
    assert "ann debug line" not in _messages(ann)
    prints = [line for line in ann if line["logger"] == "stdout"]
    assert {line["level"] for line in prints} == {"INFO"}


async def test_a_sync_driver_run_thread_and_what_it_starts(tmp_path: Path, capfd):
    base = make_project(tmp_path, threads=THREADS)
    history, runner, keeper = await _runner(base)
    try:
        cfg = RunConfig(final_vars=["threaded"], async_driver=False)
        outcome = await runner.run_manual("threads", cfg)
        assert outcome.error is None
        await keeper.close()
        lines = await history.log_lines(outcome.run_id)
    finally:
        await _done(history, runner, keeper)
    text = _messages(lines)
    assert [m for m in text if m.startswith("sync line")] == [f"sync line {i}" for i in range(3)]
    stderr = [line for line in lines if line["logger"] == "stderr"]
    assert [(line["level"], line["message"]) for line in stderr] == [("WARNING", "sync print")]
    assert "copied" in text  # a thread started in a copy of the run's context
    assert "bare thread line" not in text  # a bare thread: the daemon's own output
    assert "bare thread line" in capfd.readouterr().out


async def test_the_cut_keeps_head_and_tail_and_says_so(tmp_path: Path):
    base = make_project(tmp_path, flood=FLOOD)
    history, runner, keeper = await _runner(base)
    try:
        cfg = RunConfig(final_vars=["flooded"], async_driver=False)
        outcome = await runner.run_manual("flood", cfg)
        await keeper.close()
        lines = await history.log_lines(outcome.run_id)
    finally:
        await _done(history, runner, keeper)
    marker = [line for line in lines if line["logger"] == "daemon.runlogs"]
    kept = sum(
        len(line["message"].encode()) + len(line["logger"]) + LINE_OVERHEAD_BYTES
        for line in lines
        if line not in marker
    )
    assert 1000_000 < kept <= 1024 * 1024
    text = _messages(lines)
    assert text[1].startswith("line 000000 ")  # the head (after flowerd's start line)
    assert any(m.startswith("line 029999 ") for m in text)  # the tail, to its last line
    assert "finished: failed" in text[-2] and "the end is where the error is" in text[-2]
    assert text[-1].startswith("the run's error") and text[-1].endswith("where the error is")
    markers = [line for line in lines if line["logger"] == "daemon.runlogs"]
    assert len(markers) == 1 and "cut here" in markers[0]["message"]
    assert "max_log_bytes = 1,048,576" in markers[0]["message"]
    cut = text.index(markers[0]["message"])
    assert text[cut - 1] < text[cut + 1]  # head, marker, tail, in seq order
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)


def test_runlog_bounds_one_huge_line_and_holds_unfinished_output():
    run = RunLog(7, max_bytes=4096)
    run.write("stdout", "no newline yet")
    run.add(time.time(), "INFO", "x", "y" * 100_000)
    lines = run.take(final=True)
    assert "more characters not kept" in lines[0]["message"]
    assert len(lines[0]["message"]) < 4096
    assert lines[-1]["message"] == "no newline yet" and lines[-1]["logger"] == "stdout"


async def test_prune_deletes_the_logs_of_pruned_runs(tmp_path: Path):
    base = make_project(tmp_path, talker=TALKER)
    history, runner, keeper = await _runner(base)
    try:
        cfg = RunConfig(final_vars=["talked"], inputs={"who": "old"})
        first = await runner.run_manual("talker", cfg)
        await asyncio.sleep(0.05)
        between = datetime.now(UTC)
        second = await runner.run_manual("talker", cfg)
        await keeper.close()
        assert len(await history.log_lines(first.run_id)) > 5
        assert await history.prune(before=between) == 1
        assert await history.log_lines(first.run_id) == []
        assert len(await history.log_lines(second.run_id)) > 5
    finally:
        await _done(history, runner, keeper)


async def test_upgrade_keeps_runs_and_adds_run_logs(db_url: str, db_path: Path):
    await history_module.upgrade(db_url, "20261130_01")
    async with History.open(db_url, migrate=False) as old:
        run_id = await old.claim(pipeline="p", trigger="manual", async_driver=True)
    assert await history_module.upgrade(db_url) == history_module.SCHEMA_REVISION
    async with History.open(db_url) as new:
        assert (await new.get_run(run_id)).pipeline == "p"
        await new.queue_log_lines(
            [
                dict(
                    run_id=run_id,
                    seq=0,
                    time=datetime.now(UTC),
                    level="INFO",
                    logger="x",
                    message="kept",
                )
            ]  # fmt: skip
        )
        assert _messages(await new.log_lines(run_id)) == ["kept"]
    await history_module.downgrade(db_url, "20261130_01")
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "run_logs" not in tables and "runs" in tables


def test_flowerd_run_json_keeps_stdout_for_the_json(tmp_path: Path):
    base = make_project(tmp_path, talker=TALKER)
    done = cli(base, "run", "talker", "--input", "who=cli", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # only the JSON: the prints went to the run's log
    shown = cli_here(base, "runs", "logs", str(record["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    lines = json.loads(shown.stdout)
    assert set(lines[0]) == {"time", "level", "logger", "message"}
    assert "cli prints 4" in [line["message"] for line in lines]
    show = cli_here(base, "runs", "show", str(record["id"]))
    assert "cli prints 4" in show.stdout and "log line(s)" in show.stdout
    assert cli_here(base, "runs", "logs", "999").returncode == 1
    followed = cli_here(base, "runs", "logs", str(record["id"]), "--follow", "--json")
    assert json.loads(followed.stdout) == lines  # streamed item by item: still one list


def test_serve_keeps_run_lines_out_of_its_log_and_follow_streams(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [slow]
        pipeline = "slow"
        at = "2099-01-01T00:00:00+00:00"
        """,
        slow=SLOW,
    )
    with Served(base) as served:
        served.wait_ready()
        served.ask("trigger", schedule="slow")
        row = wait_for(lambda: rows_where(base, status="running"), what="a running run")[0]
        follow = subprocess.run(
            [FLOWERD, "--base-dir", str(base), "runs", "logs", str(row.id), "--follow"],
            capture_output=True, text=True, timeout=bound(60),
        )  # fmt: skip
        ended = rows_where(base, id=row.id)[0]
        assert ended.status == "success"
        assert served.stop() == 0
    out = follow.stdout
    assert [f"tick {i}" in out for i in range(12)] == [True] * 12, out
    assert "finished: success" in out.splitlines()[-1]
    log = served.log
    assert "tick 3" not in log  # the run's own lines are in its log, not the daemon's
    assert f"run {row.id} started" in log and f"run {row.id} finished" in log
