"""`Pipelines`: a project's Hamilton modules loaded, built and run -- FlowerPower's run /
run_async, and what the daemon asks of them (validation, prepared drivers, runs with the
runner's attempts). Re-exported by daemon.pipeline, whose docstring tells its rooms.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from daemon import secrets
from daemon.errors import PipelineError, did_you_mean
from daemon.inputs import SLOT_INPUTS, convert_input
from daemon.pipeline import plans
from daemon.pipeline.cachekey import value_key
from daemon.pipeline.drivers import Drivers, NodeHooks
from daemon.pipeline.execution import Runs
from daemon.pipeline.graph import (
    _Built,
    _final_vars,
    _is_async,
    _is_function,
    _nodes,
    _slot_placeholders,
)
from daemon.pipeline.modules import Project
from daemon.pipeline.plans import Plans, _Plan
from daemon.pipeline.retries import Attempts, no_reload
from daemon.pipeline.runconfig import RunConfig, _as_run_config


class Pipelines:
    """Runs the Hamilton modules in `<base_dir>/pipelines`: FlowerPower's run / run_async
    semantics (the public PipelineManager in api.py adds recording runs). Its parts: the
    modules (`Project`), `Plans` (what each run builds), `Drivers` (built and kept) and
    `Runs` (carried out, with retries); it keeps validation and the public API."""

    def __init__(
        self,
        base_dir: str | Path = ".",
        *,
        pipelines_dir: str | Path | None = None,
        node_hooks: NodeHooks | None = None,
    ):
        self.base_dir = Path(base_dir).resolve()
        self.pipelines_dir = Path(pipelines_dir or self.base_dir / "pipelines").resolve()
        self.node_hooks = node_hooks  # daemon.observe's adapters, in every driver built
        self._modules = Project(self.pipelines_dir)
        self._plans = Plans(self._modules)
        self._drivers = Drivers(self._modules, node_hooks)
        self._runs = Runs(self._modules, self._plans, self._drivers)
        self._validated: dict[tuple, tuple[str, ...]] = {}  # checks passed: their warnings

    def list_pipelines(self) -> list[str]:
        return self._modules.available()

    # -- the public API -------------------------------------------------------------
    def run(
        self, name: str, run_config: RunConfig | Mapping | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run with the sync driver (or, if `async_driver=True`, the async driver in a
        private event loop -- refused inside a running loop: use `await pm.run_async`)."""
        cfg = _as_run_config(run_config, kwargs)
        if cfg.async_driver:
            return self._runs.run_async_from_sync(name, cfg)
        return self.execute_sync(name, cfg, Attempts())

    async def run_async(
        self, name: str, run_config: RunConfig | Mapping | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run with `hamilton.async_driver`, awaited on the current event loop."""
        cfg = _as_run_config(run_config, kwargs)
        if cfg.async_driver is False:
            raise ValueError(
                "run_async(...) always uses the async driver, but async_driver=False was "
                "given; use pm.run(...) for synchronous execution, or set async_driver=True"
            )
        return await self.execute_async(name, cfg, Attempts())

    def validate(self, name: str, run_config: RunConfig | Mapping | None = None, **kwargs):
        """Build the driver the run would use and check final_vars and required inputs.
        Returns warnings (strings); raises PipelineError for what would fail."""
        cfg = _as_run_config(run_config, kwargs)
        plan, built = self._plan_and_describe(name, cfg)
        final_vars = _final_vars(plan, built, cfg)
        # schedules that differ only in their triggers share one check (1,000 at start-up)
        key = (plan.key(), tuple(final_vars), value_key(cfg.inputs)) if plan.cacheable else None
        if key is not None and key[2] is not None and key in self._validated:
            return list(self._validated[key])
        inputs = {**_slot_placeholders(built), **dict(cfg.inputs or {})}
        try:
            built.driver.validate_execution(final_vars, inputs=inputs)
        except ValueError as exc:
            raise PipelineError(f"pipeline {name!r}: {exc}", field="inputs") from None
        warnings = self._warnings(plan, built)
        if key is not None and key[2] is not None:
            if len(self._validated) >= plans.MAX_DRIVERS:
                self._validated.clear()
            self._validated[key] = tuple(warnings)
        return warnings

    async def prepare(self, name: str, run_config: RunConfig) -> None:
        """Build and keep the driver a run with `run_config` uses, and what the runner
        asks of it (its slot inputs), so that its first run finds them built: the
        daemon's start-up does it, not its first slot. Drivers that are not shared (a
        config with no exact key, executors, Dask: reaching a cluster is the run's) are
        left to their runs."""
        mode = "sync" if run_config.async_driver is False else "async"
        plan = self._plans.plan(name, no_reload(run_config), mode)
        if not plan.cacheable:
            return
        if mode == "async":
            await self._drivers.build_async(plan)
        else:
            self._drivers.build_sync(plan)
        self.declared_inputs(name, run_config, SLOT_INPUTS)

    def declared_inputs(self, name: str, cfg: RunConfig, names: Sequence[str]) -> frozenset[str]:
        """Which of `names` the run's DAG declares as inputs (nodes no function computes).
        Cached per plan with an exact key: the runner asks on every run (slot inputs)."""
        mode = "sync" if cfg.async_driver is False else "async"
        return self._drivers.inputs_among(self._plans.plan(name, no_reload(cfg), mode), names)

    def graph(self, name: str, cfg: RunConfig) -> Any:
        """The Hamilton graph a run with `cfg` executes, as this process built it (a kept
        driver's, for a plan with an exact key: no build): to report the nodes of a run
        that a worker process carried out (daemon.observe's Hamilton UI sink)."""
        mode = "sync" if cfg.async_driver is False else "async"
        plan = self._plans.plan(name, no_reload(cfg), mode)
        built = self._drivers.built.get(plan.key()) if plan.cacheable else None
        return (built or self._drivers.describe(plan)).driver.graph

    def execute_sync(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict[str, Any]:
        """One run with the sync driver, counting its attempts in `attempts` (the
        runner's and the workers' entry)."""
        return self._runs.execute_sync(name, cfg, attempts)

    def execute_async(
        self, name: str, cfg: RunConfig, attempts: Attempts
    ) -> Coroutine[Any, Any, dict]:
        """One run with the async driver, on the current loop (see execute_sync): Runs'
        coroutine itself, awaited by the caller (no second coroutine per run)."""
        return self._runs.execute_async(name, cfg, attempts)

    def typed_inputs(
        self,
        name: str,
        raw: Mapping[str, Any],
        *,
        async_driver: bool = True,
        run_config: RunConfig | None = None,
        strict: bool = True,
    ) -> dict[str, Any]:
        """Inputs (`--input K=V` strings, or a schedule file's values) as the types the DAG
        declares for them where nothing is lost (daemon.inputs.convert_input, one rule
        for both). `strict`: an input the DAG does not have is refused (the CLI);
        otherwise it is passed on as it is (a schedule file, as Hamilton would)."""
        if not raw:
            return {}
        cfg = dataclasses.replace(run_config or RunConfig(), async_driver=async_driver, inputs={})
        _, built = self._plan_and_describe(name, cfg)
        declared = {node.name: node.type for node in _nodes(built.driver)}
        inputs = {}
        for key, value in raw.items():
            if secrets.is_reference(value):  # read when the run runs (daemon.revealed)
                inputs[key] = value
            elif key in declared:
                inputs[key] = convert_input(key, value, declared[key])
            elif not strict:
                inputs[key] = value
            else:
                raise PipelineError(
                    f"pipeline {name!r} has no input {key!r}{did_you_mean(key, declared)}",
                    field=f"inputs.{key}",
                )
        return inputs

    def _plan_and_describe(self, name: str, cfg: RunConfig) -> tuple[_Plan, _Built]:
        """The plan and driver a run with `cfg` would use (the async one unbuilt)."""
        mode = "sync" if cfg.async_driver is False else "async"
        plan = self._plans.plan(name, cfg, mode)
        return plan, self._drivers.describe(plan)

    def dag(self, name: str, run_config: RunConfig | Mapping | None = None) -> tuple[list, list]:
        """The DAG a run would build, to draw it: nodes as (name, is_input) and edges as
        (dependency, node). Raises PipelineError as `validate` does. Thread-safe."""
        _, built = self._plan_and_describe(name, _as_run_config(run_config, {}))
        nodes = _nodes(built.driver)
        edges = [(dep.name, node.name) for node in nodes for dep in node.dependencies]
        return [(node.name, not _is_function(node)) for node in nodes], edges

    @staticmethod
    def _warnings(plan: _Plan, built: _Built) -> list[str]:
        if plan.mode != "async":
            return []
        nodes = [n for n in _nodes(built.driver) if _is_function(n)]
        if nodes and not any(_is_async(n) for n in nodes):
            return [
                f"pipeline {plan.name!r} has only sync functions: under the async driver "
                "(the default) they run on the daemon's event loop and stall it while they "
                "run; add the line `async_driver = false` to its schedules (or to "
                "[defaults] in flowerd.toml, for all) to run it in the thread pool"
            ]
        return []
