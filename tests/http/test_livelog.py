"""The page follows a running run's log (server-sent events): new lines show up in a
real headless Chromium without a reload, and the stream ends with the run (issue 26)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract import bound
from tests.http.test_page import browser  # noqa: F401 - the fixture
from tests.http.test_server import fetch, get_json
from tests.serve import Served, make_project, wait_for

pytestmark = pytest.mark.timeout(240)

TICKING = """
import time


def ticks(count: int = 14, every_s: float = 0.5) -> int:
    for n in range(count):
        print(f"tick {n}", flush=True)
        time.sleep(every_s)
    return count
"""

SCHEDULES = """
[ticking]
pipeline = "ticking"
interval = "1d"
async_driver = false
final_vars = ["ticks"]
"""


def test_new_lines_of_a_running_run_appear_without_a_reload(tmp_path: Path, browser):  # noqa: F811
    base = make_project(tmp_path / "p", SCHEDULES, ticking=TICKING)
    with Served(base, env={"FLOWERD_HTTP": "127.0.0.1:0"}) as served:
        url = served.wait_ready()["http"]
        run_id = served.ask("trigger", schedule="ticking")["run_id"]
        page = browser.new_page()
        problems = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.goto(f"{url}/runs/{run_id}")
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        log = page.locator("#live-log")
        first = log.inner_text().count("tick ")
        page.wait_for_function(
            f"document.querySelector('#live-log').innerText.split('tick ').length > {first + 3}",
            timeout=bound(20) * 1000,
        )
        assert page.evaluate("window.sameDocument === true"), "the page reloaded"
        assert "INFO stdout: tick" in log.inner_text()
        ended = lambda: get_json(f"{url}/api/runs/{run_id}")["status"] == "success"  # noqa: E731
        wait_for(ended, what="the run's end")
        # the stream ends with the run: the page then shows the final state
        page.wait_for_function("window.sameDocument !== true", timeout=bound(20) * 1000)
        page.wait_for_load_state()
        assert "tick 13" in page.locator("pre.log").inner_text()
        assert problems == []
        status, headers, body = fetch(f"{url}/runs/{run_id}/log/events")  # ended: all, then end
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert body.decode().rstrip().endswith('event: end\ndata: {"status": "success"}')
        assert fetch(f"{url}/runs/999999/log/events")[0] == 404
        assert served.stop() == 0
