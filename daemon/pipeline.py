"""The pipeline layer: Hamilton's two drivers behind one description of a run.

`Pipelines` loads, builds and runs a project's Hamilton modules; the public
`daemon.PipelineManager` (api.py) is FlowerPower's API on top of it, and the daemon's
runner, workers and validation use it directly.

The only module that imports Hamilton. One code path describes a run (`RunConfig` ->
`_Plan`) and builds either driver from that description; drivers are built once per
(mode, modules, config, adapters) and reused until a module file changes or `reload=True`.

    pm = Pipelines(base_dir=".")
    pm.run("hello_world", final_vars=["full_greeting"])                 # sync driver
    await pm.run_async("hello_world", additional_modules=["pipeline_setup"])  # async driver
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import logging
import types
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon import cluster, extensions, logs
from daemon.cachekey import value_key
from daemon.errors import (
    AsyncDriverUnsupported,
    PipelineError,
    UnknownFinalVar,
    did_you_mean,
)
from daemon.inputs import convert_input
from daemon.modules import Project, module_name_problem, prepare_worker
from daemon.retries import (
    Attempts,
    backoff_s,
    no_reload,
    once,
    retrying_async,
    retrying_sync,
)
from daemon.runconfig import (
    ExecutorConfig,
    RunConfig,
    WithAdapterConfig,
    _as_run_config,
    executor_config,
    user_adapters,
)
from daemon.schedule import SLOT_INPUTS

try:  # the sync driver is Hamilton's core; the async driver may be missing in old versions
    with extensions.autoload_off() as _on_demand:  # each extension once a pipeline uses it
        from hamilton import common as _hamilton_common
        from hamilton import driver as _hamilton_driver
        from hamilton import node as _hamilton_node
        from hamilton import registry as _hamilton_registry
        from hamilton.lifecycle import base as _lifecycle_base
except ImportError as exc:  # pragma: no cover - sf-hamilton is a dependency
    raise ImportError("flowerd needs Hamilton: pip install -U sf-hamilton") from exc
if _on_demand and hasattr(_hamilton_registry, "load_extension"):
    extensions.use(
        _hamilton_registry.load_extension, getattr(_hamilton_registry, "HAMILTON_EXTENSIONS", ())
    )

log = logging.getLogger(__name__)

ASYNC_DRIVER_MISSING = (
    "hamilton.async_driver cannot be imported, so run_async is unavailable; "
    "upgrade Hamilton with `pip install -U sf-hamilton` (or use pm.run(...))"
)
MAX_DRIVERS = 256
_ADAPTER_FLAGS = ("hamilton_tracker", "mlflow", "ray", "opentelemetry", "progressbar", "future")


# --------------------------------------------------------------------------- names


def check_pipeline_name(name: str, what: str = "pipeline") -> str:
    """Pipelines are plain identifiers (no paths, no dots); additional modules may be
    dotted (`pkg.mod`, in the pipelines directory or on sys.path)."""
    problem = module_name_problem(name, dotted=what != "pipeline")
    if problem is not None:
        raise PipelineError(f"{what} name {problem}", field=_FIELD_OF.get(what, what))
    return name


_FIELD_OF = {"pipeline": "pipeline", "additional module": "additional_modules"}
_NAMES_OK: set[tuple[str, ...]] = set()  # (pipeline, *additional modules) checked already


def _checked_names(name: str, additional: Sequence[str]) -> tuple[str, ...]:
    names = (name, *additional)
    try:
        if names in _NAMES_OK:
            return names
    except TypeError:  # an unhashable name: the check below says what is wrong with it
        pass
    check_pipeline_name(name)
    for extra in additional:
        check_pipeline_name(extra, "additional module")
    if len(_NAMES_OK) >= MAX_DRIVERS:
        _NAMES_OK.clear()
    _NAMES_OK.add(names)
    return names


# --------------------------------------------------------------------------- plans


@dataclass(kw_only=True, slots=True)  # not frozen: built on every run, and cheaper so
class _Plan:
    """Everything needed to build and call a driver, resolved once per call."""

    name: str
    mode: str  # "sync" | "async"
    generation: int  # of the pipelines directory: any edit there makes a new one
    modules: tuple[types.ModuleType, ...]
    config: Mapping[str, Any]
    adapters: tuple[Any, ...]
    executor: ExecutorConfig | None
    cache: bool | Mapping[str, Any] | None
    config_key: Hashable | None  # None: no exact key (daemon.cachekey), so never shared
    cacheable: bool  # drivers with executors hold per-run state: never shared
    _key: tuple | None = None

    def key(self) -> tuple:
        """What identifies the DAG and the driver: the modules (by name, in their
        generation), the config and cache options by exact value (daemon.cachekey), the
        adapter objects (kept alive by the cached driver, so their ids stay theirs)."""
        if self._key is None:
            modules = (self.generation, tuple(m.__name__ for m in self.modules))
            adapters = tuple(id(a) for a in self.adapters)
            cache = value_key(self.cache) if self.cache else None
            self._key = (self.mode, modules, self.config_key, adapters, cache)
        return self._key


@dataclass(frozen=True, kw_only=True)
class _Built:
    driver: Any
    variables: frozenset[str]
    sinks: tuple[str, ...]
    dynamic: bool = False  # Parallelizable/Collect: runs need dynamic execution


def _flag_adapters(value: WithAdapterConfig | Mapping | None, mode: str) -> list[Any]:
    """The adapters FlowerPower's switches stand for, or a clear refusal."""
    adapters: list[Any] = []
    if not value:
        return adapters
    flags = value if isinstance(value, WithAdapterConfig) else WithAdapterConfig(**value)
    if flags.progressbar:
        if mode == "async":
            raise AsyncDriverUnsupported(
                "with_adapter.progressbar is a sync node hook: under the async driver every "
                "node is an asyncio task and the bar would misreport; use pm.run(...) "
                "(async_driver=False) for a progress bar"
            )
        try:
            from hamilton.plugins import h_tqdm
        except ImportError as exc:
            raise PipelineError("with_adapter.progressbar needs tqdm: pip install tqdm") from exc
        adapters.append(h_tqdm.ProgressBar())
    if flags.future:
        if mode == "async":
            raise AsyncDriverUnsupported(
                "with_adapter.future runs nodes on a thread pool, which the async driver "
                "cannot do; use pm.run(...) or write async def nodes"
            )
        from hamilton.plugins import h_threadpool

        adapters.append(h_threadpool.FutureAdapter())
    for flag in ("hamilton_tracker", "mlflow", "ray", "opentelemetry"):
        if getattr(flags, flag):
            raise PipelineError(
                f"with_adapter.{flag} needs settings flowerd cannot guess (project, URI, "
                "cluster); build that Hamilton adapter yourself and pass it as "
                f"adapter={{'{flag}': <adapter instance>}}"
            )
    return adapters


