"""Each run's log: everything logged and printed while it runs, kept with the run.

What a run's log holds: every logging record emitted in the run's context (its
pipeline's loggers at or above the run's `log_level`, the libraries it calls, flowerd's
own lines for the run), `warnings` shown while it runs, and what its code writes to
`sys.stdout` / `sys.stderr` (one line per line; stdout at level INFO, stderr at WARNING,
logger `stdout` / `stderr`).

Which run a line belongs to is decided by `logs.run_id_var`, the contextvar every run
sets. So many runs interleaved on one event loop keep their own lines, and so do the
threads that carry the run's context: the sync driver's pool thread (the runner runs it
in a copy of the context), `asyncio.to_thread`, and a process-isolated worker whose
records and output are re-emitted in the daemon under the run's context. A thread a
pipeline starts itself (`threading.Thread`) runs in a fresh context: its lines go to the
daemon's own log (not lost; tagged with no run) unless it is started inside
`contextvars.copy_context().run(...)`. Capture works off logging records and a
stdout/stderr proxy, both keyed by that contextvar -- nothing is threaded through the
runner: a `RunLogs` listens to the runner's run events (daemon/runner/events.py).

Bounded: a run's log keeps at most `max_log_bytes`. Past half of it, lines are held
in memory as the tail (the end is where the error is); when the tail outgrows the other
half, its oldest lines are cut, and the run's log says where and how much. The head is
written every FLUSH_EVERY_S while the run runs (`runs logs --follow` sees it); the tail,
the cut marker and any unfinished line at the end. Writes go through the history's one
writer as part of its group commits, so a run never pays a commit per line.

Under `flowerd serve` a run's own lines are kept out of the daemon's log (journald): it
keeps the one start and one finish line per run (flowerd's `daemon.*` lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from daemon import logs
from daemon.durations import shown_iso
from daemon.revealed import masked

if TYPE_CHECKING:
    from daemon.history import History
    from daemon.runner.events import Listeners, RunEvent

log = logging.getLogger("daemon.runlogs")  # its name before the move

FLUSH_EVERY_S = 1.0
RECENT_LINES = 20  # kept in memory per run for notifications
RECENT_RUNS = 256
CLOSE_WAIT_S = 5.0
LINE_OVERHEAD_BYTES = 32  # a line's time, level and separators, as `runs logs` shows it
STREAM_LEVELS = {"stdout": "INFO", "stderr": "WARNING"}
MARKER_LOGGER = "daemon.runlogs"
_formatter = logging.Formatter()
# Hamilton logs a banner with the traceback each time a node raises: once per attempt.
# A run's log keeps the banner's words (which node, its inputs); the traceback is told
# once, as the run's error, when the run ends (RunLogs.on_event).
HAMILTON_NODE_ERRORS = "hamilton.execution.graph_functions"
_TRACEBACK_HEAD = "\nTraceback (most recent call last):"


def _node_error(message: str) -> str:
    """Hamilton's node-error banner as one line, without its traceback:
    `total [deep.total()] encountered an error. Node inputs: {'depth': 12}`."""
    head = message.split(_TRACEBACK_HEAD, 1)[0]
    words = [part.strip(" <>") for part in head.splitlines()]
    words = [part for part in words if part and set(part) != {"*"}]
    if not words:
        return message
    return " ".join([words[0] + "."] + words[1:]) if words[1:] else words[0]


def error_line(error: Any) -> str | None:
    """The run's error for its log, once: its traceback (without flowerd's frames)."""
    if error is None or not getattr(error, "traceback", None):
        return None
    return "the run's error (flowerd runs show has it too):\n" + error.traceback.rstrip()


class RunLog:
    """One run's lines. Thread-safe: a run's sync thread and the loop add to it at once."""

    def __init__(self, run_id: int, max_bytes: int):
        self.run_id = run_id
        self.max_bytes = max_bytes
        self.half = max_bytes // 2
        self.lock = threading.Lock()
        self.seq = 0
        self.head_bytes = 0
        self.pending: list[dict] = []  # head lines not yet handed to the writer
        self.tail: deque[tuple[dict, int]] = deque()
        self.tail_bytes = 0
        self.cut_lines = 0
        self.cut_bytes = 0
        self.cut_seq: int | None = None  # where the cut is (the first cut line's seq)
        self.partial = {"stdout": "", "stderr": ""}
        self.recent: deque[dict] = deque(maxlen=RECENT_LINES)

    def add(self, created: float, level: str, logger: str, message: str) -> None:
        if logger == HAMILTON_NODE_ERRORS and level == "ERROR":
            message = _node_error(message)
        message = self._clipped(masked(message))  # no secret a run read shows
        size = len(message.encode("utf-8", "replace")) + len(logger) + LINE_OVERHEAD_BYTES
        with self.lock:
            line = {
                "run_id": self.run_id,
                "seq": self.seq,
                "time": datetime.fromtimestamp(created, UTC),
                "level": level,
                "logger": logger[:200],
                "message": message,
            }
            self.seq += 1
            self.recent.append(line)
            if not self.tail and self.head_bytes + size <= self.half:
                self.head_bytes += size
                self.pending.append(line)
                return
            self.tail.append((line, size))
            self.tail_bytes += size
            while self.tail_bytes > self.max_bytes - self.head_bytes and len(self.tail) > 1:
                cut, cut_size = self.tail.popleft()
                self.tail_bytes -= cut_size
                self.cut_lines += 1
                self.cut_bytes += cut_size
                if self.cut_seq is None:
                    self.cut_seq = cut["seq"]

    def _clipped(self, message: str) -> str:
        limit = max(self.half // 2, 256)
        if len(message) <= limit:
            return message
        return message[:limit] + f"… [{len(message) - limit:,} more characters not kept]"

    def write(self, stream: str, text: str) -> None:
        """Text written to sys.stdout / sys.stderr: each complete line becomes a line."""
        if not text:
            return
        with self.lock:
            buffered = self.partial[stream] + text
            *complete, self.partial[stream] = buffered.split("\n")
        now = time.time()
        for line in complete:
            self.add(now, STREAM_LEVELS[stream], stream, line.rstrip("\r"))

    def take(self, *, final: bool = False) -> list[dict]:
        """The lines to write now: the head written so far; at the end also the
        unfinished lines, the cut marker and the tail."""
        if final:
            for stream in ("stdout", "stderr"):
                rest, self.partial[stream] = self.partial[stream], ""
                if rest:
                    self.add(time.time(), STREAM_LEVELS[stream], stream, rest)
        with self.lock:
            lines, self.pending = self.pending, []
            if final:
                if self.cut_lines:
                    lines.append(self._marker())
                lines.extend(line for line, _ in self.tail)
                self.tail.clear()
        return lines

    def _marker(self) -> dict:
        return {
            "run_id": self.run_id,
            "seq": self.cut_seq,
            "time": self.tail[0][0]["time"] if self.tail else datetime.now(UTC),
            "level": "WARNING",
            "logger": MARKER_LOGGER,
            "message": f"[... {self.cut_lines:,} line(s), {self.cut_bytes:,} bytes cut here: "
            f"a run's log keeps at most max_log_bytes = {self.max_bytes:,} bytes, its head "
            "and its tail ...]",
        }


def line_json(line: dict) -> dict:
    """A stored line as the contract's JSON: {time, level, logger, message} (the CLI's
    `runs logs --json`, the API's /api/runs/{id}/logs)."""
    return {
        "time": line["time"].isoformat(),
        "level": line["level"],
        "logger": line["logger"],
        "message": line["message"],
    }


