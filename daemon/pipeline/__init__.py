"""The pipeline layer: Hamilton's two drivers behind one description of a run.

`Pipelines` loads, builds and runs a project's Hamilton modules; the public
`daemon.PipelineManager` (api.py) is FlowerPower's API on top of it, and the daemon's
runner, workers and validation use it directly.

The only package that imports Hamilton (daemon.runner.workers runs it through Pipelines): a
module that needs Hamilton belongs here, and takes it from daemon.pipeline.core. Its rooms:
core (the import of Hamilton), plans (`RunConfig` -> `_Plan`: names, adapters, refusals),
graph (what a built DAG holds), drivers (one code path builds either driver; drivers are
built once per (mode, modules, config, adapters) and reused until a module file changes or
`reload=True`), execution (`Runs`: retries, log level) and pipelines (`Pipelines`, which
holds those parts: the public API and validation).

    pm = Pipelines(base_dir=".")
    pm.run("hello_world", final_vars=["full_greeting"])                 # sync driver
    await pm.run_async("hello_world", additional_modules=["pipeline_setup"])  # async driver
"""

from __future__ import annotations

from daemon.pipeline.core import ASYNC_DRIVER_MISSING
from daemon.pipeline.inputcheck import InputCheck
from daemon.pipeline.pipelines import Pipelines
from daemon.pipeline.plans import check_pipeline_name
from daemon.pipeline.retries import Attempts, backoff_s
from daemon.pipeline.runconfig import (
    ExecutorConfig,
    RunConfig,
    WithAdapterConfig,
)
from daemon.pipeline.runconfig import _as_run_config as _as_run_config  # daemon.api's

__all__ = [
    "ASYNC_DRIVER_MISSING",
    "Attempts",
    "ExecutorConfig",
    "InputCheck",
    "Pipelines",
    "RunConfig",
    "WithAdapterConfig",
    "backoff_s",
    "check_pipeline_name",
]
