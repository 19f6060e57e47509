"""The Hamilton UI sink against a real `hamilton ui` (SQLite) and a real `flowerd serve`:
scheduled runs appear in the project with flowerd's tags and their nodes, under both
drivers and in a worker process (`isolation = "process"`), and the run's `links` open
them; then the UI is stopped and the runs still succeed on time, their logs say what was
not reported, the counter moves. A run whose end the UI did not take in time (hung then)
shows its terminal state there once the UI answers again."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from datetime import UTC, datetime

import pytest
import requests

from daemon.errors import SettingsError
from daemon.settings import load_settings
from tests.contract import bound
from tests.observe.hamilton_ui import USER, HamiltonUI, free_port
from tests.serve import Served, cli, cli_here, make_project, runs, wait_for

SCHEDULES = """
[greet]
pipeline = "hello_world"
interval = 1
final_vars = ["full_greeting"]
misfire_grace = 30

[greet_sync]
pipeline = "hello_world"
interval = 1
final_vars = ["full_greeting"]
async_driver = false
misfire_grace = 30

[greet_proc]
pipeline = "hello_world"
interval = 1
final_vars = ["full_greeting"]
isolation = "process"
misfire_grace = 30

[quiet]
pipeline = "hello_world"
interval = 1
final_vars = ["full_greeting"]
hamilton_ui = false
misfire_grace = 30
"""


def _settings(ui: HamiltonUI, timeout_s: float = 5) -> str:
    return (
        f"tracking_timeout_s = {timeout_s}\n"
        f'[hamilton_ui]\nurl = "{ui.url}"\nproject_id = {ui.project_id}\nusername = "{USER}"\n'
    )


def _linked(base, schedule: str):
    done = [r for r in runs(base, schedule=schedule) if r.status == "success" and r.links]
    return done[-1] if done else None


def _metric(url: str, line: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=bound(30)) as response:
        text = response.read().decode()
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_runs_appear_in_the_ui_then_go_on_when_it_stops(tmp_path):
    base = make_project(tmp_path / "project", SCHEDULES)
    with HamiltonUI(tmp_path / "ui") as ui:
        ui.make_project()
        (base / "flowerd.toml").write_text(_settings(ui))
        with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:
            http = served.wait_ready()["http"]
            rows = {
                name: wait_for(lambda n=name: _linked(base, n), what=f"a linked run of {name}")
                for name in ("greet", "greet_sync", "greet_proc")
            }
            for row in rows.values():
                _assert_in_ui(ui, row)
            quiet = wait_for(lambda: [r for r in runs(base, schedule="quiet") if r.finished_at])
            assert not quiet[0].links
            _assert_shown(base, http, rows["greet"])

            ui.stop()  # -- the UI goes away; the runs go on
            stopped_at = max(r.id for r in runs(base))
            line = 'flowerd_tracking_errors_total{sink="hamilton_ui"}'
            wait_for(lambda: _metric(http, line) >= 2, what="the tracking error counter")
            after = wait_for(
                lambda: [r for r in runs(base, schedule="greet") if r.id > stopped_at
                         and r.finished_at and r.status == "success"][-3:] if len(
                    [r for r in runs(base, schedule="greet") if r.id > stopped_at
                     and r.finished_at]) >= 3 else None,
                what="three runs after the UI stopped",
            )  # fmt: skip
            assert served.stop() == 0
    for row in after:
        assert row.status == "success" and not row.links
        assert row.lateness_s < 1.0, row  # on time: the UI's absence holds no run up
    logged = cli_here(base, "runs", "logs", str(after[-1].id)).stdout
    assert "not reported to hamilton_ui" in logged and "cannot connect" in logged, logged


GATED = """
import time
from pathlib import Path


