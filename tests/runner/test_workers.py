"""isolation = "process": real worker processes, real signals, real `flowerd serve`.

Hostile pipelines (os._exit, a segfault, SIGKILL as the OOM killer sends it, memory past
memory_limit, a busy loop that ignores both the timeout and SIGTERM and starts a child
that does too, an exception, 50 MB of prints) each fail or time out alone, while a
1-second schedule in the same daemon keeps succeeding in every slot."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon import logs
from daemon.history import History
from daemon.pipeline import Attempts, Pipelines, RunConfig
from daemon.runner.runner import Runner
from daemon.runner.workers import WorkerPool, WorkerRunError
from daemon.schedule import Schedule
from daemon.settings import sqlite_url
from tests.serve import Served, make_project, runs, wait_for

REPO = Path(__file__).resolve().parent.parent.parent

HOSTILE = """
import ctypes, logging, os, signal, subprocess, sys, threading, warnings

log = logging.getLogger(__name__)

def exited() -> int:
    os._exit(1)

def segfault() -> int:
    return len(ctypes.string_at(0))

def oom_killed() -> int:
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer sends

def hog() -> int:
    return len(bytearray(4 * 1024**3))

def busy(pidfile: str) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    with open(pidfile, "w") as f:
        f.write(str(child.pid))
    while True:
        pass

def raised() -> int:
    raise ValueError("raised on purpose")

def loud() -> int:
    line = "x" * 99 + "\\n"
    for _ in range(500_000):  # 50 MB
        sys.stdout.write(line)
    return 1

def pid() -> int:
    print("printed by", os.getpid())
    log.warning("logged by %d", os.getpid())
    log.debug("debug by %d", os.getpid())
    warnings.warn("warned by the pipeline")
    return os.getpid()

def lock() -> object:
    return threading.Lock()

def flaky(count_file: str) -> int:
    n = int(open(count_file).read()) if os.path.exists(count_file) else 0
    with open(count_file, "w") as f:
        f.write(str(n + 1))
    if n < 2:
        raise OSError(f"attempt {n + 1} fails")
    return n + 1

def dies_once(count_file: str) -> int:
    n = int(open(count_file).read()) if os.path.exists(count_file) else 0
    with open(count_file, "w") as f:
        f.write(str(n + 1))
    if n == 0:
        os.kill(os.getpid(), 9)  # as the OOM killer would
    return n + 1

def sleepy(pidfile: str) -> int:
    import time
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)
    return 0
