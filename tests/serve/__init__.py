"""A real `flowerd serve` process in a temporary project, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from daemon.errors import DaemonNotRunning
from daemon.history import History
from daemon.serve.control import request
from daemon.settings import load_settings
from tests.contract import FLOWERD, bound
from tests.contract import flowerd as cli
from tests.contract import flowerd_here as cli_here

REPO = Path(__file__).resolve().parent.parent.parent


def make_project(base: Path, schedules: str = "", **pipelines: str) -> Path:
    """A base dir with the repo's pipelines, extra pipelines, and one schedule file."""
    shutil.copytree(REPO / "pipelines", base / "pipelines", dirs_exist_ok=True)
    for name, source in pipelines.items():
        (base / "pipelines" / f"{name}.py").write_text(textwrap.dedent(source))
    (base / "schedules").mkdir(exist_ok=True)
    if schedules:
        (base / "schedules" / "test.toml").write_text(textwrap.dedent(schedules))
    return base


class Served:
    """`flowerd serve` on a base dir; stdout/stderr go to a log file in it."""

    def __init__(self, base: Path, *, env: dict | None = None):
        self.base = base
        self.settings = load_settings(base)
        self.log_path = base / "serve.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [FLOWERD, "--base-dir", str(base), "serve"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FLOWERD_SHUTDOWN_GRACE": "5", **(env or {})},
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ask(self, cmd: str, **args) -> dict:
        return request(self.settings.control_socket, cmd, **args)

    def wait_ready(self, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + bound(timeout_s)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"flowerd serve exited {self.proc.returncode}:\n{self.log}")
            try:
                return self.ask("status")
            except (DaemonNotRunning, OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"flowerd serve not ready in {bound(timeout_s):g} s:\n{self.log}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 30) -> int:
        try:
            return self.proc.wait(timeout=bound(timeout_s))
        finally:
            self._log.close()

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.wait()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def runs(base: Path, **filters) -> list:
    """The history rows, newest first, read the way the CLI reads them."""

    async def query():
        history = await History.open(load_settings(base).db_url, readonly=True)
        try:
            return await history.list_runs(limit=10_000, **filters)
        finally:
            await history.close()

    return asyncio.run(query())


def wait_for(predicate, *, timeout_s: float = 20, interval_s: float = 0.1, what: str = ""):
    """Poll until `predicate()` is truthy; returns its value. Every wait is bounded
    (by `timeout_s` times WAIT_SCALE)."""
    deadline = time.monotonic() + bound(timeout_s)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            waited = f"{bound(timeout_s):g} s"
            raise AssertionError(f"timed out after {waited} waiting for {what or predicate}")
        time.sleep(interval_s)


def rows_where(base: Path, **match) -> list:
    return [r for r in runs(base) if all(getattr(r, k) == v for k, v in match.items())]


__all__ = ["Served", "cli", "cli_here", "make_project", "runs", "rows_where", "wait_for", "signal"]
