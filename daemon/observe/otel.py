"""OpenTelemetry (`[otel]`): each run a trace -- a span `flowerd.run <pipeline>` and, under
it, a span per executed Hamilton node named as the node -- sent over OTLP/HTTP.

Spans are made here, in the daemon, from the run's node events (daemon.observe.nodes), with
the times the nodes really had: so the same code serves the async and the sync driver,
`isolation = "process"` (the worker sends its node events back as they happen) and Dask
(what Hamilton's Dask adapter gives here). A run's spans are exported together at its end
(`run_ended`, in a thread, bounded by `tracking_timeout_s`), before its row is final; a
collector that is down fails only that export -- the run's log says so, the counter moves.
A `traceparent` given to the run (a webhook's W3C header) makes the run span its child.

Needs the `flowerd[observe]` extra (checked with the settings: daemon.observe.sections).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from daemon.observe.listeners import SUCCESS, NodeEnd, RunEnd, RunListener, RunStart

MAX_SPANS = 10_000  # node spans a run keeps; past that they are counted, not sent
_propagator = TraceContextTextMapPropagator()


def make(settings: Any, section: dict[str, Any]) -> OtelSink:
    timeout_s = getattr(settings, "tracking_timeout_s", 5.0)
    endpoint = section.get("endpoint")
    traces = f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None  # else OTEL_* env
    exporter = OTLPSpanExporter(endpoint=traces, timeout=timeout_s)
    return OtelSink(_Exports(exporter, timeout_s), section.get("service_name", "flowerd"), traces)


class _Exports:
    """One thread sends the spans of the runs that end while it is busy in one request
    (a run waits for its own spans, at most `timeout_s`): a burst of runs costs a few
    requests, not one each."""

    def __init__(self, exporter: Any, timeout_s: float):
        self.exporter = exporter
        self.timeout_s = timeout_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def export(self, spans: list) -> bool:
        """Whether `spans` were sent within `timeout_s`."""
        done = _Export(spans)
        self._start()
        self._queue.put(done)
        return done.sent.wait(self.timeout_s) and done.ok

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="flowerd-otel-export", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            stop = any(item is None for item in batch)
            batch = [item for item in batch if item is not None]
            if batch:
                spans = [span for item in batch for span in item.spans]
                try:
                    ok = self.exporter.export(spans) is SpanExportResult.SUCCESS
                except Exception:  # noqa: BLE001 - the exporter's own fault: not sent
                    ok = False
                for item in batch:
                    item.ok = ok
                    item.sent.set()
            if stop:
                return

    def shutdown(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(self.timeout_s)
        self.exporter.shutdown()


class _Export:
    def __init__(self, spans: list):
        self.spans = spans
        self.ok = False
        self.sent = threading.Event()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtelSink:
    name = "otel"

    def __init__(self, exporter: _Exports, service_name: str, where: str | None):
        self.exporter = exporter
        self.where = where or "the OTEL_EXPORTER_OTLP_* endpoint"
        # no span processor: each run's listener exports its own spans at its end
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.tracer = provider.get_tracer("flowerd")

    def open_run(self, run: RunStart) -> RunListener | None:
        if run.spec is not None and getattr(run.spec, "otel", True) is False:
            return None
        return _RunSpans(self, run)

    def close(self) -> None:
        self.exporter.shutdown()


class _RunSpans(RunListener):
    def __init__(self, sink: OtelSink, run: RunStart):
        self.sink = sink
        parent = _propagator.extract({"traceparent": run.traceparent}) if run.traceparent else None
        self.span = sink.tracer.start_span(
            f"flowerd.run {run.pipeline}",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            start_time=_ns(run.started_at.timestamp()),
            attributes=_attributes(run),
        )
        self.trace_id = format(self.span.get_span_context().trace_id, "032x")
        self._under = trace.set_span_in_context(self.span)
        self.spans: list[Any] = []
        self.dropped = 0

    def node_ended(self, node: NodeEnd) -> None:
        if node.started_at is None:  # skipped: never executed, no span
            return
        if len(self.spans) >= MAX_SPANS:
            self.dropped += 1
            return
        start = _ns(node.started_at)
        span = self.sink.tracer.start_span(node.name, context=self._under, start_time=start)
        if node.task_id:
            span.set_attribute("hamilton.task_id", node.task_id)
        if node.status != SUCCESS:
            span.set_status(Status(StatusCode.ERROR, node.error or node.status))
        span.end(end_time=start + _ns(node.duration_s))
        self.spans.append(span)

    def run_ended(self, end: RunEnd) -> None:
        if end.status != SUCCESS:
            why = f"{end.error.type}: {end.error.message}" if end.error else end.status
            self.span.set_status(Status(StatusCode.ERROR, f"{end.status}: {why}"))
        self.span.end(end_time=_ns(end.finished_at.timestamp()))
        spans = [*self.spans, self.span]
        if not self.sink.exporter.export(spans):
            raise RuntimeError(
                f"{len(spans)} span(s) of trace {self.trace_id} not exported to "
                f"{self.sink.where} within tracking_timeout_s ({self.sink.exporter.timeout_s:g} s)"
            )
        if self.dropped:
            raise RuntimeError(f"{self.dropped} node span(s) past {MAX_SPANS} not sent")


def _attributes(run: RunStart) -> dict[str, Any]:
    attributes = {
        "flowerd.run_id": run.run_id,
        "flowerd.trigger": run.trigger,
        "flowerd.pipeline": run.pipeline,
    }
    if run.schedule:
        attributes["flowerd.schedule"] = run.schedule
    if run.slot is not None:
        attributes["flowerd.slot"] = run.slot.isoformat()
    return attributes