"""

ASYNC_PID = "import os\n\n\nasync def pid_async() -> int:\n    return os.getpid()\n"


def marked(marker: str) -> list[int]:
    """Processes whose environment carries the marker (the daemon and all it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and not _zombie(entry):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _zombie(proc: Path) -> bool:
    try:
        return "\nState:\tZ" in (proc / "status").read_text()
    except OSError:
        return True  # gone


def gone(pid: int) -> bool:
    return _zombie(Path(f"/proc/{pid}"))


# --------------------------------------------------------------------------- the daemon


def _cases(pidfile: Path) -> dict[str, tuple[str, str]]:
    return {  # schedule: (final var, extra lines)
        "exited": ("exited", "async_driver = false"),
        "segfault": ("segfault", "async_driver = false"),
        "oom_killed": ("oom_killed", ""),
        "hog": ("hog", 'memory_limit = "1GiB"'),
        "busy": ("busy", f'timeout = 1\nasync_driver = false\ninputs = {{pidfile = "{pidfile}"}}'),
        "raised": ("raised", ""),
        "loud": ("loud", "async_driver = false"),
    }


EXPECTED = {  # schedule: (status, error type, in the message)
    "exited": ("failed", "WorkerDied", "exited with code 1"),
    "segfault": ("failed", "WorkerDied", "SIGSEGV"),
    "oom_killed": ("failed", "WorkerDied", "SIGKILL"),
    "hog": ("failed", "MemoryError", "memory_limit of 1GiB"),
    "busy": ("timed_out", "TimeoutError", "timeout of 1 s"),
    "raised": ("failed", "ValueError", "raised on purpose"),
    "loud": ("success", None, ""),
}


def _hostile_trial(tmp_path: Path, names: list[str]) -> None:
    """A daemon with a 1-second `tick` and the hostile schedules `names`, each triggered
    once: each row as expected, every tick slot one `success` row, no process left."""
    pidfile = tmp_path / "grandchild.pid"
    cases = {name: case for name, case in _cases(pidfile).items() if name in names}
    files = "\n".join(
        f'[{name}]\npipeline = "hostile"\ncron = "0 0 1 1 *"\nisolation = "process"\n'
        f'final_vars = ["{var}"]\n{extra}\n'
        for name, (var, extra) in cases.items()
    )
    base = make_project(
        tmp_path,
        # queue: on a loaded 2-core machine one tick may take over its second while a
        # worker spawns; it is then late, not skipped -- every slot must still succeed
        '[tick]\npipeline = "hello_world"\ninterval = "1s"\noverlap = "queue"\n\n' + files,
        hostile=HOSTILE,
    )
    marker = uuid.uuid4().hex
    with Served(base, env={"FLOWERD_TEST_MARK": marker}) as served:
        served.wait_ready()
        wait_for(lambda: _rows(base, "tick", "success"), what="a first tick")
        for name in cases:
            served.ask("trigger", schedule=name)
        wait_for(lambda: all(_done(base, name) for name in cases), timeout_s=40, what="every case")
        if "busy" in cases:  # its child ignored SIGTERM too: the group's SIGKILL got it
            wait_for(lambda: pidfile.exists() and gone(int(pidfile.read_text())), timeout_s=5)
        last = max(_done(base, name).finished_at for name in cases)
        wait_for(lambda: _rows_after(base, last), timeout_s=15, what="a tick after the last case")
        assert served.stop() == 0
    rows = {name: _done(base, name) for name in cases}
    for name, row in rows.items():
        status, error_type, said = EXPECTED[name]
        assert _row(row) == (status, error_type), (name, row.error)
        assert said in (row.error.message if row.error else ""), (name, row.error)
    if "raised" in rows:
        assert "raise ValueError" in rows["raised"].error.traceback  # the worker's traceback
    if "loud" in rows:
        assert "output cut" in served.log and len(served.log) < 5_000_000
    _every_tick_succeeded(base, rows)
    assert wait_for(lambda: not marked(marker), timeout_s=5, what="no process left")
    print(_report(rows, base))


def test_hostile_pipelines_fail_alone_beside_a_one_second_schedule(tmp_path: Path):
    _hostile_trial(tmp_path, list(EXPECTED))  # all at once, in one daemon


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_hostile_pipeline_alone_beside_a_one_second_schedule(tmp_path: Path, name: str):
    _hostile_trial(tmp_path, [name])


def _rows(base: Path, schedule: str, status: str | None = None) -> list:
    return [
        r for r in runs(base) if r.schedule == schedule and (status is None or r.status == status)
    ]


def _rows_after(base: Path, moment: datetime) -> list:
    return [r for r in _rows(base, "tick") if r.scheduled_at > moment and r.finished_at]


def _done(base: Path, schedule: str):
    found = [r for r in _rows(base, schedule) if r.finished_at is not None]
    return found[0] if found else None


def _row(row) -> tuple:
    return row.status, row.error.type if row.error else None


def _every_tick_succeeded(base: Path, hostile: dict) -> None:
    ticks = sorted(_rows(base, "tick"), key=lambda r: r.scheduled_at)
    assert {r.status for r in ticks} == {"success"}, [(r.status, r.error) for r in ticks]
    slots = [r.scheduled_at for r in ticks]
    assert {b - a for a, b in zip(slots, slots[1:], strict=False)} == {timedelta(seconds=1)}
    started = min(r.started_at for r in hostile.values())
    finished = max(r.finished_at for r in hostile.values())
    assert slots[0] < started and slots[-1] > finished  # ticking all the way through


def _report(rows: dict, base: Path) -> str:
    ticks = _rows(base, "tick")
    started = min(r.started_at for r in rows.values())
    finished = max(r.finished_at for r in rows.values())
    during = [t for t in ticks if started <= t.scheduled_at <= finished]
    lines = [
        f"tick: {len(ticks)} slots, statuses {sorted({t.status for t in ticks})}; "
        f"{len(during)} slots while the hostile runs ran "
        f"({sum(t.status == 'success' for t in during)} success)"
    ]
    for name, row in rows.items():
        error = f"{row.error.type}: {row.error.message[:90]}" if row.error else ""
        beside = [
            t for t in ticks if row.started_at <= t.scheduled_at <= row.finished_at + timedelta(0)
        ]
        lines.append(
            f"{name}: {row.status} {error} ({row.duration_s:.2f} s; "
            f"{len(beside)} tick slot(s) meanwhile, {sum(t.status == 'success' for t in beside)}"
            " success)"
        )
    return "\n".join(lines)


SLOW = """
[slow]
pipeline = "hostile"
cron = "0 0 1 1 *"
isolation = "process"
final_vars = ["sleepy"]
async_driver = false
inputs = {{ pidfile = "{pidfile}" }}
"""


def test_sigterm_during_a_process_run_cancels_it_and_leaves_no_process(tmp_path: Path):
    base = make_project(
        tmp_path,
        SLOW.format(pidfile=tmp_path / "worker.pid"),
        hostile=HOSTILE,
    )
    marker = uuid.uuid4().hex
    with Served(base, env={"FLOWERD_SHUTDOWN_GRACE": "1", "FLOWERD_TEST_MARK": marker}) as served:
        served.wait_ready()
        served.ask("trigger", schedule="slow")
        wait_for((tmp_path / "worker.pid").exists, what="the run in its worker")
        assert len(marked(marker)) >= 3  # the daemon, the forkserver, the worker
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        assert served.wait(30) == 0
        assert time.monotonic() - started < 1 + 2 + 5  # grace + kill grace + margin
    (row,) = _rows(base, "slow")
    assert (row.status, row.error.type) == ("cancelled", "Cancelled")
    assert wait_for(lambda: not marked(marker), timeout_s=5, what="no process left")


def test_kill_9_of_the_daemon_takes_its_workers_along(tmp_path: Path):
    base = make_project(
        tmp_path,
        SLOW.format(pidfile=tmp_path / "worker.pid"),
        hostile=HOSTILE,
    )
    marker = uuid.uuid4().hex
    with Served(base, env={"FLOWERD_TEST_MARK": marker}) as served:
        served.wait_ready()
        served.ask("trigger", schedule="slow")
        wait_for((tmp_path / "worker.pid").exists, what="the run in its worker")
        assert len(marked(marker)) >= 3
        served.kill()  # no drain: each worker sees its pipe close and kills its group
    assert wait_for(lambda: not marked(marker), timeout_s=10, what="no orphan worker")


# --------------------------------------------------------------------------- the runner


@pytest.fixture
async def parts(tmp_path: Path):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "hostile.py").write_text(HOSTILE)
    (tmp_path / "pipelines" / "async_pid.py").write_text(ASYNC_PID)
    history = await History.open(sqlite_url(tmp_path / "history.db"))
    runner = Runner(pm=Pipelines(tmp_path), history=history, max_concurrent_runs=4, threads=2)
    yield runner, history
    await runner.cancel_all()
    runner.close()
    await history.close()


