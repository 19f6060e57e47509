"""`LateEnds`: the Hamilton UI's runs whose end was not taken when the run ended (the UI
down or slow then), sent again in the background so that the UI ends up showing each
run's terminal state instead of RUNNING for good. A part of the Hamilton UI sink
(daemon.observe.hamilton_ui), bounded: END_TRIES tries over a few minutes (the first
after `first_s`, 2 x tracking_timeout_s; then twice as long each time), at most
MAX_UNENDED runs held (the oldest let go first); what is given up is logged. Each try
runs on the sink's lane, in order with its other requests, so it never races the runs
being reported. A run whose registration itself was not answered has no id to end:
that one stays RUNNING (its log said it was not reported).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import requests

log = logging.getLogger("daemon.observe")

END_TRIES = 5  # sent again after 10, 20, 40, 80, 160 s (first_s = 10 s), then let go
MAX_UNENDED = 1000


class Ender(Protocol):
    """The run's client (hamilton_ui._Client): sends the updates it holds, then the end."""

    run_id: int | None

    def end_again(self, dag_run_id: int, status: str) -> None: ...


class Lane(Protocol):
    """What of the sink this uses: its one request thread, and why a request failed
    (a UI that cannot be reached is left alone for a while)."""

    lane: Any  # concurrent.futures.Executor

    def failed(self, exc: BaseException) -> str: ...


class LateEnds:
    def __init__(self, sink: Lane, *, first_s: float):
        self.sink = sink
        self.first_s = first_s
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[Ender, str, int]] = {}  # dag_run_id: (client, status, tries)
        self.timer: threading.Timer | None = None
        self.delay_s = first_s
        self.stopped = False

    def add(self, dag_run_id: int, client: Ender, status: str, run_id: int) -> None:
        """Hold this run's end (`status`: SUCCESS | FAILURE) to send it again."""
        client.run_id = run_id
        with self.lock:
            if self.stopped:
                return
            if len(self.pending) >= MAX_UNENDED:
                dropped = next(iter(self.pending))
                del self.pending[dropped]
                log.warning("the Hamilton UI's run %d stays RUNNING there: more than %d "
                            "runs' ends wait to be sent", dropped, MAX_UNENDED)  # fmt: skip
            self.pending[dag_run_id] = (client, status, 0)
            if self.timer is None:
                self.delay_s = self.first_s
                self._arm()

    def _arm(self) -> None:
        self.timer = threading.Timer(self.delay_s, self._due)
        self.timer.daemon = True
        self.timer.name = "flowerd-hamilton-ui-ends"
        self.timer.start()

    def _due(self) -> None:
        try:
            self.sink.lane.submit(self.send)
        except RuntimeError:  # the lane is shut down: the daemon stops
            pass

    def send(self) -> None:
        """On the lane: each end held, in the order the runs ended; a UI still not
        answering is not asked for the others this time."""
        with self.lock:
            todo = list(self.pending.items())
        for dag_run_id, (client, status, tries) in todo:
            try:
                client.end_again(dag_run_id, status)
            except Exception as exc:  # noqa: BLE001 - kept for the next try, or let go
                if self._failed(dag_run_id, client, status, tries + 1, exc):
                    break
                continue
            with self.lock:
                self.pending.pop(dag_run_id, None)
            log.info("run %s: its end (%s) was taken by the Hamilton UI on a later try",
                     client.run_id, status)  # fmt: skip
        with self.lock:
            self.timer = None
            if self.pending and not self.stopped:
                self.delay_s *= 2
                self._arm()

    def _failed(self, dag_run_id: int, client: Ender, status: str, tries: int,
                exc: Exception) -> bool:  # fmt: skip
        """Keep it for the next try, or let it go (said); whether the UI is unreachable."""
        reason = self.sink.failed(exc)
        unreachable = isinstance(exc, requests.ConnectionError | requests.Timeout)
        with self.lock:
            if tries < END_TRIES:
                self.pending[dag_run_id] = (client, status, tries)
                return unreachable
            self.pending.pop(dag_run_id, None)
        log.warning("run %s: the Hamilton UI's run %d stays RUNNING there: its end was not "
                    "taken in %d tries (%s)", client.run_id, dag_run_id, tries, reason)  # fmt: skip
        return unreachable

    def stop(self) -> None:
        """The daemon stops: one last try on the lane (before it shuts down), after
        which what is still held is said."""
        with self.lock:
            self.stopped = True
            if self.timer is not None:
                self.timer.cancel()
            if not self.pending:
                return
        self.sink.lane.submit(self._last)

    def _last(self) -> None:
        self.send()
        with self.lock:
            left = len(self.pending)
        if left:
            log.warning("%d runs stay RUNNING in the Hamilton UI: the daemon stopped before "
                        "their ends were taken", left)  # fmt: skip
