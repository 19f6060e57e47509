"""Several daemons on one PostgreSQL: leases, reaping only the dead, every slot once.

Real `flowerd serve` processes (own base dirs, the same schedules) on a fresh database
each test; skipped without FLOWERD_TEST_POSTGRES_URL (see tests/pg.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.history import History
from tests import pg
from tests.contract import bound, flowerd_here, sized
from tests.serve import Served, make_project, wait_for

pytestmark = [pg.needs_postgres, pytest.mark.timeout(600)]
pg_url = pg.pg_url  # a fresh database per test

LEASE_S = 3.0
TRIAL_S = float(sized(12, 60))  # plus start-up, failover and restart: ~20 s of slots
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

SCHEDULES = """
[tick]
pipeline = "quick"
interval = "1s"
overlap = "allow"  # under load a claim may take over 1 s: the next slot would be `skipped`

[long]
pipeline = "slow"
interval = "1s"
overlap = "allow"

[spare]
pipeline = "quick"
cron = "0 0 1 1 *"
"""
QUICK = """
def answer() -> int:
    return 42
"""
SLOW = """
import asyncio


async def slept(seconds: float = 2.5) -> float:
    await asyncio.sleep(seconds)
    return seconds
"""


def _project(root: Path, url: str, name: str) -> Path:
    base = make_project(root / name, SCHEDULES, quick=QUICK, slow=SLOW)
    (base / "flowerd.toml").write_text(
        f'database_url = "{url}"\nlease_s = {LEASE_S}\nhttp = "off"\n'
    )
    return base


def _rows(url: str) -> list:
    async def query():
        async with History.open(url, readonly=True) as history:
            return await history.list_runs(limit=100_000)

    return asyncio.run(query())


def _slots_report(rows: list) -> dict:
    """Per schedule: slots expected (first..last at 1 s), recorded, doubled, missing."""
    report = {}
    for schedule in ("tick", "long"):
        slots = [r.scheduled_at for r in rows if r.schedule == schedule]
        counts = Counter(slots)
        first, last = min(slots), max(slots)
        expected = int((last - first).total_seconds()) + 1
        every = {first + timedelta(seconds=i) for i in range(expected)}
        report[schedule] = {
            "expected": expected,
            "recorded": len(counts),
            "doubled": sum(n - 1 for n in counts.values()),
            "missing": len(every - set(counts)),
        }
    return report


# --------------------------------------------------------------------------- in process


async def test_a_live_daemons_rows_are_never_reaped(pg_url: str):
    """Two daemons' histories: the start-up reap and the periodic reap take only the rows
    of the daemon whose lease expired, by the database's clock."""
    live = await History.open(pg_url, instance_id="live")
    dead = await History.open(pg_url, instance_id="dead")
    try:
        await live.register_daemon()
        await dead.register_daemon()
        mine = await live.claim(
            pipeline="p", trigger="schedule", schedule="s", scheduled_at=T0, async_driver=True
        )
        theirs = await dead.claim(
            pipeline="p",
            trigger="schedule",
            schedule="s",
            scheduled_at=T0 + timedelta(seconds=1),
            async_driver=True,
        )
        # a third daemon starting now: both leases are live, so nothing is reaped
        assert await live.reap_crashed(now=T0, lease_s=LEASE_S) == []
        assert [d["id"] for d in await live.daemons(LEASE_S)] == ["live", "dead"]
        renewal = await live.renew_lease(0.5)
        assert renewal.crashed == [] and not renewal.lost
        await asyncio.sleep(0.7)  # "dead" stops renewing; "live" renews
        renewal = await live.renew_lease(0.5)
        assert [r.id for r in renewal.crashed] == [theirs]
        assert renewal.reaped_daemons == [("dead", dead.host, dead.pid)]
        assert (await live.get_run(mine)).status == "queued"
        crashed = await live.get_run(theirs)
        assert crashed.status == "crashed" and "instance dead" in crashed.error.message
        assert [d["id"] for d in await live.daemons(LEASE_S)] == ["live"]
        # the dead one comes back: its lease was lost, it registers again
        assert (await dead.renew_lease(LEASE_S)).lost
    finally:
        await dead.close()
        await live.close()


