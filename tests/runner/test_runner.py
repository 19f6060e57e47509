"""The runner in-process: real History (SQLite in tmp_path), real Hamilton modules."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.history import History
from daemon.pipeline import Pipelines, RunConfig
from daemon.runner.runner import Runner
from daemon.schedule import Schedule
from daemon.settings import sqlite_url
from tests.contract import bound

REPO = Path(__file__).resolve().parent.parent.parent
SLEEPY = "import asyncio\n\nasync def slept(seconds: float = 30.0) -> float:\n" \
    "    await asyncio.sleep(seconds)\n    return seconds\n"  # fmt: skip


@pytest.fixture
async def parts(tmp_path: Path):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "sleepy.py").write_text(SLEEPY)
    history = await History.open(sqlite_url(tmp_path / "history.db"))
    runner = Runner(
        pm=Pipelines(tmp_path), history=history, max_concurrent_runs=4, threads=2
    )
    yield runner, history
    await runner.cancel_all()
    runner.close()
    await history.close()


def schedule(**fields) -> Schedule:
    defaults = {"id": "s", "file": Path("t.toml"), "pipeline": "hello_world", "interval_s": 1.0}
    return Schedule(**{**defaults, **fields})


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def executing(runner: Runner) -> None:
    """Wait (bounded) until a run's pipeline executes: its claim is written by then."""
    async with asyncio.timeout(bound(10)):
        while not any(run.started_at for run in runner.active.values()):
            await asyncio.sleep(0.01)


async def test_a_slot_runs_once_even_when_fired_twice(parts):
    runner, history = parts
    slot = now()
    await runner.run_slot(schedule(), slot, "schedule")
    await runner.run_slot(schedule(), slot, "schedule")
    (row,) = await history.list_runs()
    assert (row.status, row.scheduled_at, row.attempts) == ("success", slot, 1)
    assert row.lateness_s is not None and row.lateness_s >= 0


async def test_late_slot_beyond_misfire_grace_is_missed(parts):
    runner, history = parts
    await runner.run_slot(schedule(misfire_grace_s=1), now() - timedelta(seconds=10), "schedule")
    (row,) = await history.list_runs()
    assert row.status == "missed" and "misfire_grace" in row.error.message
    assert row.started_at is None


async def test_overlap_skip_records_skipped(parts):
    runner, history = parts
    sleepy = schedule(pipeline="sleepy", inputs={"seconds": 0.3})
    first = asyncio.create_task(runner.run_slot(sleepy, now(), "schedule"))
    await executing(runner)
    await runner.run_slot(sleepy, now() + timedelta(seconds=1), "schedule")
    await asyncio.wait_for(first, timeout=bound(5))
    statuses = sorted(r.status for r in await history.list_runs())
    assert statuses == ["skipped", "success"]


async def test_cancelled_run_is_recorded_before_the_cancellation_goes_on(parts):
    runner, history = parts
    task = asyncio.create_task(runner.run_slot(schedule(pipeline="sleepy"), now(), "schedule"))
    await executing(runner)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = await history.list_runs()  # already durable: no wait needed
    assert row.status == "cancelled" and row.finished_at is not None
    assert row.error.type == "Cancelled"


async def test_async_timeout_records_timed_out_with_attempts(parts):
    runner, history = parts
    await runner.run_slot(schedule(pipeline="sleepy", timeout_s=0.1), now(), "schedule")
    (row,) = await history.list_runs()
    assert row.status == "timed_out" and row.attempts == 1 and row.duration_s < 1


async def test_retries_count_attempts(parts, tmp_path: Path):
    runner, history = parts
    (tmp_path / "pipelines" / "flaky.py").write_text(
        "from pathlib import Path\n\ndef flaky(path: str) -> int:\n    p = Path(path)\n"
        "    n = int(p.read_text()) + 1 if p.exists() else 1\n    p.write_text(str(n))\n"
        "    if n < 3:\n        raise ConnectionError(n)\n    return n\n"
    )
    flaky = schedule(
        pipeline="flaky", inputs={"path": str(tmp_path / "n")}, max_retries=3, retry_delay=0.01
    )
    await runner.run_slot(flaky, now(), "schedule")
    (row,) = await history.list_runs()
    assert (row.status, row.attempts) == ("success", 3)


