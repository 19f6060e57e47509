"""What runs inside a worker process of `isolation = "process"` (daemon.runner.workers runs the
pool, in the daemon).

A worker is forked by multiprocessing's forkserver, which imported this module (and so
daemon.pipeline and Hamilton) once. `worker_main` then: a process group of its own, fds
1 and 2 into pipes read line by line, a logging handler, a lifeline to the daemon, and
jobs until the daemon says stop. Each job runs under the run's memory_limit (RLIMIT_AS)
through the same Pipelines the daemon uses (sync driver directly, async driver in
the worker's own event loop), and its result goes back pickled. What goes back besides
is bounded by the job's `max_output_bytes`; the rest is counted and reported as a cut.

Messages to the daemon: ("ready", pid), ("attempt", n), ("log", time, level, logger,
text), ("out", time, stream, line), ("cut", lines, bytes, budget), then ("done", result)
or ("error", {type, message, traceback}, keep_worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import pickle
import resource
import select
import signal
import sys
import sysconfig
import termios
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import daemon
from daemon import logs
from daemon.durations import format_bytes
from daemon.errors import PipelineError
from daemon.pipeline import Attempts, Pipelines, RunConfig

MAX_LINE_CHARS = 8 * 1024  # one forwarded line or log message; longer ones are cut
OOM_SCORE_ADJ = 500  # the kernel's OOM killer picks a worker before the daemon
_PR_SET_PDEATHSIG = 1


def error_fields(exc: BaseException) -> dict[str, str | None]:
    """An exception as a row's error: {type, message, traceback}. SystemExit and
    KeyboardInterrupt that pipeline code raised keep their own names."""
    cause = exc.__cause__ if isinstance(exc, PipelineError) and exc.__cause__ else None
    shown = cause if isinstance(cause, KeyboardInterrupt | SystemExit) else exc
    return {
        "type": type(shown).__name__,
        "message": str(exc),
        "traceback": user_traceback(exc),
    }


_OURS = str(Path(daemon.__file__).resolve().parent) + os.sep  # flowerd's own package
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve()) + os.sep


def user_traceback(exc: BaseException) -> str:
    """The traceback as a pipeline's author reads it: none of flowerd's own frames, nor
    the thread and event-loop plumbing above the first frame left (the user's, Hamilton's
    and the libraries' frames stay, the raising frame last); chained exceptions alike."""
    shown = traceback.TracebackException.from_exception(exc)
    todo, seen = [shown], set()
    while todo:
        part = todo.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        part.stack = traceback.StackSummary.from_list(_theirs(part.stack))
        todo += [p for p in (part.__cause__, part.__context__) if p is not None]
        todo += getattr(part, "exceptions", None) or []  # an ExceptionGroup's
    return "".join(shown.format())


def _theirs(frames: traceback.StackSummary) -> list[traceback.FrameSummary]:
    kept = [frame for frame in frames if not _is_ours(frame.filename)]
    while kept and _is_plumbing(kept[0].filename) and len(kept) > 1:
        kept.pop(0)
    return kept


def _is_ours(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_OURS)


def _is_plumbing(filename: str) -> bool:
    """The standard library's own frames (threads, asyncio), not its site-packages."""
    path = os.path.realpath(filename)
    return path.startswith(_STDLIB) and "-packages" + os.sep not in path


@dataclass(frozen=True, kw_only=True)
class Job:
    """One run, as sent to a worker."""

    pipeline: str
    cfg: RunConfig
    memory_limit_bytes: int | None
    log_level: int  # the daemon's level for loggers that are not the run's
    max_output_bytes: int


class _Outbox:
    """The worker's one connection to the daemon: sends from any thread, and keeps each
    run's forwarded output within its budget (the rest is counted, not sent)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()
        self.budget = 1 << 20
        self.used = self.cut_items = self.cut_bytes = 0

    def send(self, message: tuple) -> None:
        with self.lock:
            with contextlib.suppress(OSError, ValueError):  # the daemon went away
                self.conn.send(message)

    def send_bytes(self, payload: bytes) -> None:
        with self.lock:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send_bytes(payload)

    def forward(self, message: tuple, size: int) -> None:
        with self.lock:
            if self.used + size > self.budget:
                self.cut_items += 1
                self.cut_bytes += size
                return
            self.used += size
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(message)

    def begin(self, budget: int) -> None:
        with self.lock:
            self.budget, self.used, self.cut_items, self.cut_bytes = budget, 0, 0, 0

    def end(self) -> None:
        if self.cut_items:
            self.send(("cut", self.cut_items, self.cut_bytes, self.budget))


class _ForwardHandler(logging.Handler):
    """The worker's root handler: each record goes to the daemon as plain values."""

    def __init__(self, outbox: _Outbox):
        super().__init__()
        self.outbox = outbox
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _clip(self.format(record))
            item = ("log", record.created, record.levelno, record.name, text)
            self.outbox.forward(item, len(text) + len(record.name))
        except Exception:  # noqa: BLE001 - a log line must never fail the run
            self.handleError(record)


class _Pump:
    """fd 1 or 2 of the worker, redirected into a pipe that a thread reads line by line
    and forwards; C code and child processes writing there are captured too."""

    def __init__(self, fd: int, stream: str, outbox: _Outbox):
        self.stream, self.outbox = stream, outbox
        self.read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        self.partial = b""
        self.busy = False
        threading.Thread(target=self._loop, name=f"flowerd-{stream}", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                select.select([self.read_fd], [], [])
                self.busy = True
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    return
                self._lines(chunk)
            except MemoryError:  # under memory_limit: drop this chunk, keep draining
                self.partial = b""
            finally:
                self.busy = False

    def _lines(self, chunk: bytes) -> None:
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        if len(self.partial) > MAX_LINE_CHARS:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self._send(line)

    def _send(self, line: bytes) -> None:
        text = _clip(line.decode("utf-8", "replace").rstrip("\r"))
        self.outbox.forward(("out", time.time(), self.stream, text), len(line) + 1)

    def sync(self, timeout_s: float = 1.0) -> None:
        """Wait (bounded) until what was written so far has been forwarded."""
        deadline = time.monotonic() + timeout_s
        while (self.busy or _unread(self.read_fd)) and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.partial:
            partial, self.partial = self.partial, b""
            self._send(partial)


def _unread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def _clip(text: str) -> str:
    if len(text) <= MAX_LINE_CHARS:
        return text
    return f"{text[:MAX_LINE_CHARS]} [... line cut: {len(text):,} characters]"


class _ReportedAttempts(Attempts):
    """Attempts whose every count is told to the daemon at once, so a run killed in its
    third attempt is recorded with attempts = 3."""

    def __init__(self, outbox: _Outbox):
        object.__setattr__(self, "_outbox", outbox)
        super().__init__()

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "count" and value:  # the errors of the attempts before this one, too
            self._outbox.send(("attempt", value, list(self.errors)))


def worker_main(conn: Connection, base_dir: str, pipelines_dir: str, node_hooks=None) -> None:
    """A worker's life: its own process group, captured output, then jobs until EOF."""
    os.setpgid(0, 0)
    _set_up_process()
    threading.Thread(target=_lifeline, args=(conn,), name="flowerd-lifeline", daemon=True).start()
    outbox = _Outbox(conn)
    pumps = [_Pump(1, "stdout", outbox), _Pump(2, "stderr", outbox)]
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(fd, "w", buffering=1, closefd=False))  # noqa: SIM115
        else:
            stream.reconfigure(line_buffering=True)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardHandler(outbox)]
    logging.captureWarnings(True)
    pm = Pipelines(base_dir, pipelines_dir=pipelines_dir, node_hooks=node_hooks)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None or not _serve(job, pm, loop, outbox, pumps):
            return


