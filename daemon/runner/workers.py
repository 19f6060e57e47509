"""`isolation = "process"`: a run in a worker process that can be killed.

    Runner._call --> WorkerPool.run(pipeline, cfg) --> an idle worker (or a new one)
        worker: Pipelines(base_dir) -> execute_sync | its own loop: execute_async
        <-- ("attempt", n) ("log", ...) ("out", ...) ... ("done", result) | ("error", ...)
    timeout / cancel: SIGTERM to the worker's process group, SIGKILL after KILL_GRACE_S
    the worker dies (signal, os._exit, OOM kill): WorkerDied naming the code or signal

Workers are started by multiprocessing's `forkserver` (a fresh interpreter that imported
daemon.runner.worker_process -- what runs in a worker -- and Hamilton once; each worker is a
fork of it), so the daemon's threads and event loop are never forked, and a new worker
costs a fork, not an interpreter start.
Each worker leads a process group of its own: whatever a pipeline starts is killed with
it. A worker serves one run at a time and is reused until a run kills, times out, runs
out of memory or raises BaseException in it.

What crosses back to the daemon is bounded: log records (at the run's level) and the
worker's stdout/stderr lines, up to `max_output_bytes` per run -- the rest is counted and
reported once as a cut. They are re-emitted in the daemon under the run's context
(`logs.run_id_var`), so every handler there sees them as the run's own lines.

A worker loads pipelines through daemon.pipeline's Pipelines, exactly as the daemon
does; neither this module nor daemon.runner.worker_process imports Hamilton itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from daemon.durations import format_bytes
from daemon.pipeline import Attempts, RunConfig
from daemon.pipeline.retries import backoff_s, delays, exception_types, should_retry
from daemon.runner import worker_process
from daemon.runner.worker_process import Job, worker_main

log = logging.getLogger("daemon.workers")  # its name before the move

START_METHOD = "forkserver"
KILL_GRACE_S = 2.0  # SIGTERM to the worker's group, then SIGKILL after this long
START_TIMEOUT_S = 120.0  # the first worker waits for the forkserver to import Hamilton
MAX_IDLE_WORKERS = 4


# --------------------------------------------------------------------------- errors


class WorkerRunError(Exception):
    """A run in a worker ended with an error; `fields` is its row's error as the worker
    saw it ({type, message, traceback}), so the row names the pipeline's own exception."""

    def __init__(self, fields: dict[str, str | None]):
        super().__init__(fields["message"])
        self.fields = fields


class WorkerDied(WorkerRunError):
    """The worker process ended while running the run: a signal, os._exit, an OOM kill."""

    def __init__(self, message: str):
        super().__init__({"type": "WorkerDied", "message": message, "traceback": None})


def error_fields(exc: BaseException) -> dict[str, str | None]:
    """An exception as a row's error: {type, message, traceback}; a worker's error as the
    worker saw it."""
    if isinstance(exc, WorkerRunError):
        return exc.fields
    return worker_process.error_fields(exc)


def death_message(exitcode: int | None, memory_limit_bytes: int | None) -> str:
    """`killed by SIGSEGV (signal 11)`, `exited with code 1`, ... -- for WorkerDied."""
    if exitcode is None:
        return "the worker process ended (its exit status is unknown)"
    if exitcode >= 0:
        return (
            f"the worker process exited with code {exitcode} while running the pipeline "
            "(os._exit, or a crash outside Python)"
        )
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    message = f"the worker process was killed by {name} (signal {number})"
    if number == signal.SIGKILL:
        limit = f" (memory_limit {format_bytes(memory_limit_bytes)})" if memory_limit_bytes else ""
        message += f"; the kernel's out-of-memory killer{limit} or a `kill -9` does this"
    return message


