"""Logging: one `log_config()` applied by the CLI, and the per-run context.

Library code only ever calls `logging.getLogger(__name__)`; importing `daemon` or running
a pipeline never adds, removes or reconfigures the host application's handlers.

Per-run context lives in two contextvars, so concurrent runs (asyncio tasks or threads)
never see each other's values:
- `run_id_var`: every log line a run emits carries its run id (see `RunContextFilter`).
- `run_level_var`: the `log_level` of a run applies to that run only. Pipeline modules
  are loaded under PIPELINE_LOGGER_ROOT; their loggers become `RunScopedLogger`s, which
  use the run's level while one is set and the logger hierarchy otherwise.
"""

from __future__ import annotations

import contextvars
import logging

PIPELINE_LOGGER_ROOT = "flowerd_pipelines"

run_id_var: contextvars.ContextVar[int | str | None] = contextvars.ContextVar(
    "flowerd_run_id", default=None
)
run_level_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "flowerd_run_level", default=None
)


def level_number(level: str | int) -> int:
    """'debug' / 'INFO' / 10 -> a logging level number; ValueError names the bad value."""
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(str(level).upper())
    if number is None:
        raise ValueError(
            f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


class RunContextFilter(logging.Filter):
    """Adds `record.run_id` ('-' outside a run) for formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = run_id_var.get()
        record.run_id = "-" if run_id is None else run_id
        return True


class RunScopedLogger(logging.Logger):
    """The class of pipeline module loggers: while a run with a `log_level` is active (in
    this task or thread), that level decides; otherwise the usual logger hierarchy does.
    Overriding isEnabledFor (not a filter) keeps disabled calls free: no LogRecord is
    built for a debug line nobody will see."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        run_level = run_level_var.get()
        if run_level is not None:
            return level >= run_level
        return super().isEnabledFor(level)


def scope_pipeline_loggers() -> None:
    """Make every logger under PIPELINE_LOGGER_ROOT run-scoped (idempotent). Called after
    pipeline modules are (re)loaded, since they create their loggers then. Loggers of the
    host application are never touched."""
    prefix = PIPELINE_LOGGER_ROOT + "."
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix) and type(logger) is logging.Logger:
            logger.__class__ = RunScopedLogger
