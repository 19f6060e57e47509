"""Building Hamilton's drivers from a `_Plan`, and keeping them: one code path builds both
the sync and the async driver; a driver is built once per (mode, modules, config,
adapters) and reused until a module file changes or `reload=True`. A part of Pipelines.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from daemon.errors import PipelineError
from daemon.pipeline import cluster, plans
from daemon.pipeline.core import hamilton_driver, import_async_driver
from daemon.pipeline.graph import (
    _Built,
    _describe,
    _has_parallelizable,
    _inputs_of,
    _is_async,
    _nodes,
    _refuse_parallelizable,
)
from daemon.pipeline.modules import Project, prepare_worker
from daemon.pipeline.plans import _on_dask, _Plan
from daemon.pipeline.runconfig import ExecutorConfig

log = logging.getLogger("daemon.pipeline")  # a part of the pipeline layer: its name


class NodeHooks(Protocol):
    """What the pipeline layer is handed to watch runs' nodes (daemon.observe.taps gives
    it; this package never imports that one): a Hamilton lifecycle adapter per driver
    mode ('sync' | 'async'), put in every driver built."""

    def adapter(self, mode: str) -> Any: ...


class Drivers:
    """Builds a plan's driver, and keeps those that may be shared (a cacheable plan's):
    built ones for runs, unbuilt async ones for validation, and which inputs each
    declares (the runner asks on every run)."""

    def __init__(self, modules: Project, hooks: NodeHooks | None = None):
        self._modules = modules
        self._hooks = hooks  # handed down (daemon.observe): in every driver built
        self.built: dict[tuple, _Built] = {}
        self.unbuilt: dict[tuple, _Built] = {}  # validation's async drivers (no ainit)
        self.declared: dict[tuple, frozenset[str]] = {}

    def inputs_among(self, plan: _Plan, names: Sequence[str]) -> frozenset[str]:
        """Which of `names` the plan's DAG declares as inputs (nodes no function
        computes), kept per plan with an exact key."""
        key = (plan.key(), tuple(names)) if plan.cacheable else None
        found = self.declared.get(key) if key is not None else None
        if found is None:
            found = frozenset(_inputs_of(self.describe(plan)) & set(names))
            if key is not None:
                if len(self.declared) >= plans.MAX_DRIVERS:
                    self.declared.clear()
                self.declared[key] = found
        return found

    def describe(self, plan: _Plan) -> _Built:
        """The driver a run with `plan` would use, to check and describe its DAG (the
        async one unbuilt)."""
        return self.shape_sync(plan) if plan.mode == "sync" else self.for_validation(plan)

    def _builder(self, plan: _Plan, builder):
        # Later modules override earlier ones (allow_module_overrides). Hamilton finds a
        self._modules.install()  # module's functions through sys.modules: ours, there
        builder = builder.with_modules(*plan.modules).with_config(dict(plan.config))
        builder = builder.allow_module_overrides()
        if plan.adapters:
            builder = builder.with_adapters(*plan.adapters)
        if self._hooks is not None:  # not in the plan's key: the same for every plan
            builder = builder.with_adapters(self._hooks.adapter(plan.mode))
        return builder

    def build_sync(self, plan: _Plan) -> _Built:
        key = plan.key()
        built = self.built.get(key) if plan.cacheable else None
        if built is None:
            built = self._new_sync(plan, dynamic=False)
            self._refuse_async_nodes(plan, built)
            if _has_parallelizable(built) and plan.executor is None:
                built = dataclasses.replace(built, dynamic=True)
            if plan.cacheable:
                self._remember(key, built)
        if built.dynamic:
            # Parallelizable with no executor named: Hamilton runs it only with dynamic
            # execution (its synchronous executor), as a user's script would enable. Such a
            # driver may not be shared ("Cannot initialize an already initialized
            # executor"), so each run gets its own; the cached one only describes the DAG.
            return self._new_sync(plan, dynamic=True)
        return built

    def shape_sync(self, plan: _Plan) -> _Built:
        """The DAG a sync run would execute, to check and describe it. A Dask run's
        driver is built without its cluster: reaching the cluster is the run's business
        (an unreachable one fails that run, naming its address), not validation's."""
        if not _on_dask(plan):
            return self.build_sync(plan)
        cluster.check_address(plan.executor.address)
        builder = self._builder(plan, hamilton_driver.Builder())
        built = _describe(self._guard_build(plan, builder.build))
        self._refuse_async_nodes(plan, built)
        if _has_parallelizable(built):
            dynamic = builder.enable_dynamic_execution(allow_experimental_mode=True)
            built = _describe(self._guard_build(plan, dynamic.build))
        return built

    def _new_sync(self, plan: _Plan, *, dynamic: bool) -> _Built:
        builder = self._builder(plan, hamilton_driver.Builder())
        if dynamic:
            builder = builder.enable_dynamic_execution(allow_experimental_mode=True)
        if _on_dask(plan):
            builder = self._with_dask(plan, builder)
        else:
            builder = _with_executor(builder, plan.executor, self._modules.worker_args())
        if plan.cache:
            options = plan.cache if isinstance(plan.cache, Mapping) else {}
            builder = builder.with_cache(**options)
        return dataclasses.replace(
            _describe(self._guard_build(plan, builder.build)), dynamic=dynamic
        )

    def _with_dask(self, plan: _Plan, builder):
        """Every node on the cluster through Hamilton's Dask graph adapter; a DAG with
        Parallelizable blocks runs them through its Dask executor instead."""
        try:
            from hamilton import base as h_base
            from hamilton.plugins import h_dask
        except ImportError as exc:
            raise PipelineError(
                f"executor 'dask' needs Dask: pip install 'flowerd[dask]' ({exc})",
                field="executor",
            ) from None
        client = cluster.client(plan.executor.address)
        log.info("executing on %s", cluster.where(plan.executor.address))
        self._modules.install()
        cluster.ship(client, plan.modules)
        shape = self._guard_build(plan, self._builder(plan, hamilton_driver.Builder()).build)
        if _has_parallelizable(_describe(shape)):
            executor = h_dask.DaskExecutor(client=client)
            builder = builder.enable_dynamic_execution(allow_experimental_mode=True)
            return builder.with_remote_executor(executor)
        adapter = h_dask.DaskGraphAdapter(client, result_builder=h_base.DictResult())
        return builder.with_adapters(adapter)

    async def build_async(self, plan: _Plan) -> _Built:
        key = plan.key()
        built = self.built.get(key) if plan.cacheable else None
        if built is None:
            async_driver = import_async_driver()
            builder = self._builder(plan, async_driver.Builder())
            driver = self._guard_build(plan, builder.build_without_init)
            await driver.ainit()
            built = _describe(driver)
            _refuse_parallelizable(plan, built)
            if plan.cacheable:
                self._remember(key, built)
        return built

    def _remember(self, key: tuple, built: _Built) -> None:
        """Keep at most MAX_DRIVERS drivers; the oldest go first (a long-lived daemon
        whose pipelines are edited builds a new generation each time)."""
        self.built.setdefault(key, built)
        while len(self.built) > plans.MAX_DRIVERS:
            del self.built[next(iter(self.built))]

    def for_validation(self, plan: _Plan) -> _Built:
        """Schedules that share a DAG share its check (1,000 schedules of one pipeline
        at start-up: one build, not 1,000)."""
        key = plan.key() if plan.cacheable else None
        built = self.built.get(key) or self.unbuilt.get(key) if key else None
        if built is None:
            async_driver = import_async_driver()
            builder = self._builder(plan, async_driver.Builder())
            built = _describe(self._guard_build(plan, builder.build_without_init))
            if key:
                self.unbuilt[key] = built
                while len(self.unbuilt) > plans.MAX_DRIVERS:
                    del self.unbuilt[next(iter(self.unbuilt))]
        _refuse_parallelizable(plan, built)
        return built

    @staticmethod
    def _guard_build(plan: _Plan, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except PipelineError:
            raise
        except Exception as exc:
            raise PipelineError(
                f"pipeline {plan.name!r}: Hamilton cannot build the DAG from modules "
                f"{', '.join(m.__name__ for m in plan.modules)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    @staticmethod
    def _refuse_async_nodes(plan: _Plan, built: _Built) -> None:
        async_nodes = [n.name for n in _nodes(built.driver) if _is_async(n)]
        if async_nodes:
            raise PipelineError(
                f"pipeline {plan.name!r} has async def nodes ({', '.join(async_nodes[:5])}) "
                "that the sync driver cannot await; use `await pm.run_async(...)` "
                "(async_driver = true)"
            )


def _with_executor(builder, executor: ExecutorConfig | None, worker_args: tuple):
    if executor is None:
        return builder
    from hamilton.execution import executors

    workers = executor.max_workers or 4
    if executor.type == "threadpool":
        remote = executors.MultiThreadingExecutor(max_tasks=workers)
    elif executor.type == "multiprocessing":
        remote = _process_executor(executors)(max_tasks=workers, worker_args=worker_args)
    else:  # dask: see Drivers._with_dask
        raise AssertionError("dask executors are built by _with_dask")
    return builder.enable_dynamic_execution(allow_experimental_mode=True).with_remote_executor(
        remote
    )


def _process_executor(executors):
    """Hamilton's MultiProcessingExecutor, whose workers first import the pipelines the
    way this process does (a `spawn`ed worker starts with none of them)."""

    class ProcessExecutor(executors.MultiProcessingExecutor):
        def __init__(self, max_tasks: int, worker_args: tuple):
            super().__init__(max_tasks=max_tasks)
            self.worker_args = worker_args

        def create_pool(self):
            from concurrent.futures import ProcessPoolExecutor

            return ProcessPoolExecutor(
                max_workers=self.max_tasks, initializer=prepare_worker, initargs=self.worker_args
            )

    return ProcessExecutor