async def test_pause_and_reload_reach_every_daemon(pg_url: str):
    one = await History.open(pg_url, instance_id="one")
    two = await History.open(pg_url, instance_id="two")
    try:
        await one.register_daemon()
        await two.register_daemon()
        await one.set_paused("tick", True)
        assert await one.request_reload() == 1  # asks the other daemon, not itself
        renewal = await two.renew_lease(LEASE_S)
        assert renewal.paused == {"tick"} and renewal.reload
        renewal = await two.renew_lease(LEASE_S)
        assert not renewal.reload  # once per request
        assert not (await one.renew_lease(LEASE_S)).reload
    finally:
        await two.close()
        await one.close()


async def test_daemons_starting_at_once_migrate_once(pg_url: str):
    histories = await asyncio.gather(*(History.open(pg_url, instance_id=f"d{i}") for i in range(4)))
    for history in histories:
        await history.close()
    async with History.open(pg_url, readonly=True) as history:
        assert await history.list_runs() == []


# --------------------------------------------------------------------------- real daemons


def _instance(served: Served) -> str:
    return served.ask("status")["daemon"]


def _pause_and_reload_reach_the_others(daemons: list[Served]) -> None:
    daemons[0].ask("pause", schedule="spare")

    def paused_everywhere() -> bool:
        for served in daemons[1:]:
            (spare,) = [s for s in served.ask("status")["schedules"] if s["id"] == "spare"]
            if not spare["paused"]:
                return False
        return True

    wait_for(paused_everywhere, timeout_s=LEASE_S * 2, what="the pause on every daemon")
    daemons[0].ask("reload")
    wait_for(
        lambda: all("another daemon reloaded" in served.log for served in daemons[1:]),
        timeout_s=LEASE_S * 2,
        what="the reload on every daemon",
    )


def _stop_all(daemons: list[Served]) -> None:
    for served in daemons:
        assert served.stop() == 0, served.log


def _kill_one_running(url: str, daemons: list[Served]) -> tuple[Served, str, datetime]:
    """kill -9 a daemon whose `long` run (2.5 s) started under a second ago, so that run is
    still going when the kill lands; its instance id and the kill's wall time."""
    by_id = {_instance(d): d for d in daemons}

    def young_long_run() -> str | None:
        now = datetime.now(UTC)
        for row in _rows(url):
            if row.status == "running" and row.schedule == "long" and row.instance_id in by_id:
                if now - row.started_at < timedelta(seconds=1):
                    return row.instance_id
        return None

    victim_id = wait_for(young_long_run, timeout_s=30, interval_s=0.2, what="a run going")
    victim = by_id[victim_id]
    killed_at = datetime.now(UTC)
    victim.kill()
    return victim, victim_id, killed_at


def _left_by(url: str, instance: str) -> dict[int, str]:
    """The rows a killed daemon left: queued or running (or already reaped) after the
    kill -- only a reap can end them. A row seen `running` before the kill may have
    ended before it landed: it is no row left behind (the old trial waited on one)."""
    left = ("queued", "running", "crashed")
    return {r.id: r.status for r in _rows(url) if r.instance_id == instance and r.status in left}


