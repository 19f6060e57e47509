"""The HTTP server of `flowerd serve`: metrics, health, the JSON API and its token rules,
against real daemons on 127.0.0.1 (the page in a real browser: tests/http/test_page.py)."""

from __future__ import annotations

import json
import re
import signal
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.errors import SettingsError
from daemon.http.address import is_loopback, parse_address
from daemon.http.metrics import Metrics
from daemon.runner.events import RunEvent
from tests.contract import bound
from tests.serve import Served, cli, cli_here, make_project, rows_where, wait_for

pytestmark = pytest.mark.timeout(300)

TOKEN = "correct horse battery staple"

BOOM = """
def kaput(x: int = 1) -> int:
    raise ValueError("boom: failed on purpose")
"""

SLEEPY = """
import asyncio

async def slept(seconds: float = 30.0) -> float:
    await asyncio.sleep(seconds)
    return seconds
"""


# --------------------------------------------------------------------------- helpers


def fetch(
    url: str, *, method: str = "GET", token: str | None = None, body: dict | bytes | None = None
):
    """(status, headers, body bytes) -- error statuses included, never raised; a dict
    body is sent as JSON, bytes as they are."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=bound(10)) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def get_json(url: str):
    status, _, body = fetch(url)
    assert status == 200, body
    return json.loads(body)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}, parsed by prometheus_client."""
    status, headers, body = fetch(f"{url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def soon(seconds: float) -> str:
    """At least `seconds` from now, in whole seconds."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds + 1)
    return moment.replace(microsecond=0).isoformat()


def project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path,
        """
        [daily]
        pipeline = "hello_world"
        interval = "1d"

        [slow]
        pipeline = "sleepy"
        interval = "1d"
        final_vars = ["slept"]
        """,
        boom=BOOM,
        sleepy=SLEEPY,
    )


def add_one_shots(served: Served, base: Path, at: str) -> None:
    """Two slots a moment from now, added by a reload once the daemon is up (a slot that
    passes while it starts would be neither run nor recorded: no earlier slot to catch
    up from)."""
    (base / "schedules" / "once.toml").write_text(
        f'[ok_once]\npipeline = "hello_world"\nat = "{at}"\nfinal_vars = ["full_greeting"]\n'
        f'[bad_once]\npipeline = "boom"\nat = "{at}"\nfinal_vars = ["kaput"]\n'
    )
    assert served.ask("reload")["ok"]


def serve_http(base: Path, **env: str) -> Served:
    return Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0", **env})


# --------------------------------------------------------------------------- end to end


def test_metrics_api_and_tokens_of_a_real_daemon(tmp_path: Path):
    base = project(tmp_path)
    with serve_http(base, FLOWERD_HTTP_TOKEN=TOKEN) as served:
        status = served.wait_ready()
        url = status["http"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        add_one_shots(served, base, soon(4))
        wait_for(
            lambda: (
                rows_where(base, schedule="ok_once", status="success")
                and rows_where(base, schedule="bad_once", status="failed")
            ),
            timeout_s=30,
            what="the two one-shot slots",
        )
        ok = rows_where(base, schedule="ok_once")[0]
        _check_metrics(url, ok)
        _check_api_equals_cli(base, url, served)
        _check_tokens(url, base)
        assert fetch(f"{url}/healthz")[:3:2] == (200, b"ok\n")
        assert served.stop() == 0
    # a restart knows the last success from the history alone
    with serve_http(base, FLOWERD_SHUTDOWN_GRACE="1") as served:  # and no http_token
        url = served.wait_ready()["http"]
        samples = wait_for(  # seeded at start-up: a loaded machine may scrape before it
            lambda: (s := scrape(url)) and s.get((LAST, (("schedule", "ok_once"),))) and s,
            what="the seeded last success",
        )
        assert samples[(LAST, (("schedule", "ok_once"),))] == pytest.approx(
            ok.finished_at.timestamp(), abs=1e-3
        )
        status, _, body = fetch(f"{url}/api/schedules/daily/pause", method="POST", token=TOKEN)
        assert status == 403 and "no http_token" in json.loads(body)["error"]
        page = fetch(url)[2].decode()  # read-only: it says how to set a token, no dead buttons
        assert 'id="token"' not in page and "set <code>http_token</code> in flowerd.toml" in page
        assert page.count("<button data-action=") == page.count(" disabled title=") > 0
        _check_healthz_while_draining(served, url)


LAST = "flowerd_schedule_last_success_timestamp_seconds"


def _check_metrics(url: str, ok) -> None:  # noqa: ANN001
    s = scrape(url)
    runs = "flowerd_runs_total"
    assert (
        s[(runs, (("pipeline", "hello_world"), ("schedule", "ok_once"), ("status", "success")))]
        == 1
    )
    assert s[(runs, (("pipeline", "boom"), ("schedule", "bad_once"), ("status", "failed")))] == 1
    assert s[("flowerd_run_duration_seconds_count", (("schedule", "ok_once"),))] == 1
    assert s[("flowerd_run_duration_seconds_sum", (("schedule", "ok_once"),))] == pytest.approx(
        ok.duration_s, abs=1e-3
    )
    assert s[("flowerd_fire_lateness_seconds_count", ())] == 2
    assert s[("flowerd_fire_lateness_seconds_bucket", (("le", "60.0"),))] == 2
    assert s[(LAST, (("schedule", "ok_once"),))] == pytest.approx(ok.finished_at.timestamp())
    # a sample for every schedule from the start: 0 until its first success, so an alert
    # "no success in N hours" fires for one that never succeeded
    assert s[(LAST, (("schedule", "bad_once"),))] == 0
    assert s[(LAST, (("schedule", "daily"),))] == 0
    assert s[("flowerd_runs_running", ())] == 0
    nxt = get_json(f"{url}/api/schedules?next=1")
    daily = next(row for row in nxt if row["id"] == "daily")
    fire = datetime.fromisoformat(daily["next"][0]).timestamp()
    assert s[("flowerd_schedule_next_fire_timestamp_seconds", (("schedule", "daily"),))] == fire
    assert ("flowerd_schedule_next_fire_timestamp_seconds", (("schedule", "ok_once"),)) not in s
    assert 0 <= s[("flowerd_event_loop_lag_seconds", ())] < 1
    assert s[("flowerd_history_write_errors_total", ())] == 0
    families = {name for name, _ in s}
    assert "flowerd_notifications_total" not in families  # defined, none sent yet
    status, _, body = fetch(f"{url}/metrics")
    assert b"# TYPE flowerd_notifications_total counter" in body


def _check_api_equals_cli(base: Path, url: str, served: Served) -> None:
    for query, args in (
        ("", []),
        ("?schedule=bad_once", ["--schedule", "bad_once"]),
        ("?status=success&limit=1", ["--status", "success", "--limit", "1"]),
        (
            "?pipeline=boom&trigger=schedule&since=1h",
            ["--pipeline", "boom", "--trigger", "schedule", "--since", "1h"],
        ),
    ):
        done = cli_here(base, "runs", *args, "--json")
        assert done.returncode == 0, done.stderr
        assert get_json(f"{url}/api/runs{query}") == json.loads(done.stdout), query
    failed = rows_where(base, schedule="bad_once")[0]
    shown = json.loads(cli_here(base, "runs", "show", str(failed.id), "--json").stdout)
    assert get_json(f"{url}/api/runs/{failed.id}") == shown
    assert "ValueError: boom" in shown["error"]["traceback"]
    when = "2026-12-24T10:00:00+00:00"
    listed = json.loads(cli_here(base, "schedules", "--json", "--next", "2", "--from", when).stdout)
    assert get_json(f"{url}/api/schedules?next=2&from={when.replace('+', '%2B')}") == listed
    api = get_json(f"{url}/api/status")
    control = served.ask("status")
    control.pop("ok", None)
    assert api.keys() == control.keys()
    for key in ("pid", "daemon", "http", "health", "schedules", "database"):
        assert api[key] == control[key], key
    for bad in ("limit=-1", "limit=x", "since=yesterday", "status=exploded", "colour=red"):
        status, _, body = fetch(f"{url}/api/runs?{bad}")
        assert status == 400 and json.loads(body)["error"], bad
    status, _, body = fetch(f"{url}/api/runs/999999")
    assert status == 404 and "999999" in json.loads(body)["error"]
    status, _, body = fetch(f"{url}/api/runs/{failed.id}/logs")
    assert status in (200, 404) and json.loads(body) is not None


def _check_tokens(url: str, base: Path) -> None:
    trigger = f"{url}/api/schedules/daily/trigger"
    status, headers, _ = fetch(trigger, method="POST")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert fetch(trigger, method="POST", token="wrong")[0] == 403
    assert fetch(trigger, method="POST", token=TOKEN[:-1])[0] == 403
    status, _, body = fetch(trigger, method="POST", token=TOKEN, body={"inputs": {"name": "API"}})
    assert status == 200, body
    run_id = json.loads(body)["run_id"]
    run = wait_for(
        lambda: [r for r in rows_where(base, id=run_id) if r.status == "success"],
        what=f"triggered run {run_id}",
    )[0]
    assert run.trigger == "manual" and run.schedule == "daily"
    assert run.inputs == {"name": "API"} and "Hello, API!" in run.result_summary
    for bad in ({"inputs": [1]}, {"input": {}}, {"inputs": {"name": "x" * 70_000}}):
        assert fetch(trigger, method="POST", token=TOKEN, body=bad)[0] == 400
    assert fetch(f"{url}/api/schedules/nope/trigger", method="POST", token=TOKEN)[0] == 404
    assert fetch(f"{url}/api/schedules/daily/explode", method="POST", token=TOKEN)[0] == 404
    assert fetch(f"{url}/api/schedules/daily/pause", method="POST", token=TOKEN)[0] == 200
    assert [r["paused"] for r in get_json(f"{url}/api/schedules") if r["id"] == "daily"] == [True]
    assert fetch(f"{url}/api/schedules/daily/resume", method="POST", token=TOKEN)[0] == 200
    assert fetch(f"{url}/api/schedules/daily/pause")[0] == 405  # changes are POSTs only
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


def _check_healthz_while_draining(served: Served, url: str) -> None:
    """A real condition: SIGTERM stops the scheduler while a run drains; until the
    server closes, /healthz says so."""
    answer = served.ask("trigger", schedule="slow")
    assert answer["ok"] and answer["run_id"]
    wait_for(lambda: served.ask("status")["running"], what="the slow run to start")
    served.signal(signal.SIGTERM)
    status, _, body = wait_for(
        lambda: (found := fetch(f"{url}/healthz"))[0] == 503 and found, what="503"
    )
    assert b"scheduler: stopped" in body
    assert served.wait() == 0


def test_one_timezone_rule_for_people_and_utc_for_machines(tmp_path: Path):
    """Times for people -- runs show, runs logs, the page, the daemon's log lines -- are in
    the schedule's timezone (else the `timezone` setting), ISO-8601 with the offset;
    JSON is UTC."""
    base = make_project(
        tmp_path,
        '[kolkata]\npipeline = "hello_world"\ninterval = "1d"\ntimezone = "Asia/Kolkata"\n'
        'final_vars = ["full_greeting"]\n',
    )
    with serve_http(base, FLOWERD_TIMEZONE="America/Sao_Paulo") as served:
        url = served.wait_ready()["http"]
        run_id = served.ask("trigger", schedule="kolkata")["run_id"]
        wait_for(lambda: rows_where(base, schedule="kolkata", status="success"), what="the run")
        page = fetch(f"{url}/runs/{run_id}")[2].decode()
        footer = fetch(url)[2].decode()
        assert served.stop() == 0
    shown = cli_here(base, "runs", "show", str(run_id)).stdout
    logged = cli_here(base, "runs", "logs", str(run_id)).stdout
    as_json = json.loads(cli_here(base, "runs", "show", str(run_id), "--json").stdout)
    assert as_json["started_at"].endswith("+00:00")
    started = datetime.fromisoformat(as_json["started_at"])
    assert started.astimezone(ZoneInfo("Asia/Kolkata")).isoformat() in shown
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+05:30 INFO", logged), logged
    assert started.astimezone(ZoneInfo("Asia/Kolkata")).isoformat() in page
    assert re.search(r"T\d\d:\d\d:\d\d\.\d{3}\+05:30 INFO", page)
    assert re.search(r"<footer>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-03:00", footer)
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-03:00 INFO", served.log, re.M)


def test_a_busy_port_leaves_the_daemon_firing_without_http(tmp_path: Path):
    base = make_project(tmp_path, '[tick]\npipeline = "hello_world"\ninterval = "1s"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with Served(base, env={"FLOWERD_HTTP": f"127.0.0.1:{port}"}) as served:
            status = served.wait_ready()
            assert status["http"] is None
            said = f"could not listen on 127.0.0.1:{port}: address in use"
            assert status["health"]["http"].startswith(said)  # not a log line only
            assert said in cli_here(base, "status").stdout
            wait_for(lambda: rows_where(base, schedule="tick", status="success"), what="a run")
            assert f"cannot listen on 127.0.0.1:{port}" in served.log
            assert served.stop() == 0


def test_serve_refuses_a_bad_http_value(tmp_path: Path):
    base = make_project(tmp_path)
    done = cli(base, "serve", "--http", "localhost")
    assert done.returncode == 2
    assert "'localhost' is not HOST:PORT" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:80", ("localhost", 80)),
        ("off", None),
        (" OFF ", None),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8787", ":8787", "host:", "host:99999", "host:http", ""])
def test_parse_address_refuses(text):
    with pytest.raises(SettingsError, match="HOST:PORT"):
        parse_address(text)


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_run_events_move_the_counters():
    metrics = Metrics()
    slot = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    started = slot + timedelta(milliseconds=3)
    finished = started + timedelta(seconds=2)
    common = dict(run_id=1, schedule=None, pipeline="p", trigger="schedule", scheduled_at=slot)
    metrics.on_run_event(RunEvent(kind="started", status="running", started_at=started, **common))
    metrics.on_run_event(
        RunEvent(
            kind="finished", status="success", started_at=started, finished_at=finished, **common
        )
    )
    metrics.count_notification("error")
    text = metrics.render().decode()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        found[("flowerd_runs_total", (("pipeline", "p"), ("schedule", ""), ("status", "success")))]
        == 1
    )
    assert found[("flowerd_fire_lateness_seconds_bucket", (("le", "0.005"),))] == 1
    assert found[("flowerd_fire_lateness_seconds_bucket", (("le", "0.002"),))] == 0
    assert found[("flowerd_run_duration_seconds_bucket", (("le", "5.0"), ("schedule", "")))] == 1
    assert found[("flowerd_notifications_total", (("result", "error"),))] == 1
    assert metrics.last_success == {}  # no schedule: nothing to alert on


def test_the_unit_says_how_to_reach_the_page(tmp_path: Path):
    base = make_project(tmp_path)
    unit = cli(base, "service", "print", "--run-as", "nobody").stdout
    assert "ssh -N -L 8787:127.0.0.1:8787" in unit and "/metrics" in unit
    assert "need http_token" in unit
    off = cli(base, "service", "print", "--run-as", "nobody", env={"FLOWERD_HTTP": "off"}).stdout
    assert "HTTP (metrics, API, page) is off" in off


async def test_cells_follow_run_events_over_what_the_history_said(db_url: str):
    from daemon.history import History
    from daemon.http.cells import RecentRuns
    from daemon.schedule import Schedule

    slot = datetime(2026, 12, 1, tzinfo=UTC)
    async with History.open(db_url) as history:
        for i in range(4):
            await history.record_slot(
                schedule="s", pipeline="p", scheduled_at=slot + timedelta(minutes=i),
                status="missed",
            )  # fmt: skip
        recent = RecentRuns(history, per_schedule=3)
        first = await recent.of(["s", "never_ran"])
        assert [c.status for c in first["s"]] == ["missed"] * 3 and first["never_ran"] == []
        newest = slot + timedelta(minutes=9)
        for status in ("running", "failed"):
            recent.on_run_event(
                RunEvent(
                    kind="finished",
                    run_id=99,
                    schedule=None,
                    pipeline="p",
                    trigger="schedule",
                    status=status,
                    scheduled_at=newest,
                )
            )  # no schedule id: not a cell
        event = dict(run_id=99, pipeline="p", trigger="schedule", scheduled_at=newest)
        schedule = Schedule(id="s", file=Path("s.toml"), pipeline="p", interval_s=60)
        recent.on_run_event(RunEvent(kind="started", schedule=schedule, status="running", **event))
        assert [c.status for c in (await recent.of(["s"]))["s"]] == ["missed", "missed", "running"]
        recent.on_run_event(RunEvent(kind="finished", schedule=schedule, status="failed", **event))
        cells = (await recent.of(["s"]))["s"]
        assert [(c.run_id, c.status) for c in cells][-1] == (99, "failed") and len(cells) == 3