def line_text(line: dict, zone: tzinfo = UTC) -> str:
    """`2026-11-30T03:30:01.204+01:00 INFO     hello_world: message` (the time in `zone`,
    the run's schedule's; a pipeline's logger without its package prefix)."""
    stamp = shown_iso(line["time"], zone, "milliseconds")
    logger = line["logger"].removeprefix(logs.PIPELINE_LOGGER_ROOT + ".")
    return f"{stamp} {line['level']:<8} {logger}: {line['message']}"


# --------------------------------------------------------------------------- capture
# The capture points are process-wide (the root logger, sys.stdout/stderr, warnings),
# so they are installed once, however many RunLogs are open, and removed with the last.

_runs: dict[Any, RunLog] = {}
_install_lock = threading.Lock()
_installs = 0
_saved: dict[str, Any] = {}


def current() -> RunLog | None:
    """The log of the run whose context this is, while it is being captured."""
    run_id = logs.run_id_var.get()
    if run_id is None:
        return None
    found = _runs.get(run_id)
    if found is None and isinstance(run_id, str) and run_id.isdigit():
        found = _runs.get(int(run_id))
    return found


class _CaptureHandler(logging.Handler):
    """On the root logger: a record in a captured run's context joins its log."""

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: RunLog locks
        run = current()
        if run is not None:
            run.add(record.created, record.levelname, record.name, _message_of(record))
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() above
        self.handle(record)


