"""What the tests share about the contract (../shared/DESIGN.md): the JSON keys every run
object carries, and the real `flowerd` console script to drive it with."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
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


def _command_env(env: dict | None) -> dict[str, str]:
    """No FLOWERD_* settings leaking in from the environment, a wide terminal so tables
    are not truncated, then the test's own variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
    return {**clean, "COLUMNS": "200", **(env or {})}


def flowerd(
    base: Path, *args: str, env: dict | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real console script against `base`, in a process of its own: for what only a
    process shows (its exit status to a shell, its stdio, signals, start-up, imports)."""
    return subprocess.run(
        [FLOWERD, "--base-dir", str(base), *args],
        capture_output=True,
        text=True,
        timeout=bound(timeout_s),
        env=_command_env(env),
    )


def flowerd_here(base: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The same command as flowerd(), through the same entry point (daemon.cli.main: its
    argv, its environment, its one-line errors and exit codes), run in this process: for
    tests about what a command prints or does. A process of its own costs 0.5-3 CPU-s of
    interpreter start and imports (Hamilton's for `run` and `validate`), and the suite
    makes hundreds of such calls. Never for `serve`, nor `run --json` (which points file
    descriptor 1 at stderr while the pipeline runs: here, that is pytest's own)."""
    assert "serve" not in args and not ("run" in args and "--json" in args), args
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # an async test: the command runs its own event loop, so in a thread of its own
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(flowerd_here, base, *args, env=env).result()
    from daemon.cli import main

    argv = ["flowerd", "--base-dir", str(base), *args]
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with _process_state_kept():
        os.environ.clear()
        os.environ.update(_command_env(env))
        sys.argv, sys.stdin = argv, io.StringIO()  # stdin: not a terminal, as when piped
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
                if isinstance(code, str):  # what the interpreter does with sys.exit("text")
                    print(code, file=sys.stderr)
                    code = 1
    return subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _process_state_kept():
    """What a command changes for its process and this one must get back: argv, stdin,
    the environment, the root logger's handlers and every logger's level (`run` installs
    flowerd's log handler and quiets third-party loggers)."""
    manager = logging.getLogger().manager
    levels = {name: log.level for name, log in manager.loggerDict.items()
              if isinstance(log, logging.Logger)}  # fmt: skip
    root = logging.getLogger()
    saved = (sys.argv, sys.stdin, dict(os.environ), root.handlers[:], root.level)
    try:
        yield
    finally:
        sys.argv, sys.stdin = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])
        for handler in root.handlers[:]:
            if handler not in saved[3]:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = saved[3]
        root.setLevel(saved[4])
        for name, log in manager.loggerDict.items():
            if isinstance(log, logging.Logger):
                log.setLevel(levels.get(name, logging.NOTSET))
