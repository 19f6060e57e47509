"""See it: Prometheus metrics, a JSON API and a web page, served by uvicorn in the
daemon's own event loop.

    server.py   the `http` setting -> a bound socket -> uvicorn's Server.serve() as a task
    metrics.py  prometheus-client in a registry of its own, fed by the runner's run events
    json_api.py  /healthz, /metrics, /api/... (the CLI's JSON shapes)
    page.py     GET / and the run pages (Jinja2 templates, static assets in this package)
    served.py   what all of them read and ask of the daemon: a typing.Protocol

Nothing here is imported unless `http` is on, except `address` and `metrics` (light).
"""