def process_schedule(**fields) -> Schedule:
    defaults = {
        "id": "p",
        "file": Path("t.toml"),
        "pipeline": "hello_world",
        "interval_s": 1.0,
        "isolation": "process",
    }
    return Schedule(**{**defaults, **fields})


@pytest.mark.parametrize("async_driver", [True, False])
async def test_both_drivers_in_a_worker_return_what_a_thread_returns(parts, async_driver):
    runner, history = parts
    kwargs = {"final_vars": ["full_greeting"], "inputs": {"name": "Iso"}}
    cfg = RunConfig(**kwargs, async_driver=async_driver)
    thread = await runner.run_manual(
        "hello_world", cfg, schedule=process_schedule(isolation="thread")
    )
    process = await runner.run_manual("hello_world", cfg, schedule=process_schedule())
    assert process.error is None and thread.error is None
    assert process.result == thread.result == {"full_greeting": "Hello, Iso!"}
    assert runner._workers is not None and runner._workers.started == 1


async def test_a_worker_is_reused_and_runs_outside_the_daemon(parts):
    runner, _ = parts
    spec = process_schedule(pipeline="hostile")
    first = await runner.run_manual("hostile", RunConfig(final_vars=["pid"]), schedule=spec)
    cfg = RunConfig(final_vars=["pid_async"])
    second = await runner.run_manual("async_pid", cfg, schedule=spec)
    assert first.result["pid"] == second.result["pid_async"] != os.getpid()
    assert runner._workers.started == 1


