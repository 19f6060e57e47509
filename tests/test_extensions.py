"""Hamilton's extensions load when a pipeline uses their library (daemon.extensions): a
pandas pipeline written for Hamilton's autoload (@extract_columns on a DataFrame,
@load_from.csv, a DataFrame result) runs unchanged in the Python API, `flowerd run`,
`flowerd serve` and isolation = "process", while a project that never imports pandas
(or dask) loads none of them. Fresh interpreters throughout: Hamilton's registry is
process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.serve import Served, cli, make_project, rows_where, wait_for

FRAMES = '''
"""Written for Hamilton's autoload of its pandas extension."""

import pandas as pd
from hamilton.function_modifiers import extract_columns, load_from, value


@extract_columns("a", "b")
def frame(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame({{"a": range(rows), "b": [10 * i for i in range(rows)]}})


def total(a: pd.Series, b: pd.Series) -> int:
    return int((a + b).sum())


@load_from.csv(path=value({csv!r}))
def loaded_rows(data: pd.DataFrame) -> int:
    return len(data)


def summary(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({{"a": a, "b": b}})
'''

# what a fresh interpreter loaded, after running the pipeline through the Python API
API = """
import json, os, sys
from daemon import PipelineManager
pm = PipelineManager(sys.argv[1])
result = pm.run(sys.argv[2], final_vars=sys.argv[3:])
plugins = sorted(m.rpartition(".")[2] for m in sys.modules if m.startswith("hamilton.plugins."))
print(json.dumps({
    "result": {k: v.to_dict("list") if hasattr(v, "to_dict") else v for k, v in result.items()},
    "plugins": plugins,
    "dask": "dask" in sys.modules,
    "env": os.environ.get("HAMILTON_AUTOLOAD_EXTENSIONS"),
}))
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_text("x,y\n1,2\n3,4\n")
    return make_project(tmp_path, frames=FRAMES.format(csv=str(tmp_path / "data.csv")))


def _api(base: Path, pipeline: str, *final_vars: str, env: dict | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "HAMILTON_AUTOLOAD_EXTENSIONS"}
    done = subprocess.run(
        [sys.executable, "-c", API, str(base), pipeline, *final_vars],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_pandas_pipeline_written_for_autoload_runs_through_the_api(tmp_path: Path):
    seen = _api(_project(tmp_path), "frames", "total", "loaded_rows", "summary")
    assert seen["result"] == {
        "total": 33,
        "loaded_rows": 2,
        "summary": {"a": [0, 1, 2], "b": [0, 10, 20]},
    }
    assert seen["plugins"] == ["pandas_extensions"]  # its own library's, not dask's
    assert not seen["dask"]
    assert seen["env"] is None  # the environment is left as it was (child processes)


def test_a_project_without_pandas_loads_no_extension(tmp_path: Path):
    seen = _api(make_project(tmp_path), "hello_world", "full_greeting")
    assert seen["result"] == {"full_greeting": "Hello, World!"}
    assert seen["plugins"] == []
    assert not seen["dask"]


def test_the_users_own_autoload_setting_is_hamiltons(tmp_path: Path):
    seen = _api(
        make_project(tmp_path), "hello_world", "full_greeting",
        env={"HAMILTON_AUTOLOAD_EXTENSIONS": "1"},
    )  # fmt: skip
    assert "pandas_extensions" in seen["plugins"]  # all of them, at import, as Hamilton does
    assert seen["env"] == "1"


def test_flowerd_run_runs_a_pandas_pipeline(tmp_path: Path):
    done = cli(_project(tmp_path), "run", "frames", "--final-var", "total", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["total"] == 33


SCHEDULES = """
[in_thread]
pipeline = "frames"
cron = "0 0 1 1 *"
async_driver = false
final_vars = ["total", "loaded_rows"]

[in_process]
pipeline = "frames"
cron = "0 0 1 1 *"
async_driver = false
isolation = "process"
final_vars = ["total", "loaded_rows"]

[async_in_process]
pipeline = "frames"
cron = "0 0 1 1 *"
isolation = "process"
final_vars = ["summary"]
"""


def test_serve_runs_a_pandas_pipeline_in_a_thread_and_in_a_worker_process(tmp_path: Path):
    base = _project(tmp_path)
    (base / "schedules" / "test.toml").write_text(SCHEDULES)
    with Served(base) as served:
        served.wait_ready()
        names = ("in_thread", "in_process", "async_in_process")
        for name in names:
            served.ask("trigger", schedule=name)
        for name in names:
            rows = wait_for(
                lambda name=name: [r for r in rows_where(base, schedule=name) if r.finished_at],
                timeout_s=60,
                what=f"the run of {name}",
            )
            assert rows[0].status == "success", (name, rows[0].error, served.log)
        assert served.stop() == 0
