"""The backfill Job and the runner's rules for it, in-process: a real History (SQLite in
tmp_path) and real Hamilton modules."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.history import History
from daemon.pipeline import Pipelines
from daemon.runner.backfill import Item, Job, Plan, plan_backfill, slots_in
from daemon.runner.runner import Runner
from daemon.schedule import Schedule
from daemon.settings import sqlite_url
from tests.contract import bound

REPO = Path(__file__).resolve().parent.parent.parent
SLEEPY = (
    "import asyncio\nfrom datetime import datetime\n\n\n"
    "async def slept(scheduled_at: datetime, seconds: float = 0.3) -> str:\n"
    "    await asyncio.sleep(seconds)\n    return scheduled_at.isoformat()\n"
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def parts(tmp_path: Path):
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    (tmp_path / "pipelines" / "sleepy.py").write_text(SLEEPY)
    history = await History.open(sqlite_url(tmp_path / "history.db"))
    runner = Runner(pm=Pipelines(tmp_path), history=history, max_concurrent_runs=2, threads=2)
    yield runner, history
    await runner.cancel_all()
    runner.close()
    await history.close()


def schedule(**fields) -> Schedule:
    defaults = {"id": "s", "file": Path("t.toml"), "pipeline": "sleepy", "interval_s": 60.0}
    return Schedule(**{**defaults, **fields})


async def planned(runner: Runner, spec: Schedule, count: int, *, rerun=False) -> Plan:
    end = T0 + timedelta(minutes=count - 1)
    slots, _ = slots_in(spec, T0, end, now=datetime.now(UTC), yes=False)
    return await plan_backfill(runner.history, spec, slots, rerun=rerun, pm=runner.pm)


async def test_scheduled_slots_never_wait_behind_a_backfill(parts):
    """Limit 2, overlap allow: the backfill runs one at a time (it never takes the last
    free slot), and a slot fired meanwhile starts at once."""
    runner, history = parts
    spec = schedule(overlap="allow")
    job = Job(runner, await planned(runner, spec, 4))
    assert job.workers == 1
    task = asyncio.create_task(job.run())
    await asyncio.sleep(0.1)
    fired = datetime.now(UTC).replace(microsecond=0)
    began = asyncio.get_running_loop().time()
    await runner.run_slot(spec, fired, "schedule")
    assert asyncio.get_running_loop().time() - began < 0.3 + 0.25
    await asyncio.wait_for(task, timeout=bound(10))
    rows = await history.list_runs(trigger="backfill")
    assert len(rows) == 4 and {r.status for r in rows} == {"success"}
    assert job.progress()["left"] == 0 and job.progress()["succeeded"] == 4


async def test_overlap_skip_never_records_a_backfill_slot_skipped(parts):
    runner, history = parts
    spec = schedule()  # overlap = "skip"
    running = asyncio.create_task(
        runner.run_slot(spec, datetime.now(UTC).replace(microsecond=0), "schedule")
    )
    await asyncio.sleep(0.05)
    job = Job(runner, await planned(runner, spec, 2))
    await asyncio.wait_for(job.run(), timeout=bound(10))
    await running
    backfilled = await history.list_runs(trigger="backfill")
    scheduled = (await history.list_runs(trigger="schedule"))[0]
    assert [r.status for r in backfilled] == ["success", "success"]
    assert min(r.started_at for r in backfilled) >= scheduled.finished_at  # waited for it


async def test_a_stopped_job_leaves_slots_not_started_unrecorded(parts):
    runner, history = parts
    job = Job(runner, await planned(runner, schedule(), 5))
    task = asyncio.create_task(job.run())
    while not job.run_ids:
        await asyncio.sleep(0.01)
    job.stop()
    await asyncio.wait_for(task, timeout=bound(10))
    rows = await history.list_runs()
    assert [r.status for r in rows] == ["success"] and job.progress()["left"] == 4
    again = await planned(runner, schedule(), 5)
    assert len(again.items) == 4 and [r.id for r in again.recorded] == [rows[0].id]


async def test_cancelling_a_job_records_the_running_run_cancelled(parts):
    runner, history = parts
    job = Job(runner, await planned(runner, schedule(), 3))
    task = asyncio.create_task(job.run())
    while not job.run_ids:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.wait({task}, timeout=bound(10))
    rows = await history.list_runs()
    assert [r.status for r in rows] == ["cancelled"]


async def test_rerun_rows_keep_the_slot_and_name_the_run(parts):
    runner, history = parts
    spec = schedule()
    await Job(runner, await planned(runner, spec, 2)).run()
    plan = await planned(runner, spec, 2, rerun=True)
    assert [item.again.trigger for item in plan.items] == ["backfill", "backfill"]
    await Job(runner, plan).run()
    reruns = sorted(await history.list_runs(trigger="rerun"), key=lambda r: r.id)
    first = sorted(await history.list_runs(trigger="backfill"), key=lambda r: r.id)
    assert [r.rerun_of for r in reruns] == [r.id for r in first]
    assert [r.scheduled_at for r in reruns] == [r.scheduled_at for r in first]
    assert [r.result for r in reruns] == [r.result for r in first]
    assert await history.reruns_of(first[0].id) == [reruns[0].id]
    last = await planned(runner, spec, 1, rerun=True)  # the slot's latest run: the rerun
    assert [item.again.id for item in last.items] == [reruns[0].id]


async def test_a_rerun_job_of_a_manual_run(parts):
    from daemon.pipeline import RunConfig
    from daemon.runner.backfill import rerun_config

    runner, history = parts
    outcome = await runner.run_manual(
        "hello_world", RunConfig(inputs={"name": "Ada"}, final_vars=["full_greeting"])
    )
    record = await history.get_run(outcome.run_id)
    cfg = rerun_config(record, None, runner.pm)
    job = Job(runner, Plan(schedule=None, items=[Item(slot=None, again=record, cfg=cfg)]))
    await job.run()
    (again,) = await history.get_runs(job.run_ids)
    assert (again.trigger, again.rerun_of, again.inputs) == ("rerun", record.id, {"name": "Ada"})
    assert again.result == record.result and again.schedule is None


async def test_a_drain_stops_the_job_started_runs_finish_the_rest_untouched(parts):
    """The daemon's stop (its runner's drain): the job starts nothing more, the run going
    finishes within the grace period, and planning the same range again finds the rest."""
    runner, history = parts
    job = Job(runner, await planned(runner, schedule(), 5))
    runner.spawn(job.run())
    while not job.run_ids:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(runner.drain(5), timeout=bound(10))
    assert job.finished and job.progress()["left"] == 4
    assert [r.status for r in await history.list_runs()] == ["success"]
    assert len((await planned(runner, schedule(), 5)).items) == 4


async def test_one_batch_of_slot_rows_and_reruns_of_the_same_slot(parts):
    """The writer's ON CONFLICT names the partial index: in one group commit, slot rows
    of one slot get one id, reruns and manual runs of that slot each get their own."""
    _, history = parts
    claims = [
        history.claim(pipeline="p", trigger=trigger, schedule="s", scheduled_at=T0,
                      async_driver=True)
        for trigger in ("schedule", "backfill", "rerun", "rerun", "manual", "catchup")
    ]  # fmt: skip
    ids = await asyncio.gather(*claims)
    assert ids[0] is not None and ids[1] is None and ids[5] is None
    assert None not in ids[2:5] and len(set(ids) - {None}) == 4
