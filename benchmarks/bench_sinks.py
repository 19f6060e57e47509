"""What each tracking sink costs flowerd (DESIGN.md "Inside a run"): CPU per recorded run
in the daemon's process (its run path, the sink's threads) with node timings alone, with
OpenLineage on (START and COMPLETE per run, to a receiver in another process) and with
the Hamilton UI on (a real `hamilton ui` in another process; its CPU is not counted).
The run path is bench_observe's: claim, hello_world on the async driver, terminal row in
a real SQLite history.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.observe.hamilton_ui starts the real UI

from benchmarks.bench_observe import RECEIVER, _cpu_per_run_us  # noqa: E402

N_RUNS = 300
N_RUNS_UI = 50  # the UI (Django's development server on SQLite) takes ~5 requests a run
# fired at once, the runs queue on the sink's lane: wait for every report, to count its CPU
PATIENT = SimpleNamespace(tracking_timeout_s=120.0)


def _per_run(base: Path, sinks, n_runs: int) -> float:
    return asyncio.run(_cpu_per_run_us(base, "nodes", None, sinks=sinks, n_runs=n_runs))


def main() -> dict[str, float]:
    from daemon.observe import hamilton_ui, openlineage
    from tests.observe.hamilton_ui import USER, HamiltonUI

    base = Path(tempfile.mkdtemp(prefix="flowerd-bench-sinks-"))
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    ui = HamiltonUI(base / "ui")
    try:
        lineage = {"url": f"http://127.0.0.1:{receiver.stdout.readline().strip()}"}
        shutil.copytree(ROOT / "pipelines", base / "pipelines")
        ui.start()
        ui.make_project()
        section = {"url": ui.url, "project_id": ui.project_id, "username": USER}
        figures: dict[str, list[float]] = {"nodes": [], "openlineage": [], "hamilton_ui": []}
        for _ in range(3):  # interleaved, so drift on a loaded VM hits all alike
            figures["nodes"].append(_per_run(base, [], N_RUNS))
            sink = openlineage.make(PATIENT, lineage)
            figures["openlineage"].append(_per_run(base, [sink], N_RUNS))
            sink = hamilton_ui.make(PATIENT, section)
            figures["hamilton_ui"].append(_per_run(base, [sink], N_RUNS_UI))
    finally:
        ui.stop()
        receiver.kill()
        receiver.wait()
        shutil.rmtree(base, ignore_errors=True)
    per_run = {mode: statistics.median(values) for mode, values in figures.items()}
    print("   recorded run, CPU per run in flowerd's process (median of 3, async driver):")
    print(f"     node timings alone     {per_run['nodes']:8.0f} µs  ({N_RUNS} runs)")
    for mode, runs in (("openlineage", N_RUNS), ("hamilton_ui", N_RUNS_UI)):
        print(f"     + {mode:<20} {per_run[mode]:8.0f} µs  "
              f"(+{per_run[mode] - per_run['nodes']:.0f} µs; {runs} runs)")  # fmt: skip
    return {f"cpu_per_run_us_{mode}": value for mode, value in per_run.items()}


if __name__ == "__main__":
    main()
