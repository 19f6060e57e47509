"""A real Hamilton UI (`hamilton ui`, apache-hamilton-ui, on SQLite) on 127.0.0.1 for the
tracking tests: started in its own process group with its data in a temporary dir, a
project made for a user over its API, stopped whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.contract import bound

HAMILTON = str(Path(sys.executable).with_name("hamilton"))
USER = "ops@example.com"
START_S = 60  # ~10 s at load 12
# Django's runserver as its reloader's child: serves at once instead of importing it all
# again in a second process (halves the start); a reload never happens here
NO_RELOADER = {"RUN_MAIN": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HamiltonUI:
    """`with HamiltonUI(tmp) as ui:` -- ui.url, ui.project_id, ui.get(path)."""

    def __init__(self, data: Path):
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data / "hamilton-ui.log"
        self.project_id = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> HamiltonUI:
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [HAMILTON, "ui", "--port", str(self.port), "--base-dir", str(self.data / "db"),
                 "--no-open"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.data, start_new_session=True,
                env={**os.environ, "HAMILTON_TELEMETRY_ENABLED": "false", **NO_RELOADER},
            )  # fmt: skip
        deadline = time.monotonic() + bound(START_S)
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"hamilton ui did not start:\n{self.log_path.read_text()}")
            time.sleep(0.25)
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/v0/health", timeout=bound(2)).status_code == 200
        except requests.RequestException:
            return False

    def make_project(self, name: str = "flowerd") -> int:
        visibility = {"user_ids_visible": [], "team_ids_visible": [], "team_ids_writable": [],
                      "user_ids_writable": [USER]}  # fmt: skip
        body = {"name": name, "description": "flowerd's runs", "tags": {},
                "visibility": visibility}  # fmt: skip
        response = requests.post(
            f"{self.url}/api/v1/projects",
            json=body,
            headers={"x-api-user": USER},
            timeout=bound(30),
        )
        response.raise_for_status()
        self.project_id = response.json()["id"]
        return self.project_id

    def get(self, path: str):
        response = requests.get(f"{self.url}/api/v1{path}", headers={"x-api-user": USER},
                                timeout=bound(30))  # fmt: skip
        response.raise_for_status()
        return response.json()

    def runs(self) -> list[dict]:
        """The project's DAG runs, newest first, with their tags."""
        return self.get(f"/dag_runs/latest/?project_id={self.project_id}&limit=100")

    def hang(self) -> None:
        """Stopped, not gone: the kernel still takes its connections, nothing answers."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """A hung one answers again (what it was sent meanwhile, first)."""
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """The server and anything it started, whole (its own process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        os.killpg(self.proc.pid, signal.SIGCONT)  # a hung one takes its TERM now
        try:
            self.proc.wait(timeout=bound(10))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> HamiltonUI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