class _Run:
    """The daemon's end of one job: routes the worker's messages, on the loop thread."""

    def __init__(self, job: Job, attempts: Attempts, done: asyncio.Future, on_node=None):
        self.job, self.attempts, self.done = job, attempts, done
        self.on_node = on_node  # the run's node events (daemon.observe's RunTrack.relay)
        # attempts made by earlier workers of this run (one died; see WorkerPool.run)
        self.before = (attempts.count, len(attempts.errors))
        self.context = contextvars.copy_context()  # the run's: run_id_var is set
        self.keep_worker = True  # False: the worker's state is suspect, it must go

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "attempt":  # (count, errors of the attempts retried) in this worker
            self.attempts.count = self.before[0] + message[1]
            self.attempts.errors[self.before[1] :] = message[2]
        elif kind == "node":
            if self.on_node is not None:
                self.context.run(self.on_node, message[1])
        elif kind in ("log", "out", "cut"):
            self.context.run(_EMITTERS[kind], self.job, *message[1:])
        elif not self.done.done():
            if kind == "done":
                self.done.set_result(message[1])
            elif kind == "error":
                self.keep_worker = message[2]
                self.done.set_exception(WorkerRunError(message[1]))
            else:  # "died"
                died = death_message(message[1], self.job.memory_limit_bytes)
                self.done.set_exception(WorkerDied(died))


def _emit_log(job: Job, created: float, levelno: int, name: str, text: str) -> None:
    record = logging.makeLogRecord(
        {
            "name": name,
            "levelno": levelno,
            "levelname": logging.getLevelName(levelno),
            "msg": text,
            "created": created,
            "msecs": (created - int(created)) * 1000,
            "processName": "flowerd-worker",
        }
    )
    logging.getLogger(name).handle(record)  # filtered at the run's level in the worker


def _emit_line(job: Job, created: float, stream: str, text: str) -> None:
    logger = logging.getLogger(f"flowerd.{stream}")
    if logger.isEnabledFor(logging.INFO):
        _emit_log(job, created, logging.INFO, logger.name, text)


def _emit_cut(job: Job, items: int, size: int, budget: int) -> None:
    log.warning(
        "output cut: the run's log lines and stdout/stderr past %s were not forwarded "
        "from its worker (%d more line(s), %s)",
        format_bytes(budget),
        items,
        format_bytes(size),
    )


_EMITTERS: dict[str, Callable[..., None]] = {"log": _emit_log, "out": _emit_line, "cut": _emit_cut}


