"""PipelineManager and RunConfig: FlowerPower's Python API on Hamilton's two drivers.

The only module that imports Hamilton. One code path describes a run (`RunConfig` ->
`_Plan`) and builds either driver from that description; drivers are built once per
(mode, modules, config, adapters) and reused until a module file changes or `reload=True`.

    pm = PipelineManager(base_dir=".")
    pm.run("hello_world", final_vars=["full_greeting"])                 # sync driver
    await pm.run_async("hello_world", additional_modules=["pipeline_setup"])  # async driver
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import importlib
import importlib.util
import inspect
import json
import keyword
import logging
import os
import random
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import logs
from daemon.errors import (
    AsyncDriverUnsupported,
    ModuleImportError,
    PipelineError,
    PipelineNotFound,
    UnknownFinalVar,
    did_you_mean,
)

try:  # the sync driver is Hamilton's core; the async driver may be missing in old versions
    from hamilton import driver as _hamilton_driver
    from hamilton import node as _hamilton_node
    from hamilton.lifecycle import base as _lifecycle_base
except ImportError as exc:  # pragma: no cover - sf-hamilton is a dependency
    raise ImportError("flowerd needs Hamilton: pip install -U sf-hamilton") from exc

log = logging.getLogger(__name__)

ASYNC_DRIVER_MISSING = (
    "hamilton.async_driver cannot be imported, so run_async is unavailable; "
    "upgrade Hamilton with `pip install -U sf-hamilton` (or use pm.run(...))"
)
MAX_DRIVERS = 256
_DEFAULT_RETRY_ON = (Exception,)
_EXECUTOR_TYPES = ("synchronous", "threadpool", "multiprocessing", "dask")
_ADAPTER_FLAGS = ("hamilton_tracker", "mlflow", "ray", "opentelemetry", "progressbar", "future")


# --------------------------------------------------------------------------- RunConfig


def _strict_kwargs(cls):
    """Unknown keyword arguments raise TypeError with a did-you-mean (a dataclass alone
    says only 'unexpected keyword argument'; FlowerPower drops them silently)."""
    generated_init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]
    known = frozenset(names)

    def __init__(self, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in known:
                raise TypeError(
                    f"{cls.__name__} has no field {key!r}{did_you_mean(key, names)}; "
                    f"fields: {', '.join(names)}"
                )
        generated_init(self, **kwargs)

    __init__.__signature__ = inspect.signature(generated_init)
    cls.__init__ = __init__
    return cls


@_strict_kwargs
@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """How the sync driver executes nodes: `synchronous` (default), `threadpool`,
    `multiprocessing` (Hamilton's task executors) or `dask` (`address` of a scheduler).
    `num_cpus` is FlowerPower's Ray setting: kept for compatibility, refused if set."""

    type: str | None = None
    max_workers: int | None = None
    num_cpus: int | None = None
    address: str | None = None


@_strict_kwargs
@dataclass(frozen=True, kw_only=True)
class WithAdapterConfig:
    """FlowerPower's adapter switches. Each one that is set is applied, or refused with a
    message saying what it needs -- never accepted and ignored."""

    hamilton_tracker: bool = False
    mlflow: bool = False
    ray: bool = False
    opentelemetry: bool = False
    progressbar: bool = False
    future: bool = False


@_strict_kwargs
@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What to run and how; the same names and meaning as FlowerPower's RunConfig.

    Defaults follow FlowerPower's, except `max_retries = 0`: a scheduler must not
    silently triple a failing run. `async_driver=None` means the mode's default
    (`run` -> sync driver, `run_async` -> async driver)."""

    inputs: Mapping[str, Any] | None = None
    final_vars: Sequence[str] | None = None
    config: Mapping[str, Any] | None = None
    cache: bool | Mapping[str, Any] | None = None
    executor: ExecutorConfig | Mapping[str, Any] | str | None = None
    with_adapter: WithAdapterConfig | Mapping[str, bool] | None = None
    adapter: Mapping[str, Any] | Sequence[Any] | None = None
    log_level: str | None = None
    max_retries: int = 0
    retry_delay: float = 1.0
    jitter_factor: float = 0.1
    retry_exceptions: Sequence[type[BaseException] | str] = _DEFAULT_RETRY_ON
    reload: bool = False
    on_success: Callable[[Any], Any] | None = None
    on_failure: Callable[[BaseException], Any] | None = None
    additional_modules: Sequence[str] = ()
    async_driver: bool | None = None

    def __post_init__(self) -> None:
        if self.log_level is not None:
            logs.level_number(self.log_level)  # ValueError names the bad level
        for name in ("max_retries", "retry_delay", "jitter_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"RunConfig.{name} cannot be negative")
        if isinstance(self.final_vars, str) or isinstance(self.additional_modules, str):
            raise TypeError("RunConfig.final_vars / additional_modules take a list of names")

    def merged(self, overrides: Mapping[str, Any]) -> RunConfig:
        """Keyword arguments beat the same fields of this config (unknown ones: TypeError)."""
        return dataclasses.replace(self, **overrides) if overrides else self


_RUN_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def _as_run_config(run_config: RunConfig | Mapping | None, overrides: dict) -> RunConfig:
    for key in overrides:
        if key not in _RUN_CONFIG_FIELDS:
            hint = did_you_mean(key, _RUN_CONFIG_FIELDS)
            raise TypeError(f"unexpected keyword argument {key!r}{hint}")
    if run_config is None:
        return RunConfig(**overrides)
    if isinstance(run_config, Mapping):
        return RunConfig(**{**run_config, **overrides})
    return run_config.merged(overrides)


# --------------------------------------------------------------------------- modules


@dataclass(frozen=True)
class _Loaded:
    module: types.ModuleType
    path: str
    stamp: tuple[int, int]  # (mtime_ns, size) of the file when loaded
    generation: int


PIPELINE_PACKAGE = logs.PIPELINE_LOGGER_ROOT


def _pipeline_package(directory: Path) -> types.ModuleType:
    """A synthetic package that pipeline modules live under, so a pipeline called `json`
    or `daemon` never shadows a real module, and pipelines can import each other as
    `from flowerd_pipelines import helpers`."""
    package = sys.modules.get(PIPELINE_PACKAGE)
    if package is None:
        package = types.ModuleType(PIPELINE_PACKAGE, "flowerd's pipeline modules")
        package.__path__ = []
        sys.modules[PIPELINE_PACKAGE] = package
    if str(directory) not in package.__path__:
        package.__path__.insert(0, str(directory))
    return package


def check_pipeline_name(name: str, what: str = "pipeline") -> str:
    """Names are plain identifiers: no paths, no dots, no `..`, nothing importable elsewhere."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise PipelineError(
            f"{what} name {name!r} is not a plain identifier; name a module in the "
            "pipelines directory without path or '.py' (e.g. 'hello_world')"
        )
    return name