def gate(gate_file: str) -> str:
    deadline = time.monotonic() + 120
    while not Path(gate_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "opened"


def after(gate: str) -> str:
    return gate + "!"


def broken(after: str, fail: bool = False) -> str:
    if fail:
        raise ValueError("broken on purpose")
    return after
"""


def _ui_run(ui: HamiltonUI, schedule: str):
    found = [r for r in ui.runs() if (r.get("tags") or {}).get("flowerd_schedule") == schedule]
    return found[0] if found else None


def _ended_in_ui(ui: HamiltonUI, schedule: str, nodes: int):
    """The schedule's UI run once it ended there with `nodes` nodes ended (a request the
    daemon gave up waiting for may still land after a later one)."""
    found = _ui_run(ui, schedule)
    if found is None:
        return None
    return _done(ui.get(f"/dag_runs/{found['id']}?attr=error")[0], nodes)


def _done(dag_run: dict, nodes: int):
    ended = [n for n in dag_run["node_runs"] if n["status"] != "RUNNING"]
    return dag_run if dag_run["run_status"] != "RUNNING" and len(ended) == nodes else None


@pytest.mark.slow  # a UI of its own: ~15 s idle, a minute at load 20 (make soak runs it)
def test_a_process_run_whose_end_the_ui_missed_ends_there_later(tmp_path):
    """A process run registered in the UI; the UI hangs (SIGSTOP) before the run ends: the
    run ends on time, its log says its end is sent later; the UI answers again and shows
    the run SUCCESS with its nodes, not RUNNING for good. (First, a process run whose node
    raises shows FAILURE there, the node's error in it.)"""
    gate_file = tmp_path / "open"
    schedules = "".join(
        f'[{name}]\npipeline = "gated"\ncron = "0 0 1 1 *"\nisolation = "process"\n'
        f'async_driver = false\nfinal_vars = ["{final}"]\n'
        f'inputs = {{ gate_file = "{gate}", fail = {fail} }}\n'
        for name, final, gate, fail in (
            ("gated", "after", gate_file, "false"),
            ("broken", "broken", tmp_path, "true"),  # open from the start
        )
    )
    base = make_project(tmp_path / "project", schedules, gated=GATED)
    with HamiltonUI(tmp_path / "ui") as ui:
        ui.make_project()
        (base / "flowerd.toml").write_text('http = "off"\n' + _settings(ui, timeout_s=1))
        with Served(base) as served:
            served.wait_ready()
            assert cli(base, "trigger", "broken").returncode == 0
            failed = wait_for(lambda: _ended_in_ui(ui, "broken", 3), what="the failed run")
            assert cli(base, "trigger", "gated").returncode == 0
            dag_run = wait_for(lambda: _ui_run(ui, "gated"), what="the run in the UI")
            assert dag_run["run_status"] == "RUNNING"
            ui.hang()
            gate_file.touch()
            row = wait_for(lambda: [r for r in runs(base, schedule="gated")
                                    if r.started_at and r.finished_at],
                           what="the run's end")[0]  # fmt: skip
            ui.resume()
            assert row.status == "success" and row.links, row
            ended = wait_for(lambda: _ended_in_ui(ui, "gated", 2), timeout_s=30,
                             what="the run's end in the UI")  # fmt: skip
            assert served.stop() == 0
    assert ended["run_status"] == "SUCCESS", ended
    nodes = {node["node_name"]: node["status"] for node in ended["node_runs"]}
    assert nodes == {"gate": "SUCCESS", "after": "SUCCESS"}, nodes
    logged = cli(base, "runs", "logs", str(row.id)).stdout
    assert "not reported to hamilton_ui" in logged and "its end is sent later" in logged, logged
    assert "was taken by the Hamilton UI on a later try" in served.log_path.read_text()
    _assert_failed_in_ui(failed)


def _assert_failed_in_ui(dag_run: dict) -> None:
    """A process run whose node raised: FAILURE, the node FAILURE with the worker's error."""
    assert dag_run["run_status"] == "FAILURE", dag_run
    nodes = {node["node_name"]: node for node in dag_run["node_runs"]}
    assert nodes.get("broken", {}).get("status") == "FAILURE", dag_run
    assert nodes["gate"]["status"] == nodes["after"]["status"] == "SUCCESS", nodes
    said = json.dumps(nodes["broken"]["attributes"])
    assert "ValueError: broken on purpose" in said, said


def _assert_shown(base, http: str, row) -> None:
    """The link in `runs show` (JSON and table), /api/runs/{id} and the run's page."""
    url = row.links["hamilton_ui"]
    shown = json.loads(cli_here(base, "runs", "show", str(row.id), "--json").stdout)
    assert shown["links"] == {"hamilton_ui": url}
    assert url in cli_here(base, "runs", "show", str(row.id)).stdout
    api = requests.get(f"{http}/api/runs/{row.id}", timeout=bound(30)).json()
    assert api["links"] == shown["links"]
    assert f'href="{url}"' in requests.get(f"{http}/runs/{row.id}", timeout=bound(30)).text


def _assert_in_ui(ui: HamiltonUI, row) -> None:
    url = row.links["hamilton_ui"]
    prefix = f"{ui.url}/dashboard/project/{ui.project_id}/runs/"
    assert url.startswith(prefix), url
    dag_run = wait_for(  # its end may have been taken later (the UI slow then)
        lambda: _done(ui.get(f"/dag_runs/{url.removeprefix(prefix)}")[0], 2), what="its end"
    )
    assert dag_run["tags"] == {
        "flowerd_schedule": row.schedule,
        "flowerd_slot": row.scheduled_at.isoformat(),
        "flowerd_trigger": "schedule",
        "flowerd_run_id": str(row.id),
    }
    assert dag_run["run_status"] == "SUCCESS"
    nodes = {node["node_name"]: node["status"] for node in dag_run["node_runs"]}
    assert nodes.get("greeting") == nodes.get("full_greeting") == "SUCCESS", nodes
    page = requests.get(url, timeout=bound(30))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('[hamilton_ui]\nurl = "http://x"\nusername = "a"\n', "needs project_id"),
        ('[hamilton_ui]\nurl = "x"\nproject_id = 1\nusername = "a"\n', "is not an http"),
        ('[hamilton_ui]\nurl = "http://x"\nproject_id = 0\nusername = "a"\n', "positive"),
        ('[hamilton_ui]\nurl = "http://x"\nproject_id = 1\nusername = "a"\napi_key = 7\n',
         "api_key"),
    ],
)  # fmt: skip
def test_a_bad_section_says_what_is_wrong(tmp_path, section, says):
    (tmp_path / "flowerd.toml").write_text(section)
    with pytest.raises(SettingsError, match=says):
        load_settings(tmp_path)


