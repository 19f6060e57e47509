"""OpenTelemetry end to end: real `flowerd serve` / `flowerd run` processes report to a
real OTLP/HTTP receiver on 127.0.0.1 (tests/observe: spans decoded with
opentelemetry-proto). One run span per run with its attributes, one child span per node
under it -- async and sync driver, thread and process isolation; a webhook's
`traceparent`; a receiver that is down fails no run and delays none past the bound."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from daemon.errors import SettingsError
from daemon.settings import load_settings
from tests.contract import bound
from tests.http.test_server import fetch
from tests.observe import OtlpReceiver
from tests.serve import Served, cli, cli_here, make_project, rows_where, wait_for

SCHEDULES = """
[async_thread]
pipeline = "hello_world"
interval = "1s"

[sync_thread]
pipeline = "hello_world"
interval = "1s"
async_driver = false

[sync_process]
pipeline = "hello_world"
interval = "1s"
async_driver = false
isolation = "process"

[async_process]
pipeline = "hello_world"
interval = "1s"
isolation = "process"

[quiet]
pipeline = "hello_world"
interval = "1s"
otel = false
"""
NODES = {"greeting", "full_greeting"}


def _project(tmp_path: Path, endpoint: str, schedules: str = SCHEDULES, more: str = "") -> Path:
    base = make_project(tmp_path, schedules)
    (base / "flowerd.toml").write_text(f'{more}\n[otel]\nendpoint = "{endpoint}"\n')
    return base


def _check_trace(otlp: OtlpReceiver, row, *, parent: str = "") -> None:
    """The row's trace: its run span (attributes, parent) and one child per node."""
    assert row.trace_id and len(row.trace_id) == 32
    spans = wait_for(
        lambda: len(found := otlp.trace(row.trace_id)) >= 3 and found,
        what=f"the spans of run {row.id}",
    )
    [run] = [s for s in spans if s.name == f"flowerd.run {row.pipeline}"]
    assert run.parent_id == parent
    assert run.attributes["flowerd.run_id"] == row.id
    assert run.attributes["flowerd.trigger"] == row.trigger
    if row.schedule:
        assert run.attributes["flowerd.schedule"] == row.schedule
        assert run.attributes["flowerd.slot"] == row.scheduled_at.isoformat()
    assert run.status_code != 2  # not ERROR
    nodes = [s for s in spans if s is not run]
    assert len(nodes) == 2, (row, spans)
    assert {s.name for s in nodes} == NODES and len(nodes) == len(NODES)
    for node in nodes:
        assert node.parent_id == run.span_id
        assert run.start_ns <= node.start_ns <= node.end_ns <= run.end_ns
    assert {n["name"] for n in row.nodes} == NODES


def test_spans_for_both_drivers_in_threads_and_worker_processes(tmp_path: Path):
    with OtlpReceiver() as otlp:
        base = _project(tmp_path, otlp.endpoint)
        with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:
            url = served.wait_ready()["http"]
            rows = {}
            for schedule in ("async_thread", "sync_thread", "sync_process", "async_process"):
                rows[schedule] = wait_for(
                    lambda s=schedule: rows_where(base, schedule=s, status="success"),
                    timeout_s=40,
                    what=f"a run of {schedule}",
                )[-1]
            quiet = wait_for(lambda: rows_where(base, schedule="quiet", status="success"))[-1]
            # the page and the API of a run: its nodes, its trace
            status, _, body = fetch(f"{url}/api/runs/{rows['sync_process'].id}")
            doc = json.loads(body)
            page = fetch(f"{url}/runs/{rows['sync_process'].id}")[2].decode()
            assert served.stop() == 0
        for row in rows.values():
            _check_trace(otlp, row)
        assert quiet.trace_id is None and not any(
            s.attributes.get("flowerd.schedule") == "quiet" for s in otlp.spans
        )
        assert {n["name"] for n in quiet.nodes} == NODES  # timings with or without a sink
    assert status == 200 and doc["trace_id"] == rows["sync_process"].trace_id
    assert [n["name"] for n in doc["nodes"]] == ["greeting", "full_greeting"]
    assert all(n["status"] == "success" and n["duration_s"] >= 0 for n in doc["nodes"])
    assert page.count('class="tl-bar s-success"') == 2 and doc["trace_id"] in page


