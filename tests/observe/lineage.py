"""A real OpenLineage HTTP receiver on 127.0.0.1 for the tracking tests: it takes
`POST /api/v1/lineage` (JSON run events, as Marquez does) and keeps them in order."""

from __future__ import annotations

import http.server
import json
import threading


class LineageReceiver:
    """`with LineageReceiver() as lineage:` -- lineage.url is the [openlineage] url."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path == "/api/v1/lineage"
                if ok:
                    with receiver.changed:
                        receiver.events.append(json.loads(body))
                        receiver.changed.notify_all()
                self.send_response(201 if ok else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def of_job(self, name: str) -> list[dict]:
        with self.changed:
            return [event for event in self.events if event["job"]["name"] == name]

    def __enter__(self) -> LineageReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
