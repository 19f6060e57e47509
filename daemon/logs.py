"""Logging: one `log_config()` applied by the CLI, and the per-run context.

Library code only ever calls `logging.getLogger(__name__)`; importing `daemon` or running
a pipeline never adds, removes or reconfigures the host application's handlers.

Per-run context lives in two contextvars, so concurrent runs (asyncio tasks or threads)
never see each other's values:
- `run_id_var`: every log line a run emits carries its run id (see `RunContextFilter`).
- `run_level_var`: the `log_level` of a run applies to that run only. Pipeline modules
  are loaded under PIPELINE_LOGGER_ROOT; their loggers get `RunLevelFilter`, which lets a
  record through at the run's level, or else at the level the logger would have had.
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


class RunLevelFilter(logging.Filter):
    """On a pipeline module's logger (set to level 1): applies the run's level if one is
    set, else the effective level of the namespace root (what the host configured)."""

    def filter(self, record: logging.LogRecord) -> bool:
        level = run_level_var.get()
        if level is None:
            level = logging.getLogger(PIPELINE_LOGGER_ROOT).getEffectiveLevel()
        return record.levelno >= level


_RUN_LEVEL_FILTER = RunLevelFilter()


def scope_pipeline_loggers() -> None:
    """Give every logger under PIPELINE_LOGGER_ROOT the run-level filter (idempotent).
    Called after pipeline modules are (re)loaded, since they create their loggers then."""
    prefix = PIPELINE_LOGGER_ROOT + "."
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix) and isinstance(logger, logging.Logger):
            if _RUN_LEVEL_FILTER not in logger.filters:
                logger.addFilter(_RUN_LEVEL_FILTER)
                logger.setLevel(1)