# two daemons share the slots in make test; three (the same checks) in make soak
@pytest.mark.parametrize("count", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_several_daemons_launch_every_slot_once(tmp_path: Path, pg_url: str, count: int):
    bases = [_project(tmp_path, pg_url, f"d{i}") for i in range(count)]
    daemons = [Served(base) for base in bases]
    try:
        for served in daemons:
            served.wait_ready(timeout_s=60)
        listed = daemons[0].ask("status")["daemons"]
        assert {d["id"] for d in listed} == {_instance(d) for d in daemons}
        assert {"id", "host", "pid", "last_seen"} <= set(listed[0])
        shown = flowerd_here(bases[1], "status").stdout
        assert all(f"daemon {d['id']} on {d['host']} pid {d['pid']}" in shown for d in listed)
        _pause_and_reload_reach_the_others(daemons)
        time.sleep(TRIAL_S * 0.3)

        victim, victim_instance, killed_at = _kill_one_running(pg_url, daemons)
        run_ids = set(_left_by(pg_url, victim_instance))
        assert run_ids, "the killed daemon left no run going: nothing to fail over"
        wait_for(
            lambda: set(_left_by(pg_url, victim_instance).values()) == {"crashed"},
            timeout_s=LEASE_S * 3,
            interval_s=0.1,
            what="the dead daemon's runs",
        )
        # the reap's own time (the database's now(), this host's clock), not when a poll
        # of this test -- slow on a loaded machine -- happened to see it
        reaped_at = max(r.finished_at for r in _rows(pg_url) if r.id in run_ids)
        failover_s = (reaped_at - killed_at).total_seconds()
        print(
            f"\n{count} daemons: run(s) {sorted(run_ids)} crashed {failover_s:.2f} s after kill -9"
        )
        assert failover_s < LEASE_S * 4 / 3 + 2  # expiry + one renewal period, + slack
        time.sleep(TRIAL_S * 0.3)

        index = daemons.index(victim)
        daemons[index] = Served(victim.base)  # it joins again: a new instance, no catch-up
        daemons[index].wait_ready(timeout_s=60)
        time.sleep(TRIAL_S * 0.3)
        _stop_all(daemons)
    finally:
        for served in daemons:
            served.__exit__()

    rows = _rows(pg_url)
    report = _slots_report(rows)
    statuses = Counter(r.status for r in rows)
    launched_by = Counter(r.instance_id for r in rows)
    print(f"{count} daemons: {json.dumps(report)}; statuses {dict(statuses)}; "
          f"rows per daemon {sorted(launched_by.values())}")  # fmt: skip
    for schedule, numbers in report.items():
        assert numbers["doubled"] == 0 and numbers["missing"] == 0, (schedule, numbers)
    assert statuses["missed"] == 0 and statuses["skipped"] == 0
    # the runs seen going, and any the victim claimed or started before the kill landed
    crashed = [r for r in rows if r.status == "crashed"]
    assert run_ids <= {r.id for r in crashed}
    assert {r.instance_id for r in crashed} == {victim_instance}
    assert len(launched_by) >= 2  # the slots really were shared
    for served in daemons:
        assert "Traceback" not in served.log


# --------------------------------------------------------------------------- outages


OUTAGE_SCHEDULES = """
[tick]
pipeline = "quick"
interval = "1s"

[long]
pipeline = "slow"
interval = "2s"
overlap = "allow"
"""


def _behind_proxy(root: Path, url: str, name: str, **settings) -> Path:
    base = make_project(root / name, OUTAGE_SCHEDULES, quick=QUICK, slow=SLOW)
    lines = [f'database_url = "{url}"', f"lease_s = {LEASE_S}", 'http = "off"']
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    (base / "flowerd.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    return base


def _report_of(rows: list, schedule: str, every_s: int) -> dict:
    slots = Counter(r.scheduled_at for r in rows if r.schedule == schedule)
    first, last = min(slots), max(slots)
    expected = int((last - first).total_seconds()) // every_s + 1
    wanted = {first + timedelta(seconds=every_s * i) for i in range(expected)}
    return {
        "expected": expected,
        "rows": sum(slots.values()),
        "doubled": sum(n - 1 for n in slots.values()),
        "missing": len(wanted - set(slots)),
    }


@pytest.fixture
def proxy(pg_url: str):
    from tests.pgproxy import Proxy

    proxy = Proxy(pg_url)
    yield proxy
    proxy.close()


@contextlib.contextmanager
def _live_lease(url: str):
    """Another daemon's lease, renewed every second (a daemon that fires nothing)."""
    stop = threading.Event()

    async def hold() -> None:
        async with History.open(url, instance_id="bystander") as history:
            await history.register_daemon()
            held.set()
            while not stop.is_set():
                await asyncio.sleep(0.5)
                await history.renew_lease(LEASE_S)
            await history.unregister_daemon()

    held = threading.Event()
    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    assert held.wait(timeout=bound(30)), "the bystander lease was not taken"
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=bound(30))


def _history_down(served: Served) -> dict:
    status = served.ask("status")
    return status if status["health"]["history"] != "ok" else {}


def test_both_daemons_exit_in_an_outage_and_restart_together_and_every_slot_has_a_row(
    tmp_path: Path, pg_url: str, proxy
):
    """The database goes away under two daemons; `status` still answers from the daemon;
    both exit past history_outage_s, spooling their held rows beside their own state;
    the database comes back and both restart at once (as systemd would): each sees the
    other's fresh lease, and every slot of the outage still ends as exactly one row."""
    bases = [_behind_proxy(tmp_path, proxy.url, f"d{i}", history_outage_s=4) for i in range(2)]
    daemons = [Served(base) for base in bases]
    try:
        for served in daemons:
            served.wait_ready(timeout_s=60)
        wait_for(lambda: len(_rows(pg_url)) >= 4, timeout_s=30, what="rows before the outage")
        proxy.down()
        status = wait_for(lambda: _history_down(daemons[0]), timeout_s=20, what="health")
        assert "unavailable" in status["health"]["history"] and status["daemons"]
        shown = flowerd_here(bases[0], "status")
        assert shown.returncode == 0 and "Traceback" not in shown.stderr + shown.stdout
        assert [served.wait(timeout_s=60) for served in daemons] == [1, 1]
        for base in bases:
            assert (base / ".flowerd" / "history.spool").exists(), base
        time.sleep(6)  # the database stays away a while after both exited: a gap
        proxy.up()
        # systemd restarts both at once: each may see the other's fresh lease before its
        # catch-up -- made certain here by a third lease that is live all along
        with _live_lease(pg_url):
            daemons = [Served(base) for base in bases]
            for served in daemons:
                served.wait_ready(timeout_s=60)
            time.sleep(3)
        _stop_all(daemons)
    finally:
        for served in daemons:
            served.__exit__()
    rows = _rows(pg_url)
    report = {"tick": _report_of(rows, "tick", 1), "long": _report_of(rows, "long", 2)}
    print(f"\noutage, both restarted at once: {json.dumps(report)}")
    for numbers in report.values():
        assert numbers["doubled"] == 0 and numbers["missing"] == 0, report
    assert not [r for r in rows if r.status in ("queued", "running")]
    for base in bases:
        assert not (base / ".flowerd" / "history.spool").exists()
        log = (base / "serve.log").read_text()
        assert "could not be spooled" not in log and "Traceback" not in log, log


def test_after_an_outage_both_lived_through_no_live_run_is_reaped(
    tmp_path: Path, pg_url: str, proxy
):
    """Runs going through an outage longer than lease_s: no daemon's lease could be
    renewed, yet both are alive -- nobody's runs are `crashed` afterwards."""
    bases = [_behind_proxy(tmp_path, proxy.url, f"d{i}", history_outage_s=60) for i in range(2)]
    daemons = [Served(base) for base in bases]
    try:
        for served in daemons:
            served.wait_ready(timeout_s=60)
        wait_for(
            lambda: any(r.status == "running" and r.schedule == "long" for r in _rows(pg_url)),
            timeout_s=30,
            what="a long run going",
        )
        proxy.down()
        time.sleep(LEASE_S * 2)  # every lease expires by the clock meanwhile
        proxy.up()
        wait_for(lambda: all(not _history_down(s) for s in daemons), timeout_s=30)
        time.sleep(LEASE_S * 2)  # renewals (and any reaping) after the database is back
        _stop_all(daemons)
    finally:
        for served in daemons:
            served.__exit__()
    rows = _rows(pg_url)
    crashed = [(r.id, r.status, r.error.message) for r in rows if r.error and "Crashed" in
               r.error.type]  # fmt: skip
    report = {"tick": _report_of(rows, "tick", 1), "long": _report_of(rows, "long", 2)}
    print(f"\noutage both lived through: {json.dumps(report)}; crashed {len(crashed)}")
    assert crashed == []
    for numbers in report.values():
        assert numbers["doubled"] == 0 and numbers["missing"] == 0, report
