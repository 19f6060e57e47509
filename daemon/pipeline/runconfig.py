"""RunConfig and its parts: what to run and how, with FlowerPower's names and meaning.

Plain frozen records (no Hamilton here); daemon.pipeline turns them into a driver.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon import logs
from daemon.errors import PipelineError, did_you_mean

DEFAULT_RETRY_ON = (Exception,)
_DEFAULT_RETRY_ON = DEFAULT_RETRY_ON


def _strict_kwargs(cls):
    """Unknown keyword arguments raise TypeError with a did-you-mean (a dataclass alone
    says only 'unexpected keyword argument'; FlowerPower drops them silently)."""
    generated_init = cls.__init__
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    known = frozenset(names)
    # every field a plain default: the instance dict is filled at once (a frozen
    # dataclass's own __init__ sets each field through object.__setattr__: ~1.3 us of a
    # ~20 us run for RunConfig's 17 fields); __post_init__ still checks the values
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    plain = len(defaults) == len(fields) and all(f.init for f in fields)
    post_init = getattr(cls, "__post_init__", None)

    def __init__(self, **kwargs: Any) -> None:
        if not known.issuperset(kwargs):
            key = next(k for k in kwargs if k not in known)
            raise TypeError(
                f"{cls.__name__} has no field {key!r}{did_you_mean(key, names)}; "
                f"fields: {', '.join(names)}"
            )
        if not plain:
            generated_init(self, **kwargs)
            return
        self.__dict__.update(defaults)
        self.__dict__.update(kwargs)
        if post_init is not None:
            post_init(self)

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


EXECUTOR_TYPES = ("synchronous", "threadpool", "multiprocessing", "dask")


def executor_config(value: ExecutorConfig | Mapping | str | None) -> ExecutorConfig | None:
    """`executor` as an ExecutorConfig; None for the synchronous default."""
    if value is None or isinstance(value, ExecutorConfig):
        config = value
    elif isinstance(value, str):
        config = ExecutorConfig(type=value)
    else:
        config = ExecutorConfig(**value)
    if config is not None and config.num_cpus is not None:  # accepted means applied
        raise PipelineError(
            "executor.num_cpus sizes Ray workers in FlowerPower, and flowerd runs no Ray; "
            "size the threadpool / multiprocessing / dask executor with max_workers",
            field="executor",
        )
    if config is None or config.type in (None, "synchronous"):
        return None
    if config.type not in EXECUTOR_TYPES:
        raise PipelineError(
            f"executor type {config.type!r} is unknown{did_you_mean(config.type, EXECUTOR_TYPES)}"
            f"; use one of {', '.join(EXECUTOR_TYPES)}",
            field="executor",
        )
    return config


def user_adapters(value: Mapping[str, Any] | Sequence[Any] | None) -> list[Any]:
    if value is None:
        return []
    return list(value.values()) if isinstance(value, Mapping) else list(value)


__all__ = ["DEFAULT_RETRY_ON", "ExecutorConfig", "RunConfig", "WithAdapterConfig"]
