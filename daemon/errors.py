"""The errors users cause. Each has a message that names the file / schedule / field;
the CLI prints the message (never a traceback) and exits with `exit_code`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FlowerdError(Exception):
    """Base of every error flowerd raises on purpose. The CLI exits with `exit_code`."""

    exit_code = 1


class UsageError(FlowerdError):
    """A bad flag or argument value (exit 2)."""

    exit_code = 2


class SettingsError(UsageError):
    """flowerd.toml, a FLOWERD_* variable or a global flag is invalid."""


class PipelineError(FlowerdError):
    """A pipeline cannot be found, imported or built, or asks for something impossible.
    `field`: the schedule-file field it is about, where one is (validate names it)."""

    field: str | None = None

    def __init__(self, message: str = "", *, field: str | None = None):
        super().__init__(message)
        if field is not None:
            self.field = field


class PipelineNotFound(PipelineError):
    pass


class ModuleImportError(PipelineError):
    """The pipeline module exists but raised while being imported."""


class UnknownFinalVar(PipelineError):
    field = "final_vars"


class InputTypeError(PipelineError, TypeError):
    """An input cannot become the type the pipeline annotates without loss."""

    field = "inputs"


class AsyncDriverUnsupported(PipelineError, ValueError):
    """An option the async driver cannot honour (it is a ValueError, like FlowerPower's)."""


class ScheduleError(FlowerdError):
    """One or more schedule files are invalid; `problems` lists every one."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class HistoryError(FlowerdError):
    """The history database cannot be used (foreign file, newer schema, ...)."""


class RunNotFound(FlowerdError):
    pass


class DaemonNotRunning(FlowerdError):
    exit_code = 3


class DaemonAlreadyRunning(FlowerdError):
    pass


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' -- appended to unknown-name messages."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
