"""Carrying out a pipeline run: either driver, with retries (daemon.pipeline.retries) and the run's
log level scoped to it. `Runs` is a part of Pipelines; the runner and the workers call
Pipelines' `execute_sync` / `execute_async` with their own `Attempts`.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daemon import logs
from daemon.errors import AsyncDriverUnsupported, PipelineError
from daemon.pipeline import cluster
from daemon.pipeline.drivers import Drivers
from daemon.pipeline.graph import _final_vars
from daemon.pipeline.modules import Project
from daemon.pipeline.plans import Plans, _on_dask, _Plan
from daemon.pipeline.retries import Attempts, no_reload, once, retrying_async, retrying_sync
from daemon.pipeline.runconfig import RunConfig
from daemon.revealed import reveal_inputs


class Runs:
    """Carries out runs: `plans` plans each attempt, `drivers` builds (or reuses) its
    driver, `modules` are installed for a multiprocessing executor's workers."""

    def __init__(self, modules: Project, plans: Plans, drivers: Drivers):
        self._modules = modules
        self._plans = plans
        self._drivers = drivers

    def execute_sync(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict[str, Any]:
        mode = "async" if cfg.async_driver else "sync"
        if mode == "async":
            raise AsyncDriverUnsupported("execute_sync needs async_driver=False")
        level = logs.level_number(cfg.log_level) if cfg.log_level else None
        if level is None and logs.run_level_var.get() is None:
            return self._retry_sync(name, cfg, attempts)  # nothing to scope
        token = logs.run_level_var.set(level)
        try:
            return self._retry_sync(name, cfg, attempts)
        finally:
            logs.run_level_var.reset(token)

    async def execute_async(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        level = logs.level_number(cfg.log_level) if cfg.log_level else None
        if level is None and logs.run_level_var.get() is None:
            return await self._retry_async(name, cfg, attempts)  # nothing to scope
        token = logs.run_level_var.set(level)
        try:
            return await self._retry_async(name, cfg, attempts)
        finally:
            logs.run_level_var.reset(token)

    def _retry_sync(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        if once(cfg):  # most runs: no retries, no callbacks -- no wrapper either
            attempts.count += 1
            return self._attempt_sync(name, cfg, attempts)
        return retrying_sync(lambda: self._attempt_sync(name, cfg, attempts), cfg, attempts)

    def _attempt_sync(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        plan = self._plans.plan(name, cfg if attempts.count == 1 else no_reload(cfg), "sync")
        try:
            return self._execute_sync_once(plan, cfg)
        finally:
            if _on_dask(plan):
                attempts.where = cluster.where(plan.executor.address)

    async def _retry_async(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        async def attempt() -> dict:
            plan = self._plans.plan(name, cfg if attempts.count == 1 else no_reload(cfg), "async")
            return await self._execute_async_once(plan, cfg)

        if once(cfg):
            attempts.count += 1
            return await self._execute_async_once(self._plans.plan(name, cfg, "async"), cfg)
        return await retrying_async(attempt, cfg, attempts)

    def _execute_sync_once(self, plan: _Plan, cfg: RunConfig) -> dict:
        built = self._drivers.build_sync(plan)
        final_vars = _final_vars(plan, built, cfg)
        if plan.executor is not None and plan.executor.type == "multiprocessing":
            self._modules.install()  # pickle finds nodes by module name in sys.modules
        if _on_dask(plan):
            with cluster.current(cluster.client(plan.executor.address)):
                return built.driver.execute(final_vars, inputs=reveal_inputs(cfg.inputs or {}))
        return built.driver.execute(final_vars, inputs=reveal_inputs(cfg.inputs or {}))

    async def _execute_async_once(self, plan: _Plan, cfg: RunConfig) -> dict:
        built = await self._drivers.build_async(plan)
        final_vars = _final_vars(plan, built, cfg)
        try:
            return await built.driver.execute(final_vars, inputs=reveal_inputs(cfg.inputs or {}))
        except (KeyboardInterrupt, SystemExit) as exc:
            # a sync node runs inline in this task: keep it from ending the event loop
            raise PipelineError(f"pipeline {plan.name!r} raised {type(exc).__name__}") from exc

    def run_async_from_sync(self, name: str, cfg: RunConfig) -> dict:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.execute_async(name, cfg, Attempts()))
        raise RuntimeError(
            f"pm.run({name!r}, async_driver=True) was called inside a running event loop, "
            f"which it cannot block; use `await pm.run_async({name!r}, ...)` there"
        )