def _message_of(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception as exc:  # a bad %-format in pipeline code must not lose the line
        message = f"{record.msg!r} % {record.args!r} ({type(exc).__name__}: {exc})"
    if record.exc_info:
        message += "\n" + _formatter.formatException(record.exc_info)
    if record.stack_info:
        message += "\n" + _formatter.formatStack(record.stack_info)
    return message


class _KeptInRunLog(logging.Filter):
    """On the daemon's own handler: a captured run's lines stay out of the daemon's log,
    except flowerd's own (`daemon.*`: the start and finish lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("daemon.") or current() is None


class _Stream:
    """sys.stdout / sys.stderr while runs are captured: a captured run's writes go to its
    log (and, with `echo`, to the real stderr too); everything else passes through."""

    def __init__(self, inner: Any, name: str, echo: Any = None):
        self._inner = inner
        self._name = name
        self._echo = echo

    def write(self, text: str) -> int:
        run = current()
        if run is None:  # a thread's traceback (threading.excepthook) hides secrets too
            self._inner.write(masked(text))
            return len(text)
        run.write(self._name, text)
        if self._echo is not None:
            with contextlib.suppress(Exception):
                self._echo.write(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current() is None:
            self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    run = current()
    if run is None or file is not None:
        _saved["showwarning"](message, category, filename, lineno, file, line)
        return
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    run.add(time.time(), "WARNING", "py.warnings", text)


def install(*, quiet_daemon_log: bool = False, echo_prints: bool = False) -> None:
    global _installs
    with _install_lock:
        _installs += 1
        if _installs > 1:
            return
        _saved.update(stdout=sys.stdout, stderr=sys.stderr, showwarning=warnings.showwarning)
        echo = sys.stderr if echo_prints else None
        sys.stdout = _Stream(sys.stdout, "stdout", echo)
        sys.stderr = _Stream(sys.stderr, "stderr", echo)
        warnings.showwarning = _show_warning
        _saved["handler"] = _CaptureHandler()
        logging.getLogger().addHandler(_saved["handler"])
        _saved["filtered"] = []
        if quiet_daemon_log:
            filt = _KeptInRunLog()
            for handler in logging.getLogger().handlers:
                if getattr(handler, "_flowerd_handler", False):
                    handler.addFilter(filt)
                    _saved["filtered"].append((handler, filt))


def uninstall() -> None:
    global _installs
    with _install_lock:
        _installs -= 1
        if _installs > 0:
            return
        logging.getLogger().removeHandler(_saved.pop("handler"))
        for handler, filt in _saved.pop("filtered"):
            handler.removeFilter(filt)
        for name in ("stdout", "stderr"):
            if isinstance(getattr(sys, name), _Stream):  # not replaced again by someone else
                setattr(sys, name, _saved[name])
        if warnings.showwarning is _show_warning:
            warnings.showwarning = _saved["showwarning"]
        _saved.clear()


def _fresh_warnings() -> None:
    """Python shows a warning once per place per process (a registry per module); a
    run's log should show it for every run, so a run's start clears those registries."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()


# --------------------------------------------------------------------------- the keeper


class RunLogs:
    """Captures the runs announced on `events` into their logs and writes them to
    `history`. `async with RunLogs(...)`, or `await start()` ... `await close()`."""

    def __init__(
        self,
        history: History,
        *,
        max_bytes: int,
        quiet_daemon_log: bool = False,
        echo_prints: bool = False,
        flush_every_s: float = FLUSH_EVERY_S,
    ):
        self.history = history
        self.max_bytes = max_bytes
        self.quiet_daemon_log = quiet_daemon_log
        self.echo_prints = echo_prints
        self.flush_every_s = flush_every_s
        self.mine: dict[int, RunLog] = {}
        self.recent: dict[int, list[dict]] = {}
        self.failed_writes = 0
        self._writes: set[asyncio.Future] = set()
        self._gathered: list[dict] = []  # lines for the next write (see _write)
        self._gathering = False
        self._flusher: asyncio.Task | None = None
        self._started = False

    def attach(self, events: Listeners) -> RunLogs:
        events.add(self.on_event)
        return self

    async def start(self) -> RunLogs:
        install(quiet_daemon_log=self.quiet_daemon_log, echo_prints=self.echo_prints)
        self._started = True
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_loop(), name="flowerd:run-logs"
        )
        return self

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for run_id in list(self.mine):
            self.end(run_id)
        self._write_gathered()
        uninstall()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=CLOSE_WAIT_S)

    async def __aenter__(self) -> RunLogs:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # -- the run-event edge -------------------------------------------------------------
    def on_event(self, event: RunEvent) -> None:
        if event.run_id is None:
            return
        if event.kind == "started":
            self.begin(event.run_id)
        elif event.kind == "finished":
            told = error_line(event.error)
            run = self.mine.get(event.run_id)
            if told is not None and run is not None:
                run.add(time.time(), "ERROR", "daemon.runner.runner", told)
            self.end(event.run_id)

    def begin(self, run_id: int) -> None:
        run = RunLog(run_id, self.max_bytes)
        self.mine[run_id] = run
        _runs[run_id] = run
        _fresh_warnings()

    def end(self, run_id: int) -> None:
        run = self.mine.pop(run_id, None)
        if run is None:
            return
        if _runs.get(run_id) is run:
            del _runs[run_id]
        self._write(run.take(final=True))
        self.recent[run_id] = list(run.recent)
        while len(self.recent) > RECENT_RUNS:
            del self.recent[next(iter(self.recent))]

    def tail(self, run_id: int, count: int = 10) -> list[dict] | None:
        """The last lines of a run that ended lately (None: not known here)."""
        found = self.recent.get(run_id)
        return None if found is None else found[-count:]

    # -- writing ------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every_s)
            self.flush()

    def flush(self) -> None:
        """Hand every running run's new head lines to the writer, in one write."""
        lines = [line for run in list(self.mine.values()) for line in run.take()]
        self._write(lines)

    def _write(self, lines: list[dict]) -> None:
        """Gathered until the loop's next turn: the runs ending together (a burst) hand
        their lines to the writer as one write, not one write (and future) each."""
        if not lines:
            return
        self._gathered.extend(lines)
        if not self._gathering:
            self._gathering = True
            asyncio.get_running_loop().call_soon(self._write_gathered)

    def _write_gathered(self) -> None:
        lines, self._gathered, self._gathering = self._gathered, [], False
        if not lines:
            return
        try:
            future = self.history.queue_log_lines(lines)
        except Exception as exc:  # the history is closed or read-only: say so, go on
            self._lost(len(lines), exc)
            return
        self._writes.add(future)
        future.add_done_callback(lambda f, n=len(lines): self._written(f, n))

    def _written(self, future: asyncio.Future, count: int) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._lost(count, future.exception())

    def _lost(self, count: int, exc: BaseException) -> None:
        self.failed_writes += 1
        log.error("%d run log line(s) could not be written to the history: %s", count, exc)
