"""Operating it as a team (issue 26): token roles against every act over HTTP, GETs under
`http_read_auth`, and the audit log an act leaves -- from HTTP (the token's name) and from
the CLI as another Unix user (the control socket's peer credentials). Real daemons, real
HTTP on 127.0.0.1, a real Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.contract import FLOWERD, bound
from tests.http.test_server import fetch, get_json
from tests.serve import Served, cli, cli_here, make_project, rows_where, wait_for

pytestmark = pytest.mark.timeout(300)

SECRETS = {"viewer": "v-secret-1111", "operator": "o-secret-2222", "admin": "a-secret-3333"}
OLD_TOKEN = "old-admin-secret-4444"

SCHEDULES = """
[daily]
pipeline = "hello_world"
interval = "1d"
final_vars = ["full_greeting"]

[other]
pipeline = "hello_world"
interval = "1d"
final_vars = ["full_greeting"]
"""


def team_project(base: Path, *, read_auth: bool = False) -> Path:
    make_project(base, SCHEDULES)
    tokens = ", ".join(
        f'"{role}_user" = {{ token = "env:{role.upper()}_TOKEN", role = "{role}" }}'
        for role in SECRETS
    )
    (base / "flowerd.toml").write_text(
        f'http = "127.0.0.1:0"\nhttp_token = "{OLD_TOKEN}"\nhttp_tokens = {{ {tokens} }}\n'
        f"http_read_auth = {'true' if read_auth else 'false'}\n"
    )
    return base


def team_env() -> dict[str, str]:
    return {f"{role.upper()}_TOKEN": secret for role, secret in SECRETS.items()}


def post(url: str, token: str | None = None, body: dict | None = None):
    status, _, answer = fetch(url, method="POST", token=token, body=body)
    return status, json.loads(answer) if answer else None


def check_roles(url: str, path: str, needed: str, body: dict | None = None) -> dict:
    """No token: 401; a wrong one: 403; each role below `needed`: 403 naming it; then
    `needed` itself: 200 (its answer is returned)."""
    status, answer = post(url + path, body=body)
    assert status == 401, (path, answer)
    assert post(url + path, "not-a-token", body)[0] == 403
    for role in ("viewer", "operator")[: ("viewer", "operator", "admin").index(needed)]:
        status, answer = post(url + path, SECRETS[role], body)
        assert status == 403 and f"needs the {needed} role" in answer["error"], (path, role)
    status, answer = post(url + path, SECRETS[needed], body)
    assert status == 200, (path, answer)
    return answer


def audit_rows(base: Path) -> list[dict]:
    done = cli_here(base, "audit", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_each_role_against_each_act_and_gets_under_read_auth(tmp_path: Path):
    base = team_project(tmp_path / "p", read_auth=True)
    with Served(base, env=team_env()) as served:
        url = served.wait_ready()["http"]
        _check_reads(url)
        run_id = check_roles(url, "/api/schedules/daily/trigger", "operator")["run_id"]
        wait_for(lambda: rows_where(base, id=run_id, status="success"), what="the trigger")
        check_roles(url, "/api/schedules/daily/pause", "operator")
        check_roles(url, "/api/schedules/daily/resume", "operator")
        days = [(datetime.now(UTC) - timedelta(days=n)).date().isoformat() for n in (3, 2)]
        span = {"from": days[0], "to": days[1]}
        check_roles(url, "/api/schedules/daily/backfill", "operator", span)
        check_roles(url, f"/api/runs/{run_id}/rerun", "operator")
        check_roles(url, "/api/reload", "admin")
        assert post(f"{url}/api/reload", OLD_TOKEN)[0] == 200  # the old http_token: admin
        assert post(f"{url}/api/schedules/nope/pause", SECRETS["admin"])[0] == 404  # no act
        check_roles(url, "/api/stop", "admin")
        assert served.wait(30) == 0
    rows = audit_rows(base)
    acts = [(r["action"], r["actor"], r["via"], r["schedule"]) for r in reversed(rows)]
    assert acts == [
        ("trigger", "operator_user", "http", "daily"),
        ("pause", "operator_user", "http", "daily"),
        ("resume", "operator_user", "http", "daily"),
        ("backfill", "operator_user", "http", "daily"),
        ("rerun", "operator_user", "http", None),
        ("reload", "admin_user", "http", None),
        ("reload", "http_token", "http", None),
        ("stop", "admin_user", "http", None),
    ]  # refused requests (401 / 403 / 404) left no row
    assert rows[3]["run_id"] == run_id  # the rerun names the run it repeats
    assert all(r["detail"].startswith("client 127.0.0.1:") for r in rows)
    assert f"from {days[0]}T00:00:00+00:00 to {days[1]}T23:59:59" in rows[4]["detail"]
    shown = json.dumps(rows)
    assert not any(secret in shown for secret in [*SECRETS.values(), OLD_TOKEN])


def _check_reads(url: str) -> None:
    for path in ("/api/runs", "/api/status", "/api/audit", "/", "/metrics"):
        assert fetch(url + path)[0] == 401, path
        assert fetch(url + path, token="not-a-token")[0] == 403, path
        assert fetch(url + path, token=SECRETS["viewer"])[0] == 200, path
    assert fetch(f"{url}/healthz")[0] == 200  # a probe says ok or why not: no token
    request_with_cookie = subprocess.run(  # the page's way: the cookie its token form sets
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-b",
         f"flowerd_token={SECRETS['viewer']}", f"{url}/runs"],
        capture_output=True, text=True, timeout=bound(10),
    )  # fmt: skip
    if shutil.which("curl"):
        assert request_with_cookie.stdout == "200"


def other_user() -> tuple[list[str], str] | None:
    """A command prefix that runs as another Unix user, and that user's name; None
    when this test is not root (it cannot become anyone) or no tool does it."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"], "nobody"