class _Worker:
    """The daemon's handle on one worker process: a reader thread turns its messages
    (and its death) into calls on the event loop."""

    def __init__(self, process, conn: Connection, loop: asyncio.AbstractEventLoop):
        self.process, self.conn, self.loop = process, conn, loop
        self.pid: int = process.pid
        self.run: _Run | None = None
        self.ready: asyncio.Future = loop.create_future()
        self.ready.add_done_callback(_retrieved)  # its starter may have been cancelled
        self.alive = True
        self.exited = threading.Event()  # set by the reader once the worker is reaped
        self.reader = threading.Thread(
            target=self._read, name=f"flowerd-worker-{self.pid}", daemon=True
        )
        self.reader.start()

    def _read(self) -> None:
        """The only thread that reads the pipe and joins the process, until it ends."""
        exitcode = None
        try:
            self._read_until_exit()
            self.process.join(5)
            exitcode = self.process.exitcode
        finally:
            if exitcode is not None:
                self.exited.set()
            self._post(("died", exitcode))

    def _read_until_exit(self) -> None:
        while True:
            ready = wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return
                except Exception as exc:  # noqa: BLE001 - unpickling a result ran its code
                    message = ("error", _unreadable(exc), True)
                self._post(message)
            elif not self.conn.poll():
                return

    def _post(self, message: tuple) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self.loop.call_soon_threadsafe(self._handle, message)

    def _handle(self, message: tuple) -> None:
        if message[0] == "ready":
            if not self.ready.done():
                self.ready.set_result(message[1])
            return
        if message[0] == "died":
            self.alive = False
            if not self.ready.done():
                self.ready.set_exception(WorkerDied(death_message(message[1], None)))
        if self.run is not None:
            self.run.handle(message)

    def start(self, run: _Run) -> None:
        self.run = run
        try:
            self.conn.send(run.job)
        except (OSError, ValueError):
            pass  # it died meanwhile: the reader reports how

    def signal_group(self, signum: int) -> None:
        """The worker and everything it started (its process group); the worker itself
        too, which may not have made its group yet (killed while starting)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
        if not self.exited.is_set():  # not reaped, so its pid is still its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def group_alive(self) -> bool:
        if not self.exited.is_set():
            return True
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def reap(self, timeout_s: float) -> None:
        """After the worker ended: its reader's last word, then its pipe closed."""
        self.reader.join(timeout_s)
        if not self.reader.is_alive():
            self.conn.close()
            with contextlib.suppress(ValueError):
                self.process.close()


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _unreadable(exc: Exception) -> dict[str, str]:
    return {
        "type": "UnpicklableResult",
        "message": "the worker's result could not be unpickled in the daemon: "
        f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _preload() -> list[str]:
    """What the forkserver imports once, so a new worker is a fork away: Hamilton and the
    pipeline layer -- and, under `flowerd`, the CLI: multiprocessing runs the main script
    again in every new worker (as `__mp_main__`; `flowerd` guards its `main()`), and
    that then finds its imports done (125 ms per worker otherwise)."""
    return [
        "daemon.runner.worker_process",
        *(["daemon.cli"] if "daemon.cli" in sys.modules else []),
    ]


class WorkerPool:
    """Worker processes for `isolation = "process"` runs, started on first use and reused.
    One run per worker at a time; at most `max_idle` idle workers are kept."""

    def __init__(
        self,
        *,
        base_dir: Path,
        pipelines_dir: Path,
        max_output_bytes: int = 1 << 20,
        max_idle: int = MAX_IDLE_WORKERS,
        kill_grace_s: float = KILL_GRACE_S,
        start_method: str = START_METHOD,
        node_hooks: Any = None,
    ):
        self.base_dir, self.pipelines_dir = str(base_dir), str(pipelines_dir)
        self.node_hooks = node_hooks  # daemon.observe's: each worker's drivers get them
        self.max_output_bytes = max_output_bytes
        self.max_idle = max_idle
        self.kill_grace_s = kill_grace_s
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._context.set_forkserver_preload(_preload())
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self.started = 0  # workers started so far (for tests and status)

    @property
    def pids(self) -> list[int]:
        return sorted(w.pid for w in self._all)

    async def run(
        self,
        pipeline: str,
        cfg: RunConfig,
        attempts: Attempts,
        *,
        memory_limit_bytes: int | None = None,
        timeout_s: float = 0,
        on_node: Callable[[tuple], None] | None = None,
    ) -> dict[str, Any]:
        """Run in a worker and return the result; raises WorkerRunError / WorkerDied, or
        TimeoutError after `timeout_s` (0: none), counted from when a worker has the run
        (starting one is not the run's time). Timed out or cancelled (the drain): the
        worker's process group is killed before this returns. A worker that dies (a
        signal, the OOM killer) is an attempt that failed like any other: retried in a
        new worker under the run's retry policy (`max_retries`, `retry_exceptions`)."""
        retry_on = exception_types(cfg.retry_exceptions)
        loop = asyncio.get_running_loop()
        spent_s = 0.0  # the run's timeout covers its attempts in every worker
        while True:
            left = max(cfg.max_retries - attempts.count, 0)  # the budget a worker has left
            if timeout_s and spent_s >= timeout_s:
                raise TimeoutError(f"the run exceeded its timeout of {timeout_s:g} s")
            started = loop.time()
            try:
                return await self._run_once(
                    pipeline, cfg.merged({"max_retries": left}), attempts,
                    memory_limit_bytes=memory_limit_bytes,
                    timeout_s=timeout_s - spent_s if timeout_s else 0, on_node=on_node,
                )  # fmt: skip
            except WorkerDied as exc:
                if not should_retry(exc, attempts, cfg, retry_on):
                    raise
                await asyncio.sleep(backoff_s(attempts.count, **delays(cfg)))
            spent_s += loop.time() - started

    async def _run_once(
        self,
        pipeline: str,
        cfg: RunConfig,
        attempts: Attempts,
        *,
        memory_limit_bytes: int | None,
        timeout_s: float,
        on_node: Callable[[tuple], None] | None = None,
    ) -> dict[str, Any]:
        job = Job(
            pipeline=pipeline,
            cfg=cfg,
            memory_limit_bytes=memory_limit_bytes,
            log_level=logging.getLogger().getEffectiveLevel(),
            max_output_bytes=self.max_output_bytes,
        )
        worker = await self._acquire()
        run = _Run(job, attempts, asyncio.get_running_loop().create_future(), on_node)
        worker.start(run)
        try:
            async with asyncio.timeout(timeout_s or None):
                result = await run.done
        except (asyncio.CancelledError, TimeoutError):
            await asyncio.shield(self._kill(worker))
            raise
        except WorkerRunError as exc:
            if isinstance(exc, WorkerDied):
                await self._kill(worker)  # what it started may live on in its group
            elif run.keep_worker:
                self._release(worker)
            else:
                await self._stop(worker)
            raise
        self._release(worker)
        return result

    async def _acquire(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            await self._stop(worker)
        return await self._start()

    async def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(child, self.base_dir, self.pipelines_dir, self.node_hooks),
            name="flowerd-worker",
        )
        starting = asyncio.ensure_future(asyncio.to_thread(process.start))
        cancelled = None
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError as exc:  # a fork away: let it finish, then kill it
            cancelled = exc
            await starting
        finally:
            child.close()
        worker = _Worker(process, parent, asyncio.get_running_loop())
        self._all.add(worker)
        self.started += 1
        try:
            if cancelled is not None:
                raise cancelled
            async with asyncio.timeout(START_TIMEOUT_S):
                await worker.ready
        except BaseException as exc:
            await asyncio.shield(self._kill(worker))
            if isinstance(exc, TimeoutError):
                raise WorkerDied(f"no worker process started in {START_TIMEOUT_S:g} s") from None
            raise
        log.debug("worker process %d started", worker.pid)
        return worker

    def _release(self, worker: _Worker) -> None:
        worker.run = None
        if worker.alive and len(self._idle) < self.max_idle:
            self._idle.append(worker)
        else:
            asyncio.get_running_loop().create_task(self._stop(worker))

    async def _stop(self, worker: _Worker) -> None:
        """An idle worker: asked to leave; killed if it does not."""
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send(None)
        await self._kill(worker, grace_s=self.kill_grace_s, polite=False)

    async def _kill(self, worker: _Worker, *, grace_s: float | None = None, polite=True):
        """SIGTERM to the worker's group, SIGKILL after the grace; then forget it."""
        worker.run = None
        grace_s = self.kill_grace_s if grace_s is None else grace_s
        if polite:
            worker.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while worker.group_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if worker.group_alive():
            worker.signal_group(signal.SIGKILL)
            deadline = time.monotonic() + 0.5  # they cannot survive it; reaped soon after
            while worker.group_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await asyncio.to_thread(worker.reap, 5)
        self._all.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)

    def close(self) -> None:
        """Kill every worker and what it started (the daemon is stopping)."""
        for worker in list(self._all):
            worker.run = None
            worker.signal_group(signal.SIGKILL)
        for worker in list(self._all):
            worker.reap(2)
        self._all.clear()
        self._idle.clear()


__all__ = ["Job", "WorkerDied", "WorkerPool", "WorkerRunError", "error_fields"]