def _refuse_for_async(plan: _Plan) -> None:
    """The async driver refuses or mis-runs these; say so before running, not at 02:30."""
    if plan.executor is not None:
        raise AsyncDriverUnsupported(
            f"executor {plan.executor.type!r} needs dynamic execution, which "
            "hamilton.async_driver does not support; use pm.run(...) with the sync driver, "
            "or async def nodes for concurrency",
            field="executor",
        )
    if plan.cache:
        raise AsyncDriverUnsupported(
            "cache is not supported by hamilton.async_driver (it fails at build, "
            "apache/hamilton#1263); use pm.run(...) to cache",
            field="cache",
        )
    for adapter in plan.adapters:
        _refuse_adapter_for_async(adapter)


def _refuse_adapter_for_async(adapter: Any) -> None:
    hooks = _lifecycle_base.LifecycleAdapterSet(adapter)
    name = type(adapter).__name__
    if hooks.does_hook("pre_node_execute", is_async=False) or hooks.does_hook(
        "post_node_execute", is_async=False
    ):
        raise AsyncDriverUnsupported(
            f"adapter {name} has sync node hooks, which misreport under the async driver "
            "(they receive an asyncio.Task); use an async-aware adapter or pm.run(...)",
            field="adapter",
        )
    for method in ("do_node_execute", "do_remote_execute"):
        if hooks.does_method(method, is_async=False):
            raise AsyncDriverUnsupported(
                f"adapter {name} changes how nodes execute ({method}), which "
                "hamilton.async_driver ignores, so it would run without it; use pm.run(...) "
                "(async_driver = false)",
                field="adapter",
            )


# --------------------------------------------------------------------------- manager


