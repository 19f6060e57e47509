"""Hamilton's extensions load when a pipeline uses their library (daemon.pipeline.extensions): a
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

from tests.contract import bound
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
        timeout=bound(60),
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
    # its own library's (and those of libraries already imported, as numpy), not dask's
    assert "pandas_extensions" in seen["plugins"]
    assert not {"dask_extensions", "polars_extensions"} & set(seen["plugins"])
    assert not seen["dask"]
    assert seen["env"] is None  # the environment is left as it was (child processes)


def test_a_project_without_pandas_loads_no_extension(tmp_path: Path):
    seen = _api(make_project(tmp_path), "hello_world", "full_greeting")
    assert seen["result"] == {"full_greeting": "Hello, World!"}
    # Hamilton itself imports pandas (and numpy): their extensions cost next to nothing;
    # a library nothing imported (dask: ~0.3 s) is never loaded for its extension
    assert "dask_extensions" not in seen["plugins"]
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


def test_an_additional_module_from_sys_path_that_decorates_a_frame_at_import(tmp_path: Path):
    """A module outside pipelines/ (on sys.path) using @extract_columns at import: the
    extension loads when it imports pandas, before its decorators run."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "shared_frames.py").write_text(
        "import pandas as pd\n"
        "from hamilton.function_modifiers import extract_columns\n\n"
        "@extract_columns('a', 'b')\n"
        "def frame() -> pd.DataFrame:\n"
        "    return pd.DataFrame({'a': [1, 2], 'b': [3, 4]})\n\n"
        "def total(a: pd.Series, b: pd.Series) -> int:\n"
        "    return int(a.sum() + b.sum())\n"
    )
    base = make_project(tmp_path / "p", user="def unused() -> int:\n    return 1\n")
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(lib)!r})\n"
        "from daemon.api import PipelineManager\n"
        f"pm = PipelineManager(base_dir={str(base)!r})\n"
        "out = pm.run('user', final_vars=['total'], additional_modules=['shared_frames'])\n"
        "print(json.dumps(out))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != "HAMILTON_AUTOLOAD_EXTENSIONS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=bound(60), env=clean
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"total": 10}