async def test_manual_run_has_no_schedule_and_trigger_manual(parts):
    runner, history = parts
    outcome = await runner.run_manual("hello_world", RunConfig(inputs={"name": "M"}))
    assert outcome.result == {"full_greeting": "Hello, M!"} and outcome.error is None
    row = await history.get_run(outcome.run_id)
    assert (row.schedule, row.scheduled_at, row.trigger, row.status) == (
        None, None, "manual", "success",
    )  # fmt: skip


async def test_a_row_that_cannot_be_written_is_logged_not_raised(parts, caplog):
    runner, history = parts
    task = asyncio.create_task(
        runner.run_slot(schedule(pipeline="sleepy", inputs={"seconds": 2}), now(), "schedule")
    )
    await executing(runner)
    await history.close()  # the history goes away under a running run
    with caplog.at_level(logging.ERROR, logger="daemon.runner"):
        await asyncio.wait_for(task, timeout=bound(5))
    assert "could not be written" in caplog.text and "crashed" in caplog.text


KEYED = "def out(a: int = 0, b: str = '-') -> str:\n    return f'{a}{b}'\n"


@pytest.mark.parametrize(
    "config",
    [{("a", "b"): 1}, {1: "x", "a": 2}, {("a", ("b", 1)): 1, "b": "y"}, {2.5: 0, None: 1}],
)
async def test_any_config_key_hamilton_accepts_runs_as_raw_hamilton(parts, tmp_path, config):
    """Config keys that are no strings (tuples, ints, mixed) become DAG nodes Hamilton
    keys by them: pm.run, pm.run_async and a schedule's run (either driver) give the
    result raw Hamilton gives."""
    import importlib.util

    from hamilton import driver

    runner, history = parts
    (tmp_path / "pipelines" / "keyed.py").write_text(KEYED)
    spec = importlib.util.spec_from_file_location("raw_keyed", tmp_path / "pipelines" / "keyed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["raw_keyed"] = module  # Hamilton finds a module's functions there
    try:
        raw = driver.Builder().with_modules(module).with_config(config).build().execute(["out"])
    finally:
        del sys.modules["raw_keyed"]
    pm = Pipelines(tmp_path)
    assert pm.run("keyed", final_vars=["out"], config=config) == raw
    assert await pm.run_async("keyed", final_vars=["out"], config=config) == raw
    assert pm.validate("keyed", RunConfig(final_vars=["out"], config=config)) is not None
    for sync in (True, False):  # a schedule's inputs, converted as validation does
        typed = pm.typed_inputs("keyed", {"a": "3"}, async_driver=not sync,
                                run_config=RunConfig(config=config))  # fmt: skip
        assert typed == {"a": 3}
    for i, async_driver in enumerate((True, False)):
        keyed = schedule(
            id=f"k{i}", pipeline="keyed", final_vars=["out"], config=config,
            async_driver=async_driver,
        )  # fmt: skip
        await runner.run_slot(keyed, now(), "schedule")
    rows = await history.list_runs()
    assert [(r.status, r.result) for r in rows] == [("success", raw)] * 2, rows


async def test_prepare_builds_the_drivers_a_schedules_first_run_uses(tmp_path: Path):
    """The daemon's start-up prepares each schedule's driver: the first run finds it."""
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    pm = Pipelines(tmp_path)
    for async_driver in (True, False):
        await pm.prepare("hello_world", RunConfig(async_driver=async_driver))
    built = dict(pm._drivers.built)
    assert len(built) == 2 and len(pm._drivers.declared) == 2
    assert await pm.run_async("hello_world") == pm.run("hello_world")
    assert pm._drivers.built == built  # the runs built nothing new
    await pm.prepare("hello_world", RunConfig(config={"thing": object()}))  # no exact key
    assert pm._drivers.built == built  # such a driver is its run's own
