"""Retries of one run: which exceptions retry, the backoff between attempts, and the
success / failure callbacks (FlowerPower's max_retries, retry_delay, jitter_factor,
retry_exceptions, on_success, on_failure)."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import importlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.errors import PipelineError
from daemon.pipeline.runconfig import DEFAULT_RETRY_ON as _DEFAULT_RETRY_ON
from daemon.pipeline.runconfig import RunConfig

log = logging.getLogger("daemon.retries")  # its name before the move


def exception_types(names: Sequence[type[BaseException] | str]) -> tuple[type, ...]:
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
    where: str | None = None  # where it ran, if not here (the Dask cluster and dashboard)


def no_reload(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, reload=False) if cfg.reload else cfg


def delays(cfg: RunConfig) -> dict[str, float]:
    return {"retry_delay": cfg.retry_delay, "jitter_factor": cfg.jitter_factor}


def callback(fn: Callable | None, arg: Any) -> None:
    if fn is None:
        return
    try:
        fn(arg)
    except Exception:  # a broken callback must not turn a success into a failure
        log.exception("callback %r raised", getattr(fn, "__name__", fn))


def once(cfg: RunConfig) -> bool:
    """One attempt and no callbacks: what `retrying_sync` would do is just the call."""
    return not cfg.max_retries and cfg.on_success is None and cfg.on_failure is None


def retrying_sync(attempt: Callable[[], Any], cfg: RunConfig, attempts: Attempts) -> Any:
    """`attempt()` until it succeeds or may not be retried, with backoff between tries;
    then the success or failure callback."""
    retry_on = exception_types(cfg.retry_exceptions)
    while True:
        attempts.count += 1
        try:
            result = attempt()
        except Exception as exc:
            if should_retry(exc, attempts, cfg, retry_on):
                time.sleep(backoff_s(attempts.count, **delays(cfg)))
                continue
            callback(cfg.on_failure, exc)
            raise
        callback(cfg.on_success, result)
        return result


async def retrying_async(attempt: Callable[[], Any], cfg: RunConfig, attempts: Attempts) -> Any:
    """`retrying_sync` for a coroutine function, sleeping without blocking the loop."""
    retry_on = exception_types(cfg.retry_exceptions)
    while True:
        attempts.count += 1
        try:
            result = await attempt()
        except Exception as exc:
            if should_retry(exc, attempts, cfg, retry_on):
                await asyncio.sleep(backoff_s(attempts.count, **delays(cfg)))
                continue
            callback(cfg.on_failure, exc)
            raise
        callback(cfg.on_success, result)
        return result


def should_retry(exc: Exception, attempts: Attempts, cfg: RunConfig, retry_on) -> bool:
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


__all__ = ["Attempts", "backoff_s", "once", "retrying_async", "retrying_sync"]