def test_a_traceparent_makes_the_run_span_its_child(tmp_path: Path):
    """What a webhook hands the runner (`traceparent=`): the caller's trace, its span."""
    import asyncio

    from daemon.history import History
    from daemon.observe.tracking import Tracking
    from daemon.pipeline import Pipelines, RunConfig
    from daemon.runner.runner import Runner

    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with OtlpReceiver() as otlp:
        base = _project(tmp_path, otlp.endpoint, schedules="")
        settings = load_settings(base)

        async def run():
            tracking = Tracking.from_settings(settings)
            pm = Pipelines(base, node_hooks=tracking.hooks)
            history = await History.open(settings.db_url, state_dir=settings.state_dir)
            runner = Runner(pm=pm, history=history, max_concurrent_runs=1, threads=1)
            runner.tracking = tracking
            try:
                outcome = await runner.run_manual(
                    "hello_world",
                    RunConfig(async_driver=False),
                    traceparent=f"00-{caller_trace}-{caller_span}-01",
                )
                return await history.get_run(outcome.run_id)
            finally:
                runner.close()
                await tracking.close()
                await history.close()

        row = asyncio.run(run())
        assert row.status == "success" and row.trace_id == caller_trace
        _check_trace(otlp, row, parent=caller_span)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_receiver_down_fails_no_run_and_counts(tmp_path: Path):
    base = _project(
        tmp_path,
        f"http://127.0.0.1:{_closed_port()}",
        schedules='[every]\npipeline = "hello_world"\ninterval = "1s"\n',
        more="tracking_timeout_s = 1",
    )
    with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:
        url = served.wait_ready()["http"]
        line = 'flowerd_tracking_errors_total{sink="otel"} '
        text = wait_for(
            lambda: line in (t := urllib.request.urlopen(f"{url}/metrics", timeout=bound(10))
                             .read().decode()) and t,
            timeout_s=30, what="the tracking error counter",
        )  # fmt: skip
        assert float(text.split(line, 1)[1].split()[0]) >= 1
        # three runs: the later ones show that the wait on the sink never delays a slot
        rows = wait_for(
            lambda: len(r := rows_where(base, schedule="every", status="success")) >= 3 and r,
            timeout_s=60, what="three runs",
        )  # fmt: skip
        assert served.stop() == 0
    assert not rows_where(base, status="failed")
    for row in rows:  # the run's own time is not the wait on the sink
        assert row.duration_s < bound(2.0)
        assert row.trace_id is not None
    logs = cli_here(base, "runs", "logs", str(rows[-1].id))
    assert "not reported to otel" in logs.stdout and rows[-1].trace_id in logs.stdout
    # slots start on time although each run before waited on the sink (bounded)
    late = [r.lateness_s for r in rows_where(base, schedule="every") if r.started_at]
    assert late[:-1] and max(late[:-1]) < bound(1.0)  # the first: the daemon's start-up


def test_otel_without_the_extra_says_what_to_install(tmp_path: Path, monkeypatch):
    from daemon.observe import sections

    monkeypatch.setattr(sections, "_installed", lambda module: False)
    base = _project(tmp_path, "http://127.0.0.1:4318", schedules="")
    try:
        load_settings(base)
    except SettingsError as exc:
        assert "pip install 'flowerd[observe]'" in str(exc) and "otel" in str(exc)
    else:
        raise AssertionError("[otel] without opentelemetry installed was accepted")


def test_flowerd_run_reports_its_trace(tmp_path: Path):
    with OtlpReceiver() as otlp:
        base = _project(tmp_path, otlp.endpoint, schedules="")
        began = time.monotonic()
        out = cli(base, "run", "hello_world", "--sync", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert time.monotonic() - began < bound(60)
        spans = otlp.trace(doc["trace_id"])  # exported before the row was final
        assert {s.name for s in spans} == NODES | {"flowerd.run hello_world"}
