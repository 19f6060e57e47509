"""The Python API: FlowerPower's PipelineManager and RunConfig, from `import daemon`.

    pm = PipelineManager(base_dir=".")                 # runs, like FlowerPower's
    pm = PipelineManager(base_dir=".", history=True)   # ... and records each run

Without `history`, a run is the pipeline layer's and costs about 1.3x Hamilton's own
execute. With it, each run goes through the daemon's runner like `flowerd run`: a row
`queued` -> `running` -> `success | failed` with trigger `manual` and no schedule,
durable before the pipeline starts. That costs a history write per run, so it is a
choice, not the default. The caller still gets the result, or the pipeline's exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon import pipeline
from daemon.pipeline import RunConfig


class PipelineManager(pipeline.Pipelines):
    """`history`: False (default) records nothing; True records in this base dir's
    history database (settings: flowerd.toml, FLOWERD_DATABASE_URL); a string is the
    database URL or SQLite path to record in."""

    def __init__(
        self,
        base_dir: str | Path = ".",
        *,
        pipelines_dir: str | Path | None = None,
        history: bool | str = False,
    ):
        super().__init__(base_dir, pipelines_dir=pipelines_dir)
        self.history_url = _history_url(self.base_dir, history)

    def run(
        self, name: str, run_config: RunConfig | Mapping | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if self.history_url is None:
            return super().run(name, run_config, **kwargs)
        cfg = pipeline._as_run_config(run_config, kwargs)
        if not cfg.async_driver:
            cfg = dataclasses.replace(cfg, async_driver=False)
        recorded = self._recorded(name, cfg)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(recorded)
        # inside a running loop (which pm.run blocks, as a sync call does): its own loop
        with concurrent.futures.ThreadPoolExecutor(1, "flowerd-api") as pool:
            return pool.submit(asyncio.run, recorded).result()

    async def run_async(
        self, name: str, run_config: RunConfig | Mapping | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if self.history_url is None:
            return await super().run_async(name, run_config, **kwargs)
        cfg = pipeline._as_run_config(run_config, kwargs)
        if cfg.async_driver is False:
            return await super().run_async(name, cfg)  # raises FlowerPower's ValueError
        return await self._recorded(name, cfg)

    async def _recorded(self, name: str, cfg: RunConfig) -> dict[str, Any]:
        from daemon.history import History
        from daemon.runner.runner import Runner

        async with History.open(self.history_url) as history:
            runner = Runner(pm=self, history=history, max_concurrent_runs=1, threads=1)
            try:
                outcome = await runner.run_manual(name, cfg)
            finally:
                runner.close()
        if outcome.error is not None:
            raise outcome.error
        return outcome.result


def _history_url(base_dir: Path, history: bool | str) -> str | None:
    if history is False or history is None:
        return None
    if history is True:
        from daemon.schedule.table import check_defaults
        from daemon.settings import load_settings

        return check_defaults(load_settings(base_dir)).db_url
    from daemon.settings import normalise_db

    return normalise_db(str(history))


__all__ = ["PipelineManager", "RunConfig"]
