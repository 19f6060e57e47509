"""What the tests share about the contract (../shared/DESIGN.md): the JSON keys every run
object carries, and the real `flowerd` console script to drive it with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FLOWERD = str(Path(sys.executable).with_name("flowerd"))

CONTRACT_KEYS = frozenset(
    {
        "id",
        "schedule",
        "pipeline",
        "trigger",
        "status",
        "scheduled_at",
        "started_at",
        "finished_at",
        "duration_s",
        "attempts",
        "async_driver",
        "error",
    }
)


def flowerd(
    base: Path, *args: str, env: dict | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real console script against `base`, with no FLOWERD_* settings leaking in from
    the environment and a wide terminal so tables are not truncated."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
    return subprocess.run(
        [FLOWERD, "--base-dir", str(base), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )
