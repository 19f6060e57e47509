"""Logging: one `log_config()` applied by the CLI, and the per-run context.

Library code only ever calls `logging.getLogger(__name__)`; importing `daemon` or running
a pipeline never adds, removes or reconfigures the host application's handlers; only the
CLI calls `log_config()`, once.

Per-run context lives in two contextvars, so concurrent runs (asyncio tasks or threads)
never see each other's values:
- `run_id_var`: every log line a run emits carries its run id (see `RunContextFilter`).
- `run_level_var`: the `log_level` of a run applies to that run only. Pipeline modules
  are loaded under PIPELINE_LOGGER_ROOT; their loggers become `RunScopedLogger`s, which
  use the run's level while one is set and the logger hierarchy otherwise.
"""

from __future__ import annotations

import atexit
import contextvars
import io
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from daemon import revealed

PIPELINE_LOGGER_ROOT = "flowerd_pipelines"

run_id_var: contextvars.ContextVar[int | str | None] = contextvars.ContextVar(
    "flowerd_run_id", default=None
)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flowerd_trace_id", default=None
)  # the run's OpenTelemetry trace (32 hex digits), set by daemon.observe
run_level_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "flowerd_run_level", default=None
)


def level_number(level: str | int) -> int:
    """'debug' / 'INFO' / 10 -> a logging level number; ValueError names the bad value."""
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(str(level).upper())
    if number is None:
        raise ValueError(
            f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


class RunContextFilter(logging.Filter):
    """Adds `record.run_id` ('-' outside a run) for formatters; hides the secrets this
    process has read (daemon.revealed) from the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = run_id_var.get()
        record.run_id = "-" if run_id is None else run_id
        if revealed.any_revealed():
            record.msg, record.args = revealed.masked(record.getMessage()), None
            _mask_traces(record)
        record.trace_id = trace_id_var.get()
        return True


_trace_formatter = logging.Formatter()


def _mask_traces(record: logging.LogRecord) -> None:
    """The traceback (exc_info) and stack text attached to a record, masked like its
    message: formatted here into `exc_text`, which every formatter prints instead of
    formatting exc_info again (an exception's text may hold a secret a run read)."""
    if record.exc_info and not record.exc_text:
        record.exc_text = _trace_formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = revealed.masked(record.exc_text)
    if record.stack_info:
        record.stack_info = revealed.masked(record.stack_info)


class RunScopedLogger(logging.Logger):
    """The class of pipeline module loggers: while a run with a `log_level` is active (in
    this task or thread), that level decides; otherwise the usual logger hierarchy does.
    Overriding isEnabledFor (not a filter) keeps disabled calls free: no LogRecord is
    built for a debug line nobody will see."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        run_level = run_level_var.get()
        if run_level is not None:
            return level >= run_level
        return super().isEnabledFor(level)


def scope_pipeline_loggers() -> None:
    """Make every logger under PIPELINE_LOGGER_ROOT run-scoped (idempotent). Called after
    pipeline modules are (re)loaded, since they create their loggers then. Loggers of the
    host application are never touched."""
    prefix = PIPELINE_LOGGER_ROOT + "."
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix) and type(logger) is logging.Logger:
            logger.__class__ = RunScopedLogger


# -- log_config: the one handler the CLI installs -------------------------------------
# syslog priorities for journald's `<N>` line prefixes (sd-daemon(3))
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_TEXT_FORMAT = "%(levelname)s %(name)s [%(run_id)s] %(message)s"
_OURS = "_flowerd_handler"  # marks the handler log_config installed, so it can replace it


def log_config(
    level: str | int = "INFO",
    fmt: str = "text",
    *,
    environ: Mapping[str, str] = os.environ,
    stream: TextIO | None = None,
    background: bool = False,
    zone: str = "UTC",
) -> None:
    """Install flowerd's one handler on the root logger (idempotent: it replaces only the
    handler an earlier call installed, never a host's). Lines go to `stream` (stderr) and
    carry the run id. `fmt`: "text" (timestamped, human-readable) or "json" (one object
    per line, for log shippers). Under journald (JOURNAL_STREAM names this stream) lines
    get `<N>` priority prefixes and no timestamps: journald adds its own. `background`
    (the daemon): lines are written by a thread of their own (see _written_behind)."""
    number = level_number(level)
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; use text or json")
    stream = stream if stream is not None else sys.stderr
    journald = is_journal_stream(stream, environ)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(journald=journald)
    elif journald:
        formatter = JournaldFormatter(_TEXT_FORMAT)
    else:
        formatter = ZonedFormatter("%(asctime)s " + _TEXT_FORMAT, zone=zone)
    handler: logging.Handler
    handler = _written_behind(stream) if background else logging.StreamHandler(stream)
    setattr(handler, _OURS, True)
    handler.addFilter(RunContextFilter())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()  # a StreamHandler leaves its stream open
        if getattr(old, "listener", None) is not None:
            _stop(old.listener)
    root.addHandler(handler)
    root.setLevel(number)  # the handler stays NOTSET, so a run's own log_level can go lower
    _quiet_third_parties(number)


def _written_behind(stream: TextIO) -> logging.Handler:
    """The daemon's lines are filtered and formatted where they are logged (the filters
    read the run's context), and written to `stream` by a thread of their own
    (`_LineWriter`). A write to stderr can block -- journald slow or rate-limiting, a pipe
    nobody reads -- and the event loop must not wait on it (a pipe that fills would stop
    every slot). While the writer is stuck, lines queue up to MAX_QUEUED_LINES; past that
    they are counted, and the count is written once the writer moves again.
    (Was stdlib's QueueHandler / QueueListener: a copy of each record, a second format
    and a Condition per line cost ~40 % of a line; a burst of runs logs two lines each.)"""
    front = _Front(_LineWriter(stream))
    atexit.register(_stop, front.listener)  # before logging's own shutdown (atexit: LIFO)
    return front


MAX_QUEUED_LINES = 10_000
WRITE_BATCH_LINES = 512
GATHER_S = 0.01
_STOP = object()


class _LineWriter:
    """A thread writing the formatted lines handed to it, as many as are waiting in one
    write (a burst is a few writes, not one per line)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.dropped = 0
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="flowerd-log-writer", daemon=True
        )
        self._thread.start()

    def put(self, text: str) -> None:
        """Never blocks: past MAX_QUEUED_LINES waiting, the line is counted, not kept."""
        waiting = self.lines.qsize()
        if waiting >= MAX_QUEUED_LINES:
            self.dropped += 1
            return
        if self.dropped and waiting < MAX_QUEUED_LINES // 2:
            self.lines.put(
                f"flowerd: {self.dropped} log line(s) dropped: stderr was not being read "
                "(the history has every run)"
            )
            self.dropped = 0
        self.lines.put(text)

    def _run(self) -> None:
        while True:
            batch = [self.lines.get()]
            while len(batch) < WRITE_BATCH_LINES:
                try:
                    batch.append(self.lines.get_nowait())
                except queue.Empty:
                    break
            texts = [text for text in batch if text is not _STOP]
            if texts:
                self._write("\n".join(texts) + "\n")
            if len(texts) != len(batch):
                return
            # the lines of the next few ms gather meanwhile: a burst's lines wake this
            # thread (and take the loop's GIL away) a few times, not once per line
            time.sleep(GATHER_S)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone or closed: nobody to tell
            pass

    def stop(self) -> None:
        """Write every line handed so far, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.lines.put(_STOP)
            thread.join()


class _Front(logging.Handler):
    """Formats a line where it is logged and hands the text to the writer's thread."""

    def __init__(self, listener: _LineWriter):
        super().__init__()
        self.listener = listener

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: nothing shared
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own rule: a bad line never raises
            self.handleError(record)
            return
        self.listener.put(text)


def _stop(listener: _LineWriter) -> None:
    listener.stop()


def stop_background() -> None:
    """Write what the daemon's line writer still holds (before an exit that skips
    atexit); a no-op when lines are written where they are logged."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _OURS, False) and getattr(handler, "listener", None) is not None:
            _stop(handler.listener)


def set_terminal_level(level: str | int) -> None:
    """The level of the handler log_config installed; the root logger keeps its own, so
    `flowerd run` keeps the terminal quiet while the run's log gets every line."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _OURS, False):
            handler.setLevel(level_number(level))


def _quiet_third_parties(level: int) -> None:
    # APScheduler logs two INFO lines per job ("Running job", "executed successfully")
    # that duplicate the runner's; Hamilton's INFO is build chatter; aiosqlite logs
    # every statement at DEBUG.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    hamilton_level = logging.NOTSET if level <= logging.DEBUG else logging.WARNING
    logging.getLogger("hamilton").setLevel(hamilton_level)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    # alembic announces its plugins and context on every start-up; the history module
    # logs the migrations it applies itself.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # Hamilton's drivers log a community-Slack invitation at ERROR on every failed
    # execute; the runner records and logs the real error with the run id.
    for name in ("hamilton.driver", "hamilton.async_driver"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # At DEBUG, Hamilton's import-time plugin scan says ~25 times which extension it did
    # not load, and asyncio names its selector: noise, not the run's log.
    for name in ("hamilton.registry", "hamilton.io", "hamilton.data_quality", "asyncio"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def is_journal_stream(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """True when `stream` is the journald stream systemd connected (JOURNAL_STREAM is
    "<device>:<inode>" of it). Comparing, not just checking the variable, matters: a child
    process inherits JOURNAL_STREAM even when its stderr is redirected elsewhere."""
    value = environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError, io.UnsupportedOperation):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def syslog_priority(levelno: int) -> int:
    """DEBUG 7, INFO 6, WARNING 4, ERROR 3, CRITICAL 2."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


class ZonedFormatter(logging.Formatter):
    """Text lines timed as every time for people is shown: ISO-8601 in `zone` (the
    `timezone` setting) with its offset, `2026-12-07T15:06:13.414+01:00`."""

    def __init__(self, fmt: str, *, zone: str = "UTC"):
        from zoneinfo import ZoneInfo

        super().__init__(fmt)
        self.zone = ZoneInfo(zone)

    _second: int | None = None
    _head = _offset = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # the date, time and offset are the same for every line of a second (an offset
        # changes on whole seconds): made once a second, the record's milliseconds added
        second = int(record.created)
        if second != self._second:
            from daemon.durations import shown_iso

            text = shown_iso(datetime.fromtimestamp(second, UTC), self.zone, "seconds")
            self._head, self._offset, self._second = text[:19], text[19:], second
        return f"{self._head}.{int(record.msecs):03d}{self._offset}"


class JournaldFormatter(logging.Formatter):
    """Prefixes every line with `<N>`, so a traceback's lines keep the record's priority
    (journald turns each line of a stream into its own entry)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601, UTC), level, logger, message, run_id
    (null outside a run) and exc_info (the formatted traceback, or null)."""

    def __init__(self, *, journald: bool = False):
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "run_id", "-")
        exc_text = record.exc_text  # formatted (and masked) by RunContextFilter, if so
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        if record.stack_info:
            exc_text = "\n".join(filter(None, [exc_text, self.formatStack(record.stack_info)]))
        line = json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "run_id": None if run_id == "-" else run_id,
                "trace_id": getattr(record, "trace_id", None),
                "exc_info": exc_text,
            },
            default=str,
            ensure_ascii=False,
        )
        return f"<{syslog_priority(record.levelno)}>{line}" if self.journald else line