async def test_no_worker_process_without_a_process_schedule(parts):
    runner, _ = parts
    outcome = await runner.run_manual(
        "hello_world", RunConfig(), schedule=process_schedule(isolation="thread")
    )
    assert outcome.error is None and runner._workers is None


async def test_an_unpicklable_result_names_the_final_var(parts):
    runner, history = parts
    spec = process_schedule(pipeline="hostile")
    outcome = await runner.run_manual(
        "hostile", RunConfig(final_vars=["lock", "pid"]), schedule=spec
    )
    row = await history.get_run(outcome.run_id)
    assert (row.status, row.error.type) == ("failed", "UnpicklableResult")
    assert "'lock'" in row.error.message and "'pid'" not in row.error.message


async def test_retries_run_in_the_worker_and_count_attempts(parts, tmp_path):
    runner, history = parts
    spec = process_schedule(pipeline="hostile")
    cfg = RunConfig(
        final_vars=["flaky"],
        inputs={"count_file": str(tmp_path / "count")},
        max_retries=2,
        retry_delay=0.01,
    )
    outcome = await runner.run_manual("hostile", cfg, schedule=spec)
    row = await history.get_run(outcome.run_id)
    assert (row.status, row.attempts, outcome.result) == ("success", 3, {"flaky": 3})


async def test_the_errors_of_retried_attempts_come_back_from_the_worker(parts, tmp_path):
    runner, history = parts
    spec = process_schedule(pipeline="hostile")
    cfg = RunConfig(
        final_vars=["flaky"],
        inputs={"count_file": str(tmp_path / "count")},
        max_retries=2,
        retry_delay=0.01,
    )
    outcome = await runner.run_manual("hostile", cfg, schedule=spec)
    row = await history.get_run(outcome.run_id)
    assert [e["type"] for e in row.attempt_errors] == ["OSError", "OSError"]
    assert row.attempt_errors[0]["message"] == "attempt 1 fails"


async def test_a_worker_killed_mid_run_is_a_failed_attempt_and_retried(parts, tmp_path):
    """SIGKILL (the OOM killer) in the first attempt: with max_retries the run goes on in
    a new worker, and its row says what happened to the attempt before."""
    runner, history = parts
    spec = process_schedule(pipeline="hostile")
    cfg = RunConfig(
        final_vars=["dies_once"],
        inputs={"count_file": str(tmp_path / "count")},
        max_retries=1,
        retry_delay=0.01,
    )
    outcome = await runner.run_manual("hostile", cfg, schedule=spec)
    row = await history.get_run(outcome.run_id)
    assert (row.status, row.attempts, outcome.result) == ("success", 2, {"dies_once": 2})
    assert [e["type"] for e in row.attempt_errors] == ["WorkerDied"]
    assert "SIGKILL" in row.attempt_errors[0]["message"]
    assert runner._workers.started == 2


async def test_a_worker_that_keeps_dying_fails_after_its_retries(parts, tmp_path):
    runner, history = parts
    spec = process_schedule(pipeline="hostile")
    cfg = RunConfig(final_vars=["exited"], max_retries=1, retry_delay=0.01)
    outcome = await runner.run_manual("hostile", cfg, schedule=spec)
    row = await history.get_run(outcome.run_id)
    assert (row.status, row.error.type, row.attempts) == ("failed", "WorkerDied", 2)
    assert [e["type"] for e in row.attempt_errors] == ["WorkerDied"]


async def test_a_timeout_kills_the_worker_and_the_next_run_gets_a_new_one(parts, tmp_path):
    runner, history = parts
    spec = process_schedule(pipeline="hostile", timeout_s=0.5)
    inputs = {"pidfile": str(tmp_path / "worker.pid")}
    cfg = RunConfig(final_vars=["sleepy"], inputs=inputs, async_driver=False)
    outcome = await runner.run_manual("hostile", cfg, schedule=spec)
    row = await history.get_run(outcome.run_id)
    assert row.status == "timed_out"
    assert runner._workers.pids == []  # killed, not kept
    again = await runner.run_manual("hostile", RunConfig(final_vars=["pid"]), schedule=spec)
    assert again.error is None and runner._workers.started == 2


