"""Prometheus metrics (contract: DESIGN.md "HTTP"), in a registry of their own.

Counters and histograms move on the runner's run-event edge (`Metrics.on_run_event`);
gauges that are cheap to read (next fires, running runs, loop lag, the history's write
errors, the last successes) are computed when Prometheus scrapes, never per run.

    flowerd_runs_total{schedule,pipeline,status}     every terminal row, skipped/missed too
    flowerd_run_duration_seconds{schedule}           started -> finished
    flowerd_fire_lateness_seconds                    started_at - scheduled_at, trigger schedule
    flowerd_runs_running                             runs being carried out now
    flowerd_schedule_next_fire_timestamp_seconds{schedule}
    flowerd_schedule_last_success_timestamp_seconds{schedule}   seeded from the history;
                                                     0 for a schedule that never succeeded
    flowerd_event_loop_lag_seconds                   the daemon's lag probe
    flowerd_history_write_errors_total               the history's own count
    flowerd_notifications_total{result}              `count_notification()` (the notifier)
    flowerd_pool_waiting{pool}, flowerd_runs_late_total{schedule}   for pools and deadlines
    flowerd_events_total{schedule,kind}              `count_event()` (daemon.incoming's journal)
    flowerd_event_start_seconds                      event seen -> run started (file, webhook)

A run without a schedule (`flowerd run`, the Python API) has the label schedule="".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from daemon.history import EVENT_TRIGGERS
from daemon.runner.events import RunEvent

if TYPE_CHECKING:
    from daemon.http.served import Served

log = logging.getLogger(__name__)

# `_created` series double every counter's lines and Prometheus ignores them by default;
# this process is the daemon's, so the switch (process-wide) is ours to turn.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# how long runs take: 50 ms .. 2 h (each bucket is a line per schedule on every scrape)
DURATION_BUCKETS_S = (0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 7200)
# how late a slot starts: the asyncio timer floor is ~1 ms; misfire_grace defaults to 60 s
LATENESS_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60)


class Metrics:
    """The daemon's metrics. `bind(daemon)` once its parts exist; `render()` to scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "flowerd_runs",
            "Runs that reached a terminal state (rows, incl. skipped and missed slots)",
            ["schedule", "pipeline", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "flowerd_run_duration_seconds",
            "How long runs took, from start to finish",
            ["schedule"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.lateness = Histogram(
            "flowerd_fire_lateness_seconds",
            "How late scheduled runs started after their slot (started_at - scheduled_at)",
            buckets=LATENESS_BUCKETS_S,
            registry=r,
        )
        self.notifications = Counter(
            "flowerd_notifications",
            "Notifications sent, by result (ok | error)",
            ["result"],
            registry=r,
        )
        self.pool_waiting = Gauge(
            "flowerd_pool_waiting", "Runs waiting for their pool", ["pool"], registry=r
        )
        self.runs_late = Counter(
            "flowerd_runs_late",
            "Runs (or waiting slots) past their deadline",
            ["schedule"],
            registry=r,
        )
        self.events = Counter(
            "flowerd_events",
            "Events recorded (a file that landed, a webhook delivery), each once",
            ["schedule", "kind"],
            registry=r,
        )
        self.event_start = Histogram(
            "flowerd_event_start_seconds",
            "From an event seen (a file settled, a webhook accepted) to its run started",
            buckets=LATENESS_BUCKETS_S,
            registry=r,
        )
        self.tracking_errors = Counter(
            "flowerd_tracking_errors",
            "Runs (or their parts) a tracking sink did not get, by sink",
            ["sink"],
            registry=r,
        )
        self.last_success: dict[str, float] = {}
        self._children: dict[tuple, Any] = {}  # see _labelled
        self._daemon: Served | None = None
        self._scraped: list = []
        r.register(_ScrapeTime(self))

    def bind(self, daemon: Served) -> None:
        """The daemon whose runner, scheduler and history the scrape-time gauges read."""
        self._daemon = daemon

    # -- the run-event edge ------------------------------------------------------------
    def on_run_event(self, event: RunEvent) -> None:
        schedule = event.schedule_id or ""
        if event.kind == "started":
            if event.scheduled_at and event.started_at:
                late_s = max(0.0, (event.started_at - event.scheduled_at).total_seconds())
                if event.trigger == "schedule":
                    self.lateness.observe(late_s)
                elif event.trigger in EVENT_TRIGGERS:
                    self.event_start.observe(late_s)
            return
        self._labelled(self.runs, schedule, event.pipeline, event.status).inc()
        if event.duration_s is not None:
            self._labelled(self.duration, schedule).observe(event.duration_s)
        if event.status == "success" and schedule and event.finished_at:
            self.success_at(schedule, event.finished_at.timestamp())

    def _labelled(self, metric, *labels: str):
        """`metric.labels(*labels)`, kept: prometheus_client builds and locks for each
        lookup, and every run's end asks for the same few."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def success_at(self, schedule: str, timestamp_s: float) -> None:
        self.last_success[schedule] = max(timestamp_s, self.last_success.get(schedule, 0.0))

    def count_event(self, schedule: str, kind: str) -> None:
        """For the journal (daemon.incoming): one event recorded for the first time."""
        self.events.labels(schedule, kind).inc()

    def count_notification(self, result: str) -> None:
        """For the notifier: one delivery's outcome (`sent`, `error`, `dropped`)."""
        self.notifications.labels(result).inc()

    def count_tracking_error(self, sink: str) -> None:
        """For daemon.observe: a sink (hamilton_ui | otel | openlineage) missed a report."""
        self.tracking_errors.labels(sink).inc()

    async def seed(self, history: Any, schedules: Iterable[str]) -> None:
        """Each schedule's last success from the history, so the gauge (and an alert on
        it) is right across restarts. One indexed query per schedule, off the loop."""
        for schedule in schedules:
            try:
                found = await history.list_runs(schedule=schedule, status="success", limit=1)
            except Exception as exc:  # a metric must not stop the daemon
                log.warning("metrics: cannot read the last success of %s: %s", schedule, exc)
                return
            if found and found[0].finished_at is not None:
                self.success_at(schedule, found[0].finished_at.timestamp())

    def snapshot(self) -> None:
        """Read the scrape-time gauges now (on the event loop: the daemon's state is the
        loop's); `render` writes them out with the rest."""
        schedules = self._daemon.scheduler.schedules if self._daemon is not None else ()
        families = [_last_successes(self.last_success, schedules)]
        if self._daemon is not None:
            families += _daemon_gauges(self._daemon)
        self._scraped = families

    def render(self) -> bytes:
        self.snapshot()
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """A scrape: the gauges read on the loop, the text written in a thread (many
        schedules make many lines; a slot must not wait for them)."""
        self.snapshot()
        return await asyncio.to_thread(generate_latest, self.registry)


class _ScrapeTime:
    """The gauges read when Prometheus scrapes: taken on the event loop (`snapshot`),
    written out by generate_latest in a thread."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self):
        yield from self._metrics._scraped


def _last_successes(last_success: dict[str, float], schedules: Iterable[str]) -> GaugeMetricFamily:
    """A sample for every schedule the daemon runs -- 0 until its first success, so an
    alert on `time() - this > N` fires for a schedule that never succeeded -- and for
    any other schedule that succeeded since the start (a run of a removed one)."""
    last = GaugeMetricFamily(
        "flowerd_schedule_last_success_timestamp_seconds",
        "When each schedule's newest successful run finished (Unix time; 0: never)",
        labels=["schedule"],
    )
    for schedule in sorted(set(schedules) | set(last_success)):
        last.add_metric([schedule], last_success.get(schedule, 0.0))
    return last


def _daemon_gauges(daemon: Served) -> list:
    running = GaugeMetricFamily("flowerd_runs_running", "Runs being carried out now")
    running.add_metric([], len(daemon.runner.active))
    nxt = GaugeMetricFamily(
        "flowerd_schedule_next_fire_timestamp_seconds",
        "Each firing schedule's next slot (Unix time); absent while paused or disabled",
        labels=["schedule"],
    )
    for schedule in daemon.scheduler.schedules:
        when = daemon.scheduler.next_fire(schedule)
        if when is not None:
            nxt.add_metric([schedule], when.timestamp())
    lag = GaugeMetricFamily(
        "flowerd_event_loop_lag_seconds", "How late the daemon's last timer probe fired"
    )
    lag.add_metric([], daemon.loop_lag_s)
    errors = CounterMetricFamily(
        "flowerd_history_write_errors", "History writes that failed (and were retried)"
    )
    errors.add_metric([], float(getattr(daemon.history, "write_errors", 0)))
    return [running, nxt, lag, errors]