class Pipelines:
    """Runs the Hamilton modules in `<base_dir>/pipelines`: FlowerPower's run / run_async
    semantics (the public PipelineManager in api.py adds recording runs)."""

    def __init__(self, base_dir: str | Path = ".", *, pipelines_dir: str | Path | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.pipelines_dir = Path(pipelines_dir or self.base_dir / "pipelines").resolve()
        self._modules = Project(self.pipelines_dir)
        self._drivers: dict[tuple, _Built] = {}
        self._unbuilt: dict[tuple, _Built] = {}  # validation's async drivers (no ainit)
        self._declared: dict[tuple, frozenset[str]] = {}
        self._plain: dict[tuple, _Plan] = {}  # plans of runs with no options: reused
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
            return self._run_async_from_sync(name, cfg)
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
        final_vars = self._final_vars(plan, built, cfg)
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
            if len(self._validated) >= MAX_DRIVERS:
                self._validated.clear()
            self._validated[key] = tuple(warnings)
        return warnings

    def declared_inputs(self, name: str, cfg: RunConfig, names: Sequence[str]) -> frozenset[str]:
        """Which of `names` the run's DAG declares as inputs (nodes no function computes).
        Cached per plan with an exact key: the runner asks on every run (slot inputs)."""
        mode = "sync" if cfg.async_driver is False else "async"
        plan = self._plan(name, no_reload(cfg), mode)
        key = (plan.key(), tuple(names)) if plan.cacheable else None
        found = self._declared.get(key) if key is not None else None
        if found is None:
            built = self._build_sync(plan) if mode == "sync" else self._build_for_validation(plan)
            found = frozenset(_inputs_of(built) & set(names))
            if key is not None:
                if len(self._declared) >= MAX_DRIVERS:
                    self._declared.clear()
                self._declared[key] = found
        return found

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
        declared = {v.name: v.type for v in built.driver.list_available_variables()}
        inputs = {}
        for key, value in raw.items():
            if key in declared:
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
        plan = self._plan(name, cfg, mode)
        built = self._build_sync(plan) if mode == "sync" else self._build_for_validation(plan)
        return plan, built

    def dag(self, name: str, run_config: RunConfig | Mapping | None = None) -> tuple[list, list]:
        """The DAG a run would build, to draw it: nodes as (name, is_input) and edges as
        (dependency, node). Raises PipelineError as `validate` does. Thread-safe."""
        _, built = self._plan_and_describe(name, _as_run_config(run_config, {}))
        nodes = _nodes(built.driver)
        edges = [(dep.name, node.name) for node in nodes for dep in node.dependencies]
        return [(node.name, not _is_function(node)) for node in nodes], edges

    # -- execution with retries (the runner calls these too) ------------------------
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
        plan = self._plan(name, cfg if attempts.count == 1 else no_reload(cfg), "sync")
        try:
            return self._execute_sync_once(plan, cfg)
        finally:
            if _on_dask(plan):
                attempts.where = cluster.where(plan.executor.address)

    async def _retry_async(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        async def attempt() -> dict:
            plan = self._plan(name, cfg if attempts.count == 1 else no_reload(cfg), "async")
            return await self._execute_async_once(plan, cfg)

        if once(cfg):
            attempts.count += 1
            return await self._execute_async_once(self._plan(name, cfg, "async"), cfg)
        return await retrying_async(attempt, cfg, attempts)

    def _execute_sync_once(self, plan: _Plan, cfg: RunConfig) -> dict:
        built = self._build_sync(plan)
        final_vars = self._final_vars(plan, built, cfg)
        if plan.executor is not None and plan.executor.type == "multiprocessing":
            self._modules.install()  # pickle finds nodes by module name in sys.modules
        if _on_dask(plan):
            with cluster.current(cluster.client(plan.executor.address)):
                return built.driver.execute(final_vars, inputs=dict(cfg.inputs or {}))
        return built.driver.execute(final_vars, inputs=dict(cfg.inputs or {}))

    async def _execute_async_once(self, plan: _Plan, cfg: RunConfig) -> dict:
        built = await self._build_async(plan)
        final_vars = self._final_vars(plan, built, cfg)
        try:
            return await built.driver.execute(final_vars, inputs=dict(cfg.inputs or {}))
        except (KeyboardInterrupt, SystemExit) as exc:
            # a sync node runs inline in this task: keep it from ending the event loop
            raise PipelineError(f"pipeline {plan.name!r} raised {type(exc).__name__}") from exc

    def _run_async_from_sync(self, name: str, cfg: RunConfig) -> dict:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.execute_async(name, cfg, Attempts()))
        raise RuntimeError(
            f"pm.run({name!r}, async_driver=True) was called inside a running event loop, "
            f"which it cannot block; use `await pm.run_async({name!r}, ...)` there"
        )

    # -- planning and building ------------------------------------------------------
    def _plan(self, name: str, cfg: RunConfig, mode: str) -> _Plan:
        """Most runs name a pipeline and nothing else that shapes the driver: their plan
        is made once per mode and pipeline generation, not on every run."""
        names = _checked_names(name, cfg.additional_modules)
        generation, modules = self._modules.load(names, reload=cfg.reload)
        if cfg.config or cfg.cache or cfg.executor is not None or cfg.with_adapter or cfg.adapter:
            return self._new_plan(name, cfg, mode, generation, modules)
        plan = self._plain.get((mode, names))
        if plan is None or plan.generation != generation or plan.modules != modules:
            plan = self._new_plan(name, cfg, mode, generation, modules)
            if len(self._plain) >= MAX_DRIVERS:
                self._plain.clear()
            self._plain[(mode, names)] = plan
        return plan

    def _new_plan(
        self, name: str, cfg: RunConfig, mode: str, generation: int, modules: tuple
    ) -> _Plan:
        plain = cfg.executor is None and not cfg.with_adapter and not cfg.adapter
        executor = None if plain else executor_config(cfg.executor)
        adapters = [] if plain else _flag_adapters(cfg.with_adapter, mode)
        config = dict(cfg.config) if cfg.config else {}
        config_key = value_key(config) if config else ()
        plan = _Plan(
            name=name,
            mode=mode,
            generation=generation,
            modules=modules,
            config=config,
            adapters=() if plain else tuple(adapters + user_adapters(cfg.adapter)),
            executor=executor,
            cache=cfg.cache,
            config_key=config_key,
            # a config (or cache option) with no exact key gets a driver of its own per run
            cacheable=executor is None
            and not adapters
            and config_key is not None
            and (not cfg.cache or value_key(cfg.cache) is not None),
        )
        if mode == "async" and (plan.executor or plan.cache or plan.adapters):
            _refuse_for_async(plan)
        return plan

    def _builder(self, plan: _Plan, builder):
        # Later modules override earlier ones (allow_module_overrides). Hamilton finds a
        self._modules.install()  # module's functions through sys.modules: ours, there
        builder = builder.with_modules(*plan.modules).with_config(dict(plan.config))
        builder = builder.allow_module_overrides()
        if plan.adapters:
            builder = builder.with_adapters(*plan.adapters)
        return builder

    def _build_sync(self, plan: _Plan) -> _Built:
        key = plan.key()
        built = self._drivers.get(key) if plan.cacheable else None
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

    def _new_sync(self, plan: _Plan, *, dynamic: bool) -> _Built:
        builder = self._builder(plan, _hamilton_driver.Builder())
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
        shape = self._guard_build(plan, self._builder(plan, _hamilton_driver.Builder()).build)
        if _has_parallelizable(_describe(shape)):
            executor = h_dask.DaskExecutor(client=client)
            builder = builder.enable_dynamic_execution(allow_experimental_mode=True)
            return builder.with_remote_executor(executor)
        adapter = h_dask.DaskGraphAdapter(client, result_builder=h_base.DictResult())
        return builder.with_adapters(adapter)

    async def _build_async(self, plan: _Plan) -> _Built:
        key = plan.key()
        built = self._drivers.get(key) if plan.cacheable else None
        if built is None:
            async_driver = _import_async_driver()
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
        self._drivers.setdefault(key, built)
        while len(self._drivers) > MAX_DRIVERS:
            del self._drivers[next(iter(self._drivers))]

    def _build_for_validation(self, plan: _Plan) -> _Built:
        """Schedules that share a DAG share its check (1,000 schedules of one pipeline
        at start-up: one build, not 1,000)."""
        key = plan.key() if plan.cacheable else None
        built = self._drivers.get(key) or self._unbuilt.get(key) if key else None
        if built is None:
            async_driver = _import_async_driver()
            builder = self._builder(plan, async_driver.Builder())
            built = _describe(self._guard_build(plan, builder.build_without_init))
            if key:
                self._unbuilt[key] = built
                while len(self._unbuilt) > MAX_DRIVERS:
                    del self._unbuilt[next(iter(self._unbuilt))]
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

    @staticmethod
    def _final_vars(plan: _Plan, built: _Built, cfg: RunConfig) -> list[str]:
        """Node names; a function object (Hamilton accepts them) names its node, if it
        comes from one of the run's modules -- Hamilton's own rule and message."""
        modules = {m.__name__ for m in plan.modules}
        final_vars = []
        for var in cfg.final_vars or built.sinks:
            name, error = _hamilton_common.convert_output_value(var, modules)
            if error is not None:
                raise UnknownFinalVar(f"pipeline {plan.name!r}: {error}")
            if name not in built.variables:
                raise UnknownFinalVar(
                    f"pipeline {plan.name!r} has no node {name!r}"
                    f"{did_you_mean(name, built.variables)}; final_vars must name nodes of "
                    f"the DAG (it has: {', '.join(sorted(built.variables)[:20])})"
                )
            final_vars.append(name)
        return final_vars

    @staticmethod
    def _warnings(plan: _Plan, built: _Built) -> list[str]:
        if plan.mode != "async":
            return []
        nodes = [n for n in _nodes(built.driver) if _is_function(n)]
        if nodes and not any(_is_async(n) for n in nodes):
            return [
                f"pipeline {plan.name!r} has only sync functions: under the async driver "
                "(the default) they run on the daemon's event loop and stall it while they "
                "run; add the line `async_driver = false` to its schedules to run it in the "
                "thread pool"
            ]
        return []


def _import_async_driver():
    try:
        return importlib.import_module("hamilton.async_driver")
    except ImportError as exc:
        raise ImportError(ASYNC_DRIVER_MISSING) from exc


def _with_executor(builder, executor: ExecutorConfig | None, worker_args: tuple):
    if executor is None:
        return builder
    from hamilton.execution import executors

    workers = executor.max_workers or 4
    if executor.type == "threadpool":
        remote = executors.MultiThreadingExecutor(max_tasks=workers)
    elif executor.type == "multiprocessing":
        remote = _process_executor(executors)(max_tasks=workers, worker_args=worker_args)
    else:  # dask: see Pipelines._with_dask
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


def _on_dask(plan: _Plan) -> bool:
    return plan.executor is not None and plan.executor.type == "dask"


def _nodes(driver) -> list:
    return list(driver.graph.nodes.values())


def _is_function(node) -> bool:
    """A node computed by a function (not an input the caller supplies)."""
    return not node.user_defined and node.originating_functions is not None


def _is_async(node) -> bool:
    functions = (node.callable, *node.originating_functions) if _is_function(node) else ()
    return any(inspect.iscoroutinefunction(fn) for fn in functions)


def _inputs_of(built: _Built) -> set[str]:
    return {n.name for n in _nodes(built.driver) if n.user_defined}


def _slot_placeholders(built: _Built) -> dict[str, Any]:
    """Stand-ins for the slot inputs (SLOT_INPUTS) a DAG declares, so validation does not
    call them missing: the runner passes the real values."""
    stand_ins = {"scheduled_at": datetime.now(UTC), "run_id": 0}
    declared = _inputs_of(built)  # once: a walk of every node
    return {name: stand_ins[name] for name in SLOT_INPUTS if name in declared}


def _describe(driver) -> _Built:
    nodes = _nodes(driver)
    depended = {dep.name for n in nodes for dep in n.dependencies}
    sinks = tuple(n.name for n in nodes if _is_function(n) and n.name not in depended)
    variables = frozenset(n.name for n in nodes)
    return _Built(driver=driver, variables=variables, sinks=sinks)


def _parallel_nodes(built: _Built) -> list[str]:
    roles = {_hamilton_node.NodeType.EXPAND, _hamilton_node.NodeType.COLLECT}
    return [n.name for n in _nodes(built.driver) if n.node_role in roles]


def _has_parallelizable(built: _Built) -> bool:
    return bool(_parallel_nodes(built))


def _refuse_parallelizable(plan: _Plan, built: _Built) -> None:
    dynamic = _parallel_nodes(built)
    if dynamic:
        raise AsyncDriverUnsupported(
            f"pipeline {plan.name!r} uses Parallelizable/Collect ({', '.join(dynamic[:5])}), "
            "which needs Hamilton's dynamic execution; hamilton.async_driver cannot run it. "
            "Set async_driver = false (`flowerd run --sync`, pm.run(...)): flowerd then runs "
            "it with dynamic execution, as Hamilton does",
            field="async_driver",
        )


__all__ = [
    "ASYNC_DRIVER_MISSING",
    "Attempts",
    "ExecutorConfig",
    "Pipelines",
    "RunConfig",
    "WithAdapterConfig",
    "backoff_s",
    "check_pipeline_name",
]
