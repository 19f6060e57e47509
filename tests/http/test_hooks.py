"""`POST /hooks/{schedule}` against real `flowerd serve` processes on 127.0.0.1: a signed
delivery is one run with its body as `payload`, however often it is sent; the refusals
(404, 401, 403, 413, 400) start nothing; two daemons on one PostgreSQL run a delivery once."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from daemon.incoming.webhooks import MAX_BODY_BYTES, sign
from tests import pg
from tests.contract import bound
from tests.serve import Served, cli_here, make_project, rows_where, runs, wait_for

pytestmark = pytest.mark.timeout(300)

DELIVERIES = 20 if os.environ.get("FLOWERD_SOAK") else 3  # to each of two daemons at once

SECRET = "webhook secret with spaces and ünïcode"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SCHEDULES = """
[deploy]
pipeline = "echo"
on_webhook = { secret = "env:FLOWERD_TEST_HOOK_SECRET" }
final_vars = ["echoed"]

[clock]
pipeline = "echo"
cron = "0 0 1 1 *"
final_vars = ["echoed"]
"""
ECHO = """
def echoed(payload: dict) -> dict:
    return payload
"""


def project(root: Path, flowerd_toml: str = "") -> Path:
    base = make_project(root, SCHEDULES, echo=ECHO)
    if flowerd_toml:
        (base / "flowerd.toml").write_text(flowerd_toml)
    return base


def serve(base: Path, **env: str) -> Served:
    return Served(
        base,
        env={"FLOWERD_HTTP": "127.0.0.1:0", "FLOWERD_TEST_HOOK_SECRET": SECRET, **env},
    )


def post(url: str, body: bytes, headers: dict[str, str] | None = None):
    """(status, JSON answer) -- error statuses included, never raised."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=bound(30)) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def signed(body: bytes, secret: str = SECRET, **headers: str) -> dict[str, str]:
    return {"X-Flowerd-Signature": sign(secret, body), **headers}


def webhook_rows(base: Path) -> list:
    return rows_where(base, schedule="deploy")


def finished(base: Path, run_id: int):
    return next((r for r in runs(base) if r.id == run_id and r.finished_at is not None), None)


# --------------------------------------------------------------------------- one daemon