def _lifeline(conn: Connection) -> None:
    """The daemon's end of the pipe closed -- it died, even by SIGKILL, with no drain:
    the worker takes its whole process group along. (The forkserver cannot tell: every
    worker holds its `alive` pipe open.)"""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLRDHUP)
    while True:
        for _, events in poller.poll():
            if events & select.POLLNVAL:
                return
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                os.killpg(0, signal.SIGKILL)


def _set_up_process() -> None:
    os.environ.pop("NOTIFY_SOCKET", None)  # the daemon speaks to systemd, not its runs
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text("flowerd-worker")
    with contextlib.suppress(OSError, ValueError):
        current = int(Path("/proc/self/oom_score_adj").read_text())
        Path("/proc/self/oom_score_adj").write_text(str(max(current, OOM_SCORE_ADJ)))


def _serve(job: Job, pm: Pipelines, loop, outbox: _Outbox, pumps: list[_Pump]) -> bool:
    """Run one job and send its outcome. False: this worker should end (its state is
    suspect after BaseException or MemoryError)."""
    outbox.begin(job.max_output_bytes)
    logging.getLogger().setLevel(job.log_level)
    logs._quiet_third_parties(job.log_level)
    keep = True
    try:
        with _memory_limit(job.memory_limit_bytes), _nodes_sent(pm, outbox):
            result = _execute(job, pm, loop, _ReportedAttempts(outbox))
        reply = _result_reply(result)
    except BaseException as exc:  # noqa: BLE001 - pipeline code: report it, whatever it is
        keep = isinstance(exc, Exception) and not isinstance(exc, MemoryError)
        reply = pickle.dumps(("error", _worker_error(exc, job), keep))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for pump in pumps:
        pump.sync()
    outbox.end()
    outbox.send_bytes(reply)
    return keep


def _execute(job: Job, pm: Pipelines, loop, attempts: Attempts) -> dict:
    if job.cfg.async_driver is False:
        return pm.execute_sync(job.pipeline, job.cfg, attempts)
    return loop.run_until_complete(pm.execute_async(job.pipeline, job.cfg, attempts))


def _nodes_sent(pm: Pipelines, outbox: _Outbox):
    """The run's node events go back to the daemon as they happen ("node" messages)."""
    hooks = pm.node_hooks
    return hooks.forwarding(outbox.send) if hooks is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _memory_limit(limit_bytes: int | None):
    """RLIMIT_AS (the soft limit) for the run only; the worker gets its own back after."""
    if not limit_bytes:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    capped = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (capped, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _result_reply(result: Any) -> bytes:
    try:
        return pickle.dumps(("done", result), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling runs user classes' code
        bad = _unpicklable(result)
        names = ", ".join(repr(name) for name in bad) or "the result"
        fields = {
            "type": "UnpicklableResult",
            "message": f"final var(s) {names} cannot be sent back from the worker process "
            f"(results of isolation = 'process' runs must be picklable): "
            f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        }
        return pickle.dumps(("error", fields, True))


def _unpicklable(result: Any) -> list[str]:
    if not isinstance(result, dict):
        return []
    bad = []
    for name, value in result.items():
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001
            bad.append(str(name))
    return bad


def _worker_error(exc: BaseException, job: Job) -> dict[str, str | None]:
    fields = error_fields(exc)
    if isinstance(exc, MemoryError) and job.memory_limit_bytes:
        said = f": {exc}" if str(exc) else ""
        fields["message"] = (
            f"the run went past its memory_limit of {format_bytes(job.memory_limit_bytes)} "
            f"(the worker's address space, RLIMIT_AS){said}"
        )
    return fields