async def test_worker_logs_and_prints_come_back_under_the_run_id(tmp_path, caplog):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "hostile.py").write_text(HOSTILE)
    pool = WorkerPool(base_dir=tmp_path, pipelines_dir=tmp_path / "pipelines")
    seen: list[tuple] = []

    class Spy(logging.Handler):
        def emit(self, record):
            seen.append((record.name, logs.run_id_var.get(), record.getMessage()))

    spy = Spy()
    logging.getLogger().addHandler(spy)
    try:
        logs.run_id_var.set(42)
        with caplog.at_level(logging.INFO):  # prints come back at INFO
            cfg = RunConfig(final_vars=["pid"], log_level="DEBUG")
            result = await pool.run("hostile", cfg, Attempts())
    finally:
        logging.getLogger().removeHandler(spy)
        pool.close()
    pid = result["pid"]
    assert ("hostile", 42, f"logged by {pid}") in seen
    assert ("flowerd.stdout", 42, f"printed by {pid}") in seen
    assert ("hostile", 42, f"debug by {pid}") in seen  # the run's level
    assert any(name == "py.warnings" and "warned by the pipeline" in text for name, _, text in seen)
    assert gone(pid)


async def test_fifty_megabytes_of_prints_are_cut_and_marked(tmp_path, caplog):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "hostile.py").write_text(HOSTILE)
    pool = WorkerPool(
        base_dir=tmp_path, pipelines_dir=tmp_path / "pipelines", max_output_bytes=64 * 1024
    )
    forwarded = []

    class Count(logging.Handler):
        def emit(self, record):
            forwarded.append(len(record.getMessage()))

    counter = Count()
    logging.getLogger("flowerd.stdout").addHandler(counter)
    try:
        with caplog.at_level(logging.INFO):
            result = await pool.run("hostile", RunConfig(final_vars=["loud"]), Attempts())
    finally:
        logging.getLogger("flowerd.stdout").removeHandler(counter)
        pool.close()
    assert result == {"loud": 1}
    assert sum(forwarded) <= 64 * 1024
    (cut,) = [r for r in caplog.records if "output cut" in r.getMessage()]
    assert "more line(s)" in cut.getMessage()


async def test_a_cancelled_run_kills_its_workers_group(tmp_path):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "hostile.py").write_text(HOSTILE)
    pidfile = tmp_path / "child.pid"
    pool = WorkerPool(base_dir=tmp_path, pipelines_dir=tmp_path / "pipelines", kill_grace_s=0.5)
    cfg = RunConfig(final_vars=["busy"], inputs={"pidfile": str(pidfile)}, async_driver=False)
    task = asyncio.create_task(pool.run("hostile", cfg, Attempts()))
    await asyncio.to_thread(wait_for, pidfile.exists, timeout_s=20)
    (worker,) = pool.pids
    child = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pool.close()
    assert gone(worker)
    assert await asyncio.to_thread(wait_for, lambda: gone(child), timeout_s=5)


async def test_a_worker_error_is_a_worker_run_error_with_the_pipelines_type(tmp_path):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "hostile.py").write_text(HOSTILE)
    pool = WorkerPool(base_dir=tmp_path, pipelines_dir=tmp_path / "pipelines")
    try:
        with pytest.raises(WorkerRunError) as caught:
            await pool.run("nope", RunConfig(), Attempts())
    finally:
        pool.close()
    assert caught.value.fields["type"] == "PipelineNotFound"


async def test_a_run_cancelled_while_its_worker_starts_leaves_no_worker(tmp_path):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    cancelled = 0
    for delay_s in (0.0, 0.002, 0.005, 0.01, 0.02):
        pool = WorkerPool(base_dir=tmp_path, pipelines_dir=tmp_path / "pipelines")
        task = asyncio.create_task(pool.run("hello_world", RunConfig(), Attempts()))
        await asyncio.sleep(delay_s)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
            assert pool.pids == []  # started (or not yet), then killed
        else:
            assert len(pool.pids) == 1  # it was quicker than the cancel: kept for reuse
        pool.close()
    assert cancelled >= 1
