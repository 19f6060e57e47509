"""flowerd: scheduled Hamilton pipelines with a run history.

The data flows one way (see README.md):

    schedules/*.toml --schedule/--> Schedule (frozen)
        --trigger.py / runner/scheduler.py--> a slot fires (APScheduler AsyncIOScheduler)
        --runner.py--> claim the slot in the history, overlap / concurrency / timeout / retries
        --pipeline/--> Hamilton: async driver (awaited) | sync driver (thread pool)
        --history/--> one row per slot: queued -> running -> terminal state

`serve/daemon.py` composes these for `flowerd serve`; `cli/` is the command line.
The Python API (api.py) mirrors FlowerPower's PipelineManager.run / run_async and
RunConfig; `PipelineManager(base_dir, history=True)` also records each run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["PipelineManager", "RunConfig"]

if TYPE_CHECKING:
    from daemon.api import PipelineManager, RunConfig


def __getattr__(name: str):  # lazy: `flowerd runs` must not import Hamilton
    if name in __all__:
        from daemon import api

        return getattr(api, name)
    raise AttributeError(f"module 'daemon' has no attribute {name!r}")