def test_a_pause_from_the_cli_and_one_over_http_leave_rows_naming_who(tmp_path: Path):
    as_other = other_user()
    if as_other is None:
        pytest.skip("needs root and setpriv to run the CLI as a second Unix user")
    prefix, name = as_other
    # a project every user may read (pytest's tmp dirs are root's alone)
    shared = Path(tempfile.mkdtemp(prefix="flowerd-team-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        base = team_project(shared / "p")
        os.chmod(base, 0o755)
        with Served(base, env=team_env()) as served:
            url = served.wait_ready()["http"]
            socket_path = served.settings.control_socket
            socket_path.parent.chmod(0o711)  # the admin lets a colleague talk to the daemon
            socket_path.chmod(0o666)
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWERD_")}
            done = subprocess.run(
                [*prefix, FLOWERD, "--base-dir", str(base), "pause", "daily"],
                capture_output=True, text=True, timeout=bound(60),
                env={**env, "HOME": "/tmp"},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            status, answer = post(f"{url}/api/schedules/other/pause", SECRETS["operator"])
            assert status == 200, answer
            from_api = get_json_with(url, "/api/audit", SECRETS["viewer"])
            assert from_api == audit_rows(base)
            page = fetch(f"{url}/", token=SECRETS["viewer"])[2].decode()
            assert "Who did what" in page and "operator_user" in page and name in page
            refused = cli(base, "rerun", "999999")  # no such run: no act, no row
            assert refused.returncode == 1, refused.stderr
            assert cli_here(base, "trigger", "other", "--input", "name=env:HOME").returncode == 0
            assert cli(base, "stop").returncode == 0  # as root: the daemon's own user
            assert served.wait(30) == 0
        rows = audit_rows(base)
        assert [(r["actor"], r["via"], r["action"], r["schedule"]) for r in rows] == [
            ("root", "cli", "stop", None),
            ("root", "cli", "trigger", "other"),
            ("operator_user", "http", "pause", "other"),
            (name, "cli", "pause", "daily"),
        ]
        assert rows[1]["detail"] == "inputs name"  # the names of its inputs, never values
        assert rows[3]["detail"] is None and rows[2]["detail"].startswith("client 127.0.0.1:")
        [triggered] = rows_where(base, schedule="other", trigger="manual")
        assert triggered.inputs["name"] == "literal:env:HOME"  # never read: given literally
        assert "Hello, env:HOME" in triggered.result_summary
        assert not any(secret in json.dumps(rows) for secret in SECRETS.values())
        text = cli_here(base, "audit").stdout
        assert f"{name}" in text and "operator_user" in text and "pause daily" in text
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def get_json_with(url: str, path: str, token: str):
    status, _, body = fetch(url + path, token=token)
    assert status == 200, body
    return json.loads(body)


__all__ = ["get_json"]


SEEN = """
from pathlib import Path


def seen(alpha: str, beta: str, out_dir: str) -> str:
    Path(out_dir, "seen.txt").write_text(f"{alpha}\\n{beta}\\n")
    print(f"alpha={alpha} beta={beta}")
    return f"{alpha}+{beta}"
"""

ALPHA, BETA = "alpha-from-env-5150", "beta-from-file-8086"


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_env_and_file_inputs_reach_the_pipeline_and_show_as_stars(tmp_path: Path, isolation):
    secret_file = tmp_path / "credentials" / "beta"
    secret_file.parent.mkdir()
    secret_file.write_text(BETA + "\n")  # as systemd-creds and echo write them
    out = tmp_path / "out"
    out.mkdir()
    base = make_project(
        tmp_path / "p",
        f"""
        [secretive]
        pipeline = "seen"
        interval = "1d"
        async_driver = false
        isolation = "{isolation}"
        final_vars = ["seen"]
        inputs = {{ alpha = "env:TEAM_ALPHA", beta = "file:{secret_file}", out_dir = "{out}" }}
        """,
        seen=SEEN,
    )
    env = {"FLOWERD_HTTP": "127.0.0.1:0", "TEAM_ALPHA": ALPHA}
    with Served(base, env=env) as served:
        url = served.wait_ready()["http"]
        run_id = served.ask("trigger", schedule="secretive")["run_id"]
        wait_for(lambda: rows_where(base, id=run_id, status="success"), what="the run")
        page = fetch(f"{url}/runs/{run_id}")[2].decode()
        api = fetch(f"{url}/api/runs/{run_id}")[2].decode()
        assert served.stop() == 0
    assert (out / "seen.txt").read_text() == f"{ALPHA}\n{BETA}\n"  # the real values ran
    shown = json.loads(cli_here(base, "runs", "show", str(run_id), "--json").stdout)
    assert shown["inputs"]["alpha"] == "***" and shown["inputs"]["beta"] == "***"
    assert shown["result"] == {"seen": "***+***"}
    logs = cli_here(base, "runs", "logs", str(run_id)).stdout
    assert "alpha=*** beta=***" in logs
    assert "alpha=***" in page and "***+***" in page
    for where, text in {
        "runs show --json": json.dumps(shown),
        "runs logs": logs,
        "runs logs --json": cli_here(base, "runs", "logs", str(run_id), "--json").stdout,
        "the page": page,
        "the API": api,
        "the daemon's log": served.log,
        "runs --json": cli_here(base, "runs", "--json").stdout,
    }.items():
        assert ALPHA not in text and BETA not in text, where
