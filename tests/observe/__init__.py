"""A real OTLP/HTTP receiver on 127.0.0.1 for the tracking tests: it takes
`POST /v1/traces` (protobuf ExportTraceServiceRequest, as collectors do) and keeps the
spans, decoded with opentelemetry-proto."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int
    service: str


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _spans(body: bytes) -> list[Span]:
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                found.append(
                    Span(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status_code=span.status.code,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        service=resource.get("service.name", ""),
                    )
                )
    return found


class OtlpReceiver:
    """`with OtlpReceiver() as otlp:` -- otlp.endpoint is the [otel] endpoint."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path == "/v1/traces"
                if ok:
                    with receiver.changed:
                        receiver.spans.extend(_spans(body))
                        receiver.requests += 1
                        receiver.changed.notify_all()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def trace(self, trace_id: str) -> list[Span]:
        with self.changed:
            return [s for s in self.spans if s.trace_id == trace_id]

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
