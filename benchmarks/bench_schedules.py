"""10,000 schedules (issue 27 goal 1): what a big project costs the daemon.

A project of N daily cron schedules of hello_world (sync driver, each its own input),
laid out as one file and as files of 100, and measured with the real commands:
`flowerd validate` (whole command, and `load_and_validate` alone: after the imports),
exec -> READY=1 of a real `flowerd serve` (default settings; READY read from our own
$NOTIFY_SOCKET), its RSS and its idle CPU from /proc, `flowerd schedules --json` against
it, and a SIGHUP with one file changed: signal -> READY=1 after RELOADING=1.

    python benchmarks/bench_schedules.py            # 10,000 schedules
    python benchmarks/bench_schedules.py --quick    # 300, short idle window (tests)

Goals: validate <= 1 s, start <= 1 s, idle <= 0.5 % CPU, RSS <= 150 MiB, schedules --json
<= 0.5 s, reload <= 0.5 s. This is a noisy 2-core VM: each figure prints wall and CPU time.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLOWERD = str(Path(sys.executable).with_name("flowerd"))
GOALS = {
    "validate": 1.0,
    "start": 1.0,
    "idle_cpu_pct": 0.5,
    "rss_mib": 150,
    "json": 0.5,
    "reload": 0.5,
}


def schedule_table(i: int) -> str:
    return (
        f'[s{i:05d}]\npipeline = "hello_world"\ncron = "{i % 60} {i % 24} * * *"\n'
        f'async_driver = false\nfinal_vars = ["full_greeting"]\ninputs = {{ name = "c{i}" }}\n'
    )


def make_project(base: Path, count: int, per_file: int) -> Path:
    """`count` schedules in files of `per_file` (one file when per_file >= count)."""
    shutil.copytree(REPO / "pipelines", base / "pipelines", dirs_exist_ok=True)
    schedules = base / "schedules"
    schedules.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, per_file):
        tables = [schedule_table(i) for i in range(start, min(count, start + per_file))]
        (schedules / f"f{start // per_file:04d}.toml").write_text("\n".join(tables))
    return base


@dataclass
class Timed:
    wall_s: float
    cpu_s: float
    out: str


def run_timed(args: list[str], cwd: Path) -> Timed:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, proc.stdout)


VALIDATE_ONLY = """
import sys, time
from pathlib import Path
from daemon.pipeline import Pipelines
from daemon.serve.validate import load_and_validate
from daemon.settings import load_settings
settings = load_settings(Path(sys.argv[1]))
pm = Pipelines(settings.base_dir, pipelines_dir=settings.pipelines_dir)
started = time.process_time(); wall = time.perf_counter()
schedules, _ = load_and_validate(settings, pm)
print(len(schedules), time.perf_counter() - wall, time.process_time() - started)
"""


def validate_after_imports(base: Path) -> tuple[float, float]:
    out = run_timed([sys.executable, "-c", VALIDATE_ONLY, str(base)], REPO).out.split()
    return float(out[1]), float(out[2])


class Notify:
    """Our own $NOTIFY_SOCKET: what the daemon tells systemd, with when it arrived."""

    def __init__(self, directory: Path):
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def wait_for(self, word: str, timeout_s: float) -> float:
        """perf_counter() when a datagram holding `word` (e.g. READY=1) arrives."""
        deadline = time.perf_counter() + timeout_s
        while (left := deadline - time.perf_counter()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536).decode(errors="replace")
            except TimeoutError:
                break
            if word in data.splitlines():
                return time.perf_counter()
        raise TimeoutError(f"no {word} in {timeout_s:g} s")

    def close(self) -> None:
        self.sock.close()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_serve(base: Path, *, idle_s: float, changed: Path, timeout_s: float) -> dict:
    notify = Notify(base)
    log = open(base / "serve.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "FLOWERD_SHUTDOWN_GRACE": "2"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [FLOWERD, "--base-dir", str(base), "serve"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        figures = {"start": notify.wait_for("READY=1", timeout_s) - started}
        figures["start_cpu"] = proc_cpu_s(proc.pid)
        time.sleep(min(1.0, idle_s / 4))  # start-up's last tasks settle
        cpu0, wall0 = proc_cpu_s(proc.pid), time.perf_counter()
        time.sleep(idle_s)
        figures["idle_cpu_pct"] = (
            100 * (proc_cpu_s(proc.pid) - cpu0) / (time.perf_counter() - wall0)
        )
        figures["rss_mib"] = proc_rss_mib(proc.pid)
        listed = run_timed([FLOWERD, "--base-dir", str(base), "schedules", "--json"], base)
        count = len(json.loads(listed.out))
        figures["json"], figures["json_cpu"], figures["json_count"] = (
            listed.wall_s,
            listed.cpu_s,
            count,
        )
        text = changed.read_text()
        changed.write_text(text.replace('name = "c', 'name = "changed', 1))
        cpu0 = proc_cpu_s(proc.pid)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1", timeout_s)
        figures["reload"] = notify.wait_for("READY=1", timeout_s) - sent
        figures["reload_cpu"] = proc_cpu_s(proc.pid) - cpu0
        figures["rss_after_reload_mib"] = proc_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()
    reloaded = [
        line for line in (base / "serve.log").read_text().splitlines() if "reloaded:" in line
    ]
    figures["reload_summary"] = reloaded[-1].split("reloaded:", 1)[1].strip() if reloaded else "?"
    return figures


def bench_layout(count: int, per_file: int, *, idle_s: float, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_schedules_") as tmp:
        base = make_project(Path(tmp), count, per_file)
        validated = run_timed([FLOWERD, "--base-dir", str(base), "validate"], base)
        figures = {"validate": validated.wall_s, "validate_cpu": validated.cpu_s}
        figures["validate_after_imports"], figures["validate_after_imports_cpu"] = (
            validate_after_imports(base)
        )
        changed = sorted((base / "schedules").glob("*.toml"))[-1]
        figures.update(measure_serve(base, idle_s=idle_s, changed=changed, timeout_s=timeout_s))
    return figures


def report(name: str, figures: dict) -> None:
    print(f"  {name}")
    for key, goal in GOALS.items():
        value = figures[key]
        unit = {"idle_cpu_pct": "%", "rss_mib": " MiB"}.get(key, " s")
        cpu = f" (cpu {figures[key + '_cpu']:.2f} s)" if key + "_cpu" in figures else ""
        mark = "ok" if value <= goal else "MISS"
        print(f"    {key:14s} {value:8.3f}{unit}{cpu}  goal <= {goal:g}{unit}  {mark}")
    print(
        f"    validate after imports {figures['validate_after_imports']:.3f} s "
        f"(cpu {figures['validate_after_imports_cpu']:.2f} s); start cpu "
        f"{figures['start_cpu']:.2f} s; rss after reload {figures['rss_after_reload_mib']:.0f} "
        f"MiB; schedules listed {figures['json_count']}"
    )
    print(f"    reload: {figures['reload_summary']}")


def main(quick: bool = False) -> dict:
    count = 300 if quick else 10_000
    idle_s = 2.0 if quick else 20.0
    results = {}
    for name, per_file in ((f"{count} in one file", count), (f"{count} in files of 100", 100)):
        figures = bench_layout(count, per_file, idle_s=idle_s, timeout_s=120)
        report(name, figures)
        results[name] = figures
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