def test_signed_deliveries_run_once_each_and_refusals_run_nothing(tmp_path: Path):
    base = project(tmp_path)
    with serve(base) as served:
        url = served.wait_ready()["http"]
        hooks = f"{url}/hooks"
        body = json.dumps({"ref": "refs/heads/main", "n": 1}).encode()
        with urllib.request.urlopen(f"{url}/api/schedules", timeout=bound(30)) as answer:
            shown = {row["id"]: row for row in json.loads(answer.read())}
        assert shown["deploy"]["on_webhook"] == {"path": "/hooks/deploy", "secret": "***"}
        assert shown["deploy"]["trigger"] == "on webhook POST /hooks/deploy"
        assert shown["clock"]["on_webhook"] is None

        first_headers = signed(body, **{"Idempotency-Key": "d-1", "traceparent": TRACEPARENT})
        status, answer = post(f"{hooks}/deploy", body, first_headers)
        assert status == 202, answer
        assert set(answer) == {"run_id", "event"}
        assert answer["event"]["kind"] == "webhook"
        assert answer["event"]["key"] == "d-1"
        assert answer["event"]["path"] is None
        first = answer["run_id"]
        run = wait_for(lambda: finished(base, first), what="the webhook's run")
        assert (run.status, run.trigger, run.schedule) == ("success", "webhook", "deploy")
        assert run.result["echoed"] == {"ref": "refs/heads/main", "n": 1}  # the body as payload
        assert run.traceparent == TRACEPARENT  # the caller's trace context, passed through

        for _ in range(4):  # the same key again: the first run, no new one
            again = post(f"{hooks}/deploy", body, signed(body, **{"Idempotency-Key": "d-1"}))
            assert again == (200, {"run_id": first, "event": answer["event"]})

        _refusals(hooks, body)

        # GitHub's headers: X-Hub-Signature-256 and X-GitHub-Delivery
        github = {
            "X-Hub-Signature-256": sign(SECRET, body),
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-GitHub-Event": "push",
        }
        status, gh = post(f"{hooks}/deploy", body, github)
        assert status == 202, gh
        assert post(f"{hooks}/deploy", body, github) == (200, gh)

        # no key: each delivery is an event of its own
        ids = [post(f"{hooks}/deploy", body, signed(body))[1]["run_id"] for _ in range(2)]
        assert len({first, gh["run_id"], *ids}) == 4
        wait_for(
            lambda: all(finished(base, run_id) for run_id in [gh["run_id"], *ids]),
            what="the runs of the other deliveries",
        )
        assert served.stop() == 0
    rows = webhook_rows(base)
    assert sorted(r.id for r in rows) == sorted([first, gh["run_id"], *ids])  # one row each
    assert {r.status for r in rows} == {"success"}
    assert SECRET not in served.log
    listed = cli_here(base, "runs", "--trigger", "webhook", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = {run["id"]: run for run in json.loads(listed.stdout)}
    assert sorted(shown) == sorted(r.id for r in rows)
    assert shown[first]["event"] == answer["event"]
    assert SECRET not in listed.stdout


def _refusals(hooks: str, body: bytes) -> None:
    """Each refusal answers its status (and records nothing: the caller counts rows)."""
    cases = [
        (f"{hooks}/nope", body, {}, 404),  # unknown, even unsigned: checked first
        (f"{hooks}/clock", body, signed(body), 404),  # a schedule that takes no webhooks
        (f"{hooks}/deploy", body, {}, 401),
        (f"{hooks}/deploy", body, signed(body, "not the secret"), 403),
        (f"{hooks}/deploy", body + b" ", signed(body), 403),  # the raw body is signed
        (f"{hooks}/deploy", b"{not json", signed(b"{not json"), 400),
        (f"{hooks}/deploy", b"[1, 2]", signed(b"[1, 2]"), 400),
    ]
    for url, data, headers, expected in cases:
        status, answer = post(url, data, {**headers, "Idempotency-Key": "refused"})
        assert status == expected, (url, headers, answer)
        assert set(answer) == {"error"}
    big = b'{"x": "' + b"a" * MAX_BODY_BYTES + b'"}'
    status, answer = _oversized_post(hooks, big, chunked=False)  # told by Content-Length
    assert status == 413, answer
    assert set(json.loads(answer)) == {"error"}
    status, answer = _oversized_post(hooks, big, chunked=True)  # cut off while reading
    assert status == 413, answer
    assert set(json.loads(answer)) == {"error"}


def _oversized_post(hooks: str, body: bytes, *, chunked: bool) -> tuple[int, bytes]:
    """A body over the limit, sent so that the answer can be read on any machine.

    The daemon answers 413 as soon as it knows and closes the connection. Bytes the client
    sent after that would make the kernel reset the connection, and a reset may discard the
    answer before it is read (a loaded CI machine did exactly that). So the client sends
    only what the daemon reads before it answers: the headers alone when Content-Length
    tells the size, or one chunk just over the limit (no terminator) when chunked, so only
    reading can bound it.
    """
    host, port = hooks.removeprefix("http://").split("/")[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=bound(30))
    try:
        conn.putrequest("POST", "/hooks/deploy")
        conn.putheader("X-Flowerd-Signature", sign(SECRET, body))
        conn.putheader("Content-Type", "application/json")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            cut = body[: MAX_BODY_BYTES + 1]
            conn.send(f"{len(cut):x}\r\n".encode() + cut)
        else:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_serve_refuses_a_secret_it_cannot_read_and_validate_does_not_read_it(tmp_path: Path):
    base = project(tmp_path)
    with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:  # no secret variable
        assert served.wait(60) != 0
    assert (
        "schedules/test.toml: [deploy] field 'on_webhook.secret': environment variable "
        "FLOWERD_TEST_HOOK_SECRET is not set"
    ) in served.log
    assert "Traceback" not in served.log
    assert cli_here(base, "validate").returncode == 0  # the secret is serve's to read

    (base / "flowerd.toml").write_text('http = "off"\n')
    checked = cli_here(base, "validate")
    assert checked.returncode == 1
    assert (
        "schedules/test.toml: [deploy] field 'on_webhook': webhooks need the HTTP server, "
        "and the setting 'http' is \"off\""
    ) in checked.stderr


def test_a_secret_from_a_file(tmp_path: Path):
    base = project(tmp_path)
    (base / "secret").write_text("from a file\n")
    text = (base / "schedules" / "test.toml").read_text()
    (base / "schedules" / "test.toml").write_text(
        text.replace("env:FLOWERD_TEST_HOOK_SECRET", f"file:{base / 'secret'}")
    )
    with serve(base) as served:
        hooks = f"{served.wait_ready()['http']}/hooks"
        body = b'{"a": 1}'
        assert post(f"{hooks}/deploy", body, signed(body))[0] == 403  # not the env's value
        status, answer = post(f"{hooks}/deploy", body, signed(body, "from a file"))
        assert status == 202, answer
        assert wait_for(lambda: finished(base, answer["run_id"])).status == "success"


# --------------------------------------------------------------------------- two daemons


@pg.needs_postgres
def test_two_daemons_on_one_postgres_run_a_delivery_once(tmp_path: Path, pg_url: str):
    toml = f'database_url = "{pg_url}"\nlease_s = 3\n'
    bases = [project(tmp_path / name, toml) for name in ("a", "b")]
    with serve(bases[0]) as one, serve(bases[1]) as two:
        urls = [f"{s.wait_ready()['http']}/hooks/deploy" for s in (one, two)]
        deliveries = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for n in range(DELIVERIES):
                body = json.dumps({"n": n}).encode()
                headers = signed(body, **{"X-GitHub-Delivery": f"delivery-{n}"})
                both = [pool.submit(post, url, body, headers) for url in urls]
                deliveries.append([f.result() for f in both])
        for n, answers in enumerate(deliveries):
            # one daemon wrote the event's row (202), the other found it (200)
            assert sorted(status for status, _ in answers) == [200, 202], (n, answers)
            assert len({a["run_id"] for _, a in answers}) == 1, (n, answers)
        wait_for(
            lambda: len([r for r in webhook_rows(bases[0]) if r.finished_at]) >= DELIVERIES,
            what="a webhook run per delivery",
        )
        assert one.stop() == 0 and two.stop() == 0
    rows = webhook_rows(bases[0])
    assert len(rows) == DELIVERIES  # one row per delivery: the key decided, not the daemon
    assert sorted(r.result["echoed"]["n"] for r in rows) == list(range(DELIVERIES))
    assert {r.status for r in rows} == {"success"}


pg_url = pg.pg_url  # a fresh database per test