class _ModuleCache:
    """Loads pipeline modules from one directory, once, and again when the file changes."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def available(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.py") if p.stem.isidentifier())

    def get(self, name: str, *, reload: bool = False) -> _Loaded:
        loaded = self._loaded.get(name)
        if loaded is None:
            check_pipeline_name(name)
        path = loaded.path if loaded else str(self.directory / f"{name}.py")
        try:  # one stat per module per run: an edited file is picked up by the next run
            stat = os.stat(path)
        except FileNotFoundError:
            raise self._not_found(name) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if loaded is not None and loaded.stamp == stamp and not reload:
            return loaded
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None or loaded.stamp != stamp or reload:
                self._generation += 1
                loaded = _Loaded(self._exec(name, Path(path)), path, stamp, self._generation)
                self._loaded[name] = loaded
        return loaded

    def _not_found(self, name: str) -> PipelineNotFound:
        there = self.available()
        return PipelineNotFound(
            f"no pipeline {name!r} in {self.directory}{did_you_mean(name, there)}; "
            f"pipelines there: {', '.join(there) or '(none)'}"
        )

    def _exec(self, name: str, path: Path) -> types.ModuleType:
        _pipeline_package(self.directory)
        qualified = f"{PIPELINE_PACKAGE}.{name}"
        spec = importlib.util.spec_from_file_location(qualified, path)
        module = importlib.util.module_from_spec(spec)
        previous = sys.modules.get(qualified)
        sys.modules[qualified] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # the module's own code failed, not ours
            if previous is not None:
                sys.modules[qualified] = previous
            else:
                sys.modules.pop(qualified, None)
            raise ModuleImportError(
                f"pipeline module {path} raised while importing: {type(exc).__name__}: {exc}"
            ) from exc
        logs.scope_pipeline_loggers()
        return module


# --------------------------------------------------------------------------- plans


@dataclass(kw_only=True, slots=True)  # not frozen: built on every run, and cheaper so
class _Plan:
    """Everything needed to build and call a driver, resolved once per call."""

    name: str
    mode: str  # "sync" | "async"
    modules: tuple[_Loaded, ...]
    config: Mapping[str, Any]
    adapters: tuple[Any, ...]
    executor: ExecutorConfig | None
    cache: bool | Mapping[str, Any] | None
    cacheable: bool  # drivers with executors hold per-run state: never shared

    def key(self) -> tuple:
        modules = tuple(m.generation for m in self.modules)
        config = json.dumps(self.config, sort_keys=True, default=repr) if self.config else ""
        adapters = tuple(id(a) for a in self.adapters)
        return (self.mode, modules, config, adapters, repr(self.cache) if self.cache else "")


@dataclass(frozen=True, kw_only=True)
class _Built:
    driver: Any
    variables: frozenset[str]
    sinks: tuple[str, ...]


def _executor_config(value: ExecutorConfig | Mapping | str | None) -> ExecutorConfig | None:
    if value is None or isinstance(value, ExecutorConfig):
        config = value
    elif isinstance(value, str):
        config = ExecutorConfig(type=value)
    else:
        config = ExecutorConfig(**value)
    if config is not None and config.num_cpus is not None:  # accepted means applied
        raise PipelineError(
            "executor.num_cpus sizes Ray workers in FlowerPower, and flowerd runs no Ray; "
            "size the threadpool / multiprocessing / dask executor with max_workers"
        )
    if config is None or config.type in (None, "synchronous"):
        return None
    if config.type not in _EXECUTOR_TYPES:
        raise PipelineError(
            f"executor type {config.type!r} is unknown{did_you_mean(config.type, _EXECUTOR_TYPES)}"
            f"; use one of {', '.join(_EXECUTOR_TYPES)}"
        )
    return config


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


def _user_adapters(value: Mapping[str, Any] | Sequence[Any] | None) -> list[Any]:
    if value is None:
        return []
    return list(value.values()) if isinstance(value, Mapping) else list(value)


def _refuse_for_async(plan: _Plan) -> None:
    """The async driver refuses or mis-runs these; say so before running, not at 02:30."""
    if plan.executor is not None:
        raise AsyncDriverUnsupported(
            f"executor {plan.executor.type!r} needs dynamic execution, which "
            "hamilton.async_driver does not support; use pm.run(...) with the sync driver, "
            "or async def nodes for concurrency"
        )
    if plan.cache:
        raise AsyncDriverUnsupported(
            "cache is not supported by hamilton.async_driver (it fails at build, "
            "apache/hamilton#1263); use pm.run(...) to cache"
        )
    for adapter in plan.adapters:
        hooks = _lifecycle_base.LifecycleAdapterSet(adapter)
        if hooks.does_hook("pre_node_execute", is_async=False) or hooks.does_hook(
            "post_node_execute", is_async=False
        ):
            raise AsyncDriverUnsupported(
                f"adapter {type(adapter).__name__} has sync node hooks, which misreport "
                "under the async driver (they receive an asyncio.Task); use an async-aware "
                "adapter or pm.run(...)"
            )


# --------------------------------------------------------------------------- retries


def _exception_types(names: Sequence[type[BaseException] | str]) -> tuple[type, ...]:
    """`retry_exceptions` as classes: classes, builtin names, or dotted import paths."""
    if names is _DEFAULT_RETRY_ON:
        return _DEFAULT_RETRY_ON
    key = tuple(names)
    if key not in _EXCEPTION_TYPES:
        _EXCEPTION_TYPES[key] = _resolve_exception_types(key)
    return _EXCEPTION_TYPES[key]


_EXCEPTION_TYPES: dict[tuple, tuple[type, ...]] = {}


def _resolve_exception_types(names: tuple) -> tuple[type, ...]:
    types_: list[type] = []
    for item in names:
        if isinstance(item, type) and issubclass(item, BaseException):
            types_.append(item)
            continue
        found = getattr(builtins, str(item), None)
        if found is None and "." in str(item):
            module_name, _, attr = str(item).rpartition(".")
            try:
                found = getattr(importlib.import_module(module_name), attr, None)
            except ImportError:
                found = None
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise PipelineError(f"retry_exceptions: {item!r} is not an exception class")
        types_.append(found)
    return tuple(types_)


def backoff_s(attempt: int, *, retry_delay: float, jitter_factor: float, rng=random) -> float:
    """Delay before retry number `attempt` (1-based): exponential, plus jitter."""
    base = retry_delay * (2 ** (attempt - 1))
    return base * (1 + jitter_factor * rng.random())


@dataclass
class Attempts:
    """Counts attempts of one run, readable while it is still running (the runner
    records `attempts` even when the run is cancelled or times out)."""

    count: int = 0
    errors: list[dict] = field(default_factory=list)  # of the attempts that were retried


# --------------------------------------------------------------------------- manager


class PipelineManager:
    """Runs the Hamilton modules in `<base_dir>/pipelines` (FlowerPower's PipelineManager)."""

    def __init__(self, base_dir: str | Path = ".", *, pipelines_dir: str | Path | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.pipelines_dir = Path(pipelines_dir or self.base_dir / "pipelines").resolve()
        self._modules = _ModuleCache(self.pipelines_dir)
        self._drivers: dict[tuple, _Built] = {}

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
        mode = "sync" if cfg.async_driver is False else "async"
        plan = self._plan(name, cfg, mode)
        built = self._build_sync(plan) if mode == "sync" else self._build_for_validation(plan)
        final_vars = self._final_vars(plan, built, cfg)
        try:
            built.driver.validate_execution(final_vars, inputs=dict(cfg.inputs or {}))
        except ValueError as exc:
            raise PipelineError(f"pipeline {name!r}: {exc}") from None
        return self._warnings(plan, built)

    def typed_inputs(
        self, name: str, raw: Mapping[str, str], *, async_driver: bool = True
    ) -> dict[str, Any]:
        """`--input K=V` strings as the types the DAG declares for K (str stays str;
        int, float, bool, list, dict are parsed); unknown inputs are refused."""
        if not raw:
            return {}
        mode = "async" if async_driver else "sync"
        plan = self._plan(name, RunConfig(), mode)
        built = self._build_sync(plan) if mode == "sync" else self._build_for_validation(plan)
        declared = {v.name: v.type for v in built.driver.list_available_variables()}
        inputs = {}
        for key, text in raw.items():
            if key not in declared:
                raise PipelineError(
                    f"pipeline {name!r} has no input {key!r}{did_you_mean(key, declared)}"
                )
            inputs[key] = _coerce(key, text, declared[key])
        return inputs

    # -- execution with retries (the runner calls these too) ------------------------
    def execute_sync(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict[str, Any]:
        mode = "async" if cfg.async_driver else "sync"
        if mode == "async":
            raise AsyncDriverUnsupported("execute_sync needs async_driver=False")
        level = logs.level_number(cfg.log_level) if cfg.log_level else None
        token = logs.run_level_var.set(level)
        try:
            return self._retry_sync(name, cfg, attempts)
        finally:
            logs.run_level_var.reset(token)

    async def execute_async(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        level = logs.level_number(cfg.log_level) if cfg.log_level else None
        token = logs.run_level_var.set(level)
        try:
            return await self._retry_async(name, cfg, attempts)
        finally:
            logs.run_level_var.reset(token)

    def _retry_sync(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        retry_on = _exception_types(cfg.retry_exceptions)
        while True:
            attempts.count += 1
            try:
                plan = self._plan(name, cfg if attempts.count == 1 else _no_reload(cfg), "sync")
                result = self._execute_sync_once(plan, cfg)
            except Exception as exc:
                if self._should_retry(exc, attempts, cfg, retry_on):
                    time.sleep(backoff_s(attempts.count, **_delays(cfg)))
                    continue
                _callback(cfg.on_failure, exc)
                raise
            _callback(cfg.on_success, result)
            return result

    async def _retry_async(self, name: str, cfg: RunConfig, attempts: Attempts) -> dict:
        retry_on = _exception_types(cfg.retry_exceptions)
        while True:
            attempts.count += 1
            try:
                plan = self._plan(name, cfg if attempts.count == 1 else _no_reload(cfg), "async")
                result = await self._execute_async_once(plan, cfg)
            except Exception as exc:
                if self._should_retry(exc, attempts, cfg, retry_on):
                    await asyncio.sleep(backoff_s(attempts.count, **_delays(cfg)))
                    continue
                _callback(cfg.on_failure, exc)
                raise
            _callback(cfg.on_success, result)
            return result

    @staticmethod
    def _should_retry(exc: Exception, attempts: Attempts, cfg: RunConfig, retry_on) -> bool:
        if isinstance(exc, PipelineError) or attempts.count > cfg.max_retries:
            return False  # a missing module or bad final var will not fix itself
        if not isinstance(exc, retry_on):
            return False
        attempts.errors.append({"type": type(exc).__name__, "message": str(exc)[:2000]})
        log.warning(
            "attempt %d of %d failed (%s: %s); retrying",
            attempts.count,
            cfg.max_retries + 1,
            type(exc).__name__,
            exc,
        )
        return True

    def _execute_sync_once(self, plan: _Plan, cfg: RunConfig) -> dict:
        built = self._build_sync(plan)
        final_vars = self._final_vars(plan, built, cfg)
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
        for extra in cfg.additional_modules:
            check_pipeline_name(extra, "additional module")
        get = self._modules.get
        modules = (get(name, reload=cfg.reload),) + tuple(
            get(n, reload=cfg.reload) for n in cfg.additional_modules
        )
        plain = cfg.executor is None and not cfg.with_adapter and not cfg.adapter
        executor = None if plain else _executor_config(cfg.executor)
        adapters = [] if plain else _flag_adapters(cfg.with_adapter, mode)
        plan = _Plan(
            name=name,
            mode=mode,
            modules=modules,
            config=dict(cfg.config) if cfg.config else {},
            adapters=() if plain else tuple(adapters + _user_adapters(cfg.adapter)),
            executor=executor,
            cache=cfg.cache,
            cacheable=executor is None and not adapters,
        )
        if mode == "async" and (plan.executor or plan.cache or plan.adapters):
            _refuse_for_async(plan)
        return plan

    def _builder(self, plan: _Plan, builder):
        # Later modules override earlier ones (Hamilton's allow_module_overrides): the
        # main module first, then additional_modules in the order given.
        builder = builder.with_modules(*(m.module for m in plan.modules)).with_config(
            dict(plan.config)
        )
        builder = builder.allow_module_overrides()
        if plan.adapters:
            builder = builder.with_adapters(*plan.adapters)
        return builder

    def _build_sync(self, plan: _Plan) -> _Built:
        key = plan.key()
        built = self._drivers.get(key) if plan.cacheable else None
        if built is None:
            builder = self._builder(plan, _hamilton_driver.Builder())
            builder = _with_executor(builder, plan.executor)
            if plan.cache:
                options = plan.cache if isinstance(plan.cache, Mapping) else {}
                builder = builder.with_cache(**options)
            built = _describe(self._guard_build(plan, builder.build))
            self._refuse_async_nodes(plan, built)
            if plan.cacheable:
                self._remember(key, built)
        return built

    async def _build_async(self, plan: _Plan) -> _Built:
        key = plan.key()
        built = self._drivers.get(key)
        if built is None:
            async_driver = _import_async_driver()
            builder = self._builder(plan, async_driver.Builder())
            driver = self._guard_build(plan, builder.build_without_init)
            await driver.ainit()
            built = _describe(driver)
            _refuse_parallelizable(plan, built)
            self._remember(key, built)
        return built

    def _remember(self, key: tuple, built: _Built) -> None:
        """Keep at most MAX_DRIVERS drivers; the oldest go first (a long-lived daemon
        whose pipelines are edited builds a new generation each time)."""
        self._drivers.setdefault(key, built)
        while len(self._drivers) > MAX_DRIVERS:
            del self._drivers[next(iter(self._drivers))]

    def _build_for_validation(self, plan: _Plan) -> _Built:
        async_driver = _import_async_driver()
        builder = self._builder(plan, async_driver.Builder())
        built = _describe(self._guard_build(plan, builder.build_without_init))
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
                f"{', '.join(m.module.__name__.rsplit('.', 1)[-1] for m in plan.modules)}: "
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
        final_vars = list(cfg.final_vars or built.sinks)
        for var in final_vars:
            if var not in built.variables:
                raise UnknownFinalVar(
                    f"pipeline {plan.name!r} has no node {var!r}"
                    f"{did_you_mean(var, built.variables)}; final_vars must name nodes of "
                    f"the DAG (it has: {', '.join(sorted(built.variables)[:20])})"
                )
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


def _coerce(key: str, text: str, declared: Any) -> Any:
    if declared is str or declared is Any:
        return text
    if declared is bool:
        if text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text.lower() in ("1", "true", "yes", "on")
        raise PipelineError(f"input {key!r} is a bool; got {text!r}")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if declared is float and isinstance(value, int):
        return float(value)
    return value


def _no_reload(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, reload=False) if cfg.reload else cfg


def _delays(cfg: RunConfig) -> dict[str, float]:
    return {"retry_delay": cfg.retry_delay, "jitter_factor": cfg.jitter_factor}


def _callback(fn: Callable | None, arg: Any) -> None:
    if fn is None:
        return
    try:
        fn(arg)
    except Exception:  # a broken callback must not turn a success into a failure
        log.exception("callback %r raised", getattr(fn, "__name__", fn))


def _import_async_driver():
    try:
        return importlib.import_module("hamilton.async_driver")
    except ImportError as exc:
        raise ImportError(ASYNC_DRIVER_MISSING) from exc


def _with_executor(builder, executor: ExecutorConfig | None):
    if executor is None:
        return builder
    from hamilton.execution import executors

    workers = executor.max_workers or 4
    if executor.type == "threadpool":
        remote = executors.MultiThreadingExecutor(max_tasks=workers)
    elif executor.type == "multiprocessing":
        remote = executors.MultiProcessingExecutor(max_tasks=workers)
    else:  # dask: scale out through the user's cluster
        remote = _dask_executor(executor)
    return builder.enable_dynamic_execution(allow_experimental_mode=True).with_remote_executor(
        remote
    )


def _dask_executor(executor: ExecutorConfig):
    try:
        from dask.distributed import Client
        from hamilton.plugins import h_dask
    except ImportError as exc:
        raise PipelineError("executor 'dask' needs dask: pip install 'dask[distributed]'") from exc
    if not executor.address:
        raise PipelineError("executor 'dask' needs an address (the Dask scheduler, tcp://...)")
    return h_dask.DaskExecutor(client=Client(executor.address))


def _nodes(driver) -> list:
    return list(driver.graph.nodes.values())


def _is_function(node) -> bool:
    """A node computed by a function (not an input the caller supplies)."""
    return not node.user_defined and node.originating_functions is not None


def _is_async(node) -> bool:
    functions = (node.callable, *node.originating_functions) if _is_function(node) else ()
    return any(inspect.iscoroutinefunction(fn) for fn in functions)


def _describe(driver) -> _Built:
    nodes = _nodes(driver)
    depended = {dep.name for n in nodes for dep in n.dependencies}
    sinks = tuple(n.name for n in nodes if _is_function(n) and n.name not in depended)
    variables = frozenset(n.name for n in nodes)
    return _Built(driver=driver, variables=variables, sinks=sinks)


def _refuse_parallelizable(plan: _Plan, built: _Built) -> None:
    roles = {_hamilton_node.NodeType.EXPAND, _hamilton_node.NodeType.COLLECT}
    dynamic = [n.name for n in _nodes(built.driver) if n.node_role in roles]
    if dynamic:
        raise AsyncDriverUnsupported(
            f"pipeline {plan.name!r} uses Parallelizable/Collect ({', '.join(dynamic[:5])}), "
            "which needs dynamic execution; hamilton.async_driver cannot run it -- use "
            "pm.run(...) (async_driver = false) with an executor"
        )


__all__ = [
    "ASYNC_DRIVER_MISSING",
    "Attempts",
    "ExecutorConfig",
    "PipelineManager",
    "RunConfig",
    "WithAdapterConfig",
    "backoff_s",
    "check_pipeline_name",
]