TRIAL_SLOTS = 30


def _finished_after(base, schedule: str, after: datetime, count: int):
    """`count` rows of slots after `after` (past the daemon's start-up), once finished."""
    done = [r for r in runs(base, schedule=schedule) if r.scheduled_at > after and r.finished_at]
    return sorted(done, key=lambda r: r.id)[:count] if len(done) >= count else None


def _figures(rows) -> str:
    ran = [r for r in rows if r.started_at is not None]
    late = sorted(r.lateness_s for r in ran)
    took = sorted(r.duration_s for r in ran)
    statuses = Counter(r.status for r in rows)
    return (
        f"{dict(statuses)}; "
        f"lateness median {late[len(late) // 2] * 1000:.0f} ms, max {late[-1] * 1000:.0f} ms; "
        f"duration median {took[len(took) // 2] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms"
    )


def _window(base, after: datetime):
    return wait_for(lambda: _finished_after(base, "greet", after, TRIAL_SLOTS),
                    timeout_s=TRIAL_SLOTS * 2, what="the trial's runs")  # fmt: skip


@pytest.mark.slow
def test_fail_open_trial_lateness_with_the_ui_up_hung_and_down(tmp_path):
    """The closing note's trial: a few dozen 1-s slots reported to a live UI, then as many
    with the UI hung (SIGSTOP: connections taken, never answered), then with it gone.
    Every run succeeds; neither makes a run later."""
    base = make_project(tmp_path / "project", SCHEDULES.split("[greet_sync]")[0])
    with HamiltonUI(tmp_path / "ui") as ui:
        ui.make_project()
        (base / "flowerd.toml").write_text('http = "off"\n' + _settings(ui, timeout_s=2))
        with Served(base) as served:
            served.wait_ready()
            first = wait_for(lambda: _linked(base, "greet"), what="a first linked run")
            phases = {"up": _window(base, first.finished_at)}
            ui.hang()
            phases["hung"] = _window(base, datetime.now(UTC))
            ui.stop()
            phases["down"] = _window(base, datetime.now(UTC))
            assert served.stop() == 0
    for phase, rows in phases.items():
        print(f"\nUI {phase:<4} ({TRIAL_SLOTS} slots): {_figures(rows)}", end="")
    print()
    assert all(r.status == "success" for rows in phases.values() for r in rows)
    assert all(r.links for r in phases["up"])
    for phase in ("hung", "down"):
        assert max(r.lateness_s for r in phases[phase]) < 1.0, phase


def test_flowerd_run_json_stays_json_when_the_ui_is_down(tmp_path):
    """`flowerd run --json` with the UI unreachable: the result on stdout is pure JSON,
    the run succeeds without a link, its log says what was not reported."""
    base = make_project(tmp_path)
    (base / "flowerd.toml").write_text(
        f'[hamilton_ui]\nurl = "http://127.0.0.1:{free_port()}"\nproject_id = 1\n'
        f'username = "{USER}"\n'
    )
    done = cli(base, "run", "hello_world", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "success" and record["links"] == {}
    logged = cli_here(base, "runs", "logs", str(record["id"])).stdout
    assert "not reported to hamilton_ui" in logged and "cannot connect" in logged, logged
