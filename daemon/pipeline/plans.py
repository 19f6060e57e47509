"""What a run needs to build its driver, resolved once per call: its checked names, its
`_Plan` (modules, config, adapters, executor, cache, and the key drivers are cached by),
`Plans` (which makes them, and keeps those of runs with no options) and the refusals of
what the async driver cannot run.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
Names with a leading underscore are private to that package.
"""

from __future__ import annotations

import types
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.errors import AsyncDriverUnsupported, PipelineError
from daemon.pipeline.cachekey import value_key
from daemon.pipeline.core import lifecycle_base
from daemon.pipeline.modules import Project, module_name_problem
from daemon.pipeline.runconfig import (
    ExecutorConfig,
    RunConfig,
    WithAdapterConfig,
    executor_config,
    user_adapters,
)

MAX_DRIVERS = 256  # each cache of the layer (drivers, plans, checks) holds at most this many
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
    config_key: Hashable | None  # None: no exact key (daemon.pipeline.cachekey), so never shared
    cacheable: bool  # drivers with executors hold per-run state: never shared
    _key: tuple | None = None

    def key(self) -> tuple:
        """What identifies the DAG and the driver: the modules (by name, in their
        generation), the config and cache options by exact value (daemon.pipeline.cachekey), the
        adapter objects (kept alive by the cached driver, so their ids stay theirs)."""
        if self._key is None:
            modules = (self.generation, tuple(m.__name__ for m in self.modules))
            adapters = tuple(id(a) for a in self.adapters)
            cache = value_key(self.cache) if self.cache else None
            self._key = (self.mode, modules, self.config_key, adapters, cache)
        return self._key


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
    hooks = lifecycle_base.LifecycleAdapterSet(adapter)
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


def _on_dask(plan: _Plan) -> bool:
    return plan.executor is not None and plan.executor.type == "dask"


class Plans:
    """Makes a run's `_Plan` from its pipeline's modules; most runs name a pipeline and
    nothing else that shapes the driver: their plan is made once per mode and pipeline
    generation, not on every run."""

    def __init__(self, modules: Project):
        self._modules = modules
        self._plain: dict[tuple, _Plan] = {}  # plans of runs with no options: reused

    def plan(self, name: str, cfg: RunConfig, mode: str) -> _Plan:
        names = _checked_names(name, cfg.additional_modules)
        generation, modules = self._modules.load(names, reload=cfg.reload)
        if cfg.config or cfg.cache or cfg.executor is not None or cfg.with_adapter or cfg.adapter:
            return _new_plan(name, cfg, mode, generation, modules)
        plan = self._plain.get((mode, names))
        if plan is None or plan.generation != generation or plan.modules != modules:
            plan = _new_plan(name, cfg, mode, generation, modules)
            if len(self._plain) >= MAX_DRIVERS:
                self._plain.clear()
            self._plain[(mode, names)] = plan
        return plan


def _new_plan(name: str, cfg: RunConfig, mode: str, generation: int, modules: tuple) -> _Plan:
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
