"""Beyond one host: what a Dask executor and a shared PostgreSQL cost.

Dask: a real scheduler and two workers on 127.0.0.1; a two-node pipeline and a fan-out
of 20 items, each locally and on the cluster (the first run pays the connection and the
module upload). Leases: a renewal (one transaction: renew, reap, read paused) and slot
claims raced by two daemons' histories, on the PostgreSQL named by
FLOWERD_TEST_POSTGRES_URL (skipped without it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

NODES = """
def a(x: int = 1) -> int:
    return x + 1


def b(a: int) -> int:
    return a * 2
"""
FANOUT = """
from hamilton.htypes import Collect, Parallelizable


def item(count: int = 20) -> Parallelizable[int]:
    yield from range(count)


def doubled(item: int) -> int:
    return item * 2


def total(doubled: Collect[int]) -> int:
    return sum(doubled)
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def bench_dask() -> None:
    from daemon.pipeline import Pipelines, cluster

    dask = str(Path(sys.executable).with_name("dask"))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "pipelines").mkdir()
        (base / "pipelines" / "bench_nodes.py").write_text(textwrap.dedent(NODES))
        (base / "pipelines" / "bench_fanout.py").write_text(textwrap.dedent(FANOUT))
        port = _port()
        address = f"tcp://127.0.0.1:{port}"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp}
        procs = [
            subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--dashboard-address", f"127.0.0.1:{_port()}"], **quiet),
            *(subprocess.Popen([dask, "worker", address, "--name", name, "--nthreads", "1",
                                "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], **quiet)
              for name in ("w1", "w2")),
        ]  # fmt: skip
        try:
            from distributed import Client

            with Client(address, timeout=30, set_as_default=False) as probe:
                probe.wait_for_workers(2, timeout=60)
            pm = Pipelines(base_dir=base)
            on_dask = {"executor": {"type": "dask", "address": address}}
            started = time.perf_counter()
            pm.run("bench_nodes", **on_dask)
            first_ms = (time.perf_counter() - started) * 1000
            print(f"   dask: first run (connect + upload the module): {first_ms:.0f} ms")
            for name in ("bench_nodes", "bench_fanout"):
                local = _timed(lambda n=name: pm.run(n), 20)
                remote = _timed(lambda n=name: pm.run(n, **on_dask), 20)
                print(
                    f"   dask: {name}: local {local:.2f} ms, on the cluster {remote:.1f} ms "
                    f"(+{remote - local:.1f} ms per run)"
                )
        finally:
            cluster.close_all()
            for proc in reversed(procs):  # workers first: they outlive a scheduler
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


async def _bench_leases(admin_url: str) -> None:
    import asyncpg

    from daemon.history import History

    name = f"flowerd_bench_{uuid.uuid4().hex[:8]}"
    dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        one = await History.open(url, instance_id="one")
        two = await History.open(url, instance_id="two")
        await one.register_daemon()
        await two.register_daemon()
        times = []
        for _ in range(50):
            started = time.perf_counter()
            await one.renew_lease(30.0)
            times.append(time.perf_counter() - started)
        print(f"   lease: one renewal (renew + reap + read paused): "
              f"{statistics.median(times) * 1000:.2f} ms median")  # fmt: skip
        t0 = datetime(2026, 11, 30, tzinfo=UTC)

        async def claims(histories, offset: int) -> float:
            started = time.perf_counter()
            for i in range(200):
                slot = t0 + timedelta(seconds=offset + i)
                await asyncio.gather(*(h.claim(pipeline="p", trigger="schedule", schedule="s",
                                               scheduled_at=slot, async_driver=True)
                                       for h in histories))  # fmt: skip
            return (time.perf_counter() - started) / 200 * 1000

        alone = await claims([one], 0)
        raced = await claims([one, two], 1000)
        print(f"   lease: a slot claim, one daemon {alone:.2f} ms; two daemons racing for it "
              f"{raced:.2f} ms (the loser's INSERT .. ON CONFLICT DO NOTHING)")  # fmt: skip
        await two.close()
        await one.close()
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def main() -> None:
    try:
        bench_dask()
    except ImportError as exc:
        print(f"   (dask: not installed: {exc})")
    admin_url = os.environ.get("FLOWERD_TEST_POSTGRES_URL")
    if admin_url:
        asyncio.run(_bench_leases(admin_url))
    else:
        print("   (leases: FLOWERD_TEST_POSTGRES_URL is not set)")


if __name__ == "__main__":
    main()
