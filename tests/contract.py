"""What the tests share about the contract (../shared/DESIGN.md): the JSON keys every run
object carries, and the real `flowerd` console script to drive it with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FLOWERD = str(Path(sys.executable).with_name("flowerd"))
# Every wait bound of the tests' helpers (tests/serve/__init__.py, the notify sockets, `flowerd`
# below) is multiplied by this: the bounds written in the tests are about twice what an
# idle machine takes, and a 2-core VM shared with other work is several times slower. A
# passing test never waits longer for it; a failing one says so later.
DEFAULT_WAIT_SCALE = 3.0
WAIT_SCALE = float(os.environ.get("FLOWERD_TEST_WAIT_SCALE", DEFAULT_WAIT_SCALE))


def bound(timeout_s: float) -> float:
    """A test's wait bound, sized for a loaded machine (WAIT_SCALE)."""
    return timeout_s * WAIT_SCALE


# `make soak` sets FLOWERD_SOAK=1: a trial that loops (lives of a daemon, seconds of slots)
# runs its full size there and a sized-down one in `make test` -- the same checks, fewer
# iterations.
SOAK = bool(os.environ.get("FLOWERD_SOAK"))


def sized(default: int, soak: int) -> int:
    """A trial's iterations: `default` in `make test`, `soak` in `make soak`."""
    return soak if SOAK else default

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
        timeout=bound(timeout_s),
        env={**clean, "COLUMNS": "200", **(env or {})},
    )
