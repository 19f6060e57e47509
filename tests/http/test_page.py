"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright's
Python package through `executable_path`; Playwright's own browsers are never fetched).

Screenshots land in the test's tmp dir; FLOWERD_PAGE_SCREENSHOT=path.png also writes the
schedules page there (how README's picture is made: docs/page.png).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.contract import bound
from tests.http.test_server import get_json
from tests.serve import Served, make_project, wait_for

pytestmark = pytest.mark.timeout(300)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "page-token"

BOOM = """
def kaput(x: int = 1) -> int:
    raise ValueError("boom: failed on purpose")
"""

SLEEPY = """
import asyncio

async def slept(seconds: float = 1.5) -> float:
    await asyncio.sleep(seconds)
    return seconds
"""

SCHEDULES = """
[hello]
pipeline = "hello_world"
interval = "1s"
final_vars = ["full_greeting"]
additional_modules = ["pipeline_setup"]

[broken]
pipeline = "boom"
interval = "1s"
final_vars = ["kaput"]

[overlapping]
pipeline = "sleepy"
interval = "1s"
final_vars = ["slept"]
overlap = "skip"

[too_slow]
pipeline = "sleepy"
interval = "2s"
final_vars = ["slept"]
timeout = 0.5

[nightly]
pipeline = "hello_world"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
"""


def rows(url: str, **filters: str) -> list[dict]:
    """The history through the API: Playwright's sync API holds this thread's event loop,
    so the asyncio-based readers of tests/serve/__init__.py cannot run here."""
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return get_json(f"{url}/api/runs?limit=0&{query}")


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.timeout(240)
def test_the_page_in_chromium(tmp_path: Path, browser):
    base = make_project(tmp_path / "project", SCHEDULES, boom=BOOM, sleepy=SLEEPY)
    shots = tmp_path / "shots"
    shots.mkdir()
    env = {"FLOWERD_HTTP": "127.0.0.1:0", "FLOWERD_HTTP_TOKEN": TOKEN}
    with Served(base, env=env) as served:
        url = served.wait_ready()["http"]
        wait_for(
            lambda: (
                rows(url, schedule="broken", status="failed")
                and rows(url, schedule="overlapping", status="skipped")
                and rows(url, schedule="too_slow", status="timed_out")
            ),
            timeout_s=30,
            what="failed, skipped and timed_out rows",
        )
        if os.environ.get("FLOWERD_PAGE_SCREENSHOT"):
            wait_for(lambda: len(rows(url, schedule="hello")) >= 24, timeout_s=40)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        problems = []
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        page.goto(url)
        failed = page.locator("#schedule-broken a.cell.s-failed").first
        colour = failed.evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(214, 47, 47)"  # red
        ok = page.locator("#schedule-hello a.cell.s-success").first
        assert ok.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(46, 157, 74)"
        assert page.locator("#schedule-overlapping a.cell.s-skipped").count() >= 1
        assert page.locator("#schedule-nightly .badge").count() == 0
        page.screenshot(path=str(shots / "schedules.png"), full_page=True)
        if os.environ.get("FLOWERD_PAGE_SCREENSHOT"):
            page.set_viewport_size({"width": 1000, "height": 300})
            page.screenshot(path=os.environ["FLOWERD_PAGE_SCREENSHOT"], full_page=True)
            page.set_viewport_size({"width": 1100, "height": 800})

        failed.click()
        page.wait_for_url("**/runs/*")
        assert "ValueError" in page.locator("pre.traceback").inner_text()
        assert "boom: failed on purpose" in page.locator(".problem").inner_text()
        if shutil.which("dot"):  # graphviz draws the DAG; without it the page says so
            page.locator("img.dag").wait_for()
            assert page.locator("img.dag").evaluate("e => e.complete && e.naturalWidth > 0")
        else:
            assert "graphviz" in page.locator("main").inner_text()
        page.screenshot(path=str(shots / "run.png"), full_page=True)

        page.goto(f"{url}/runs?status=failed&schedule=broken")
        statuses = page.locator("table.runs span.status").all_inner_texts()
        assert statuses and set(statuses) == {"failed"}
        page.screenshot(path=str(shots / "runs.png"))
        page.goto(f"{url}/runs?since=yesterday")
        assert "since" in page.locator(".problem").inner_text()

        page.goto(url)
        button = page.locator('#schedule-nightly button[data-action="trigger"]')
        button.click()  # no token yet: the page says so, nothing runs
        assert "http_token" in page.locator("#flash").inner_text()
        page.fill("#token", "not-the-token")
        page.dispatch_event("#token", "change")
        button.click()  # refused: said, and the page refreshes on once it was seen
        # the answer comes back from the daemon: wait for the flash to say it (a loaded
        # CI machine read the previous text once)
        page.locator("#flash", has_text="trigger nightly").wait_for(timeout=bound(45) * 1000)
        assert "trigger nightly" in page.locator("#flash").inner_text()
        page.evaluate("window.notReloadedYet = true")
        page.wait_for_function("window.notReloadedYet === undefined", timeout=bound(45) * 1000)
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        button.click()
        page.wait_for_url("**/runs/*")
        run_id = int(page.url.rsplit("/", 1)[1])
        run = wait_for(
            lambda: (
                (found := get_json(f"{url}/api/runs/{run_id}"))["status"] == "success" and found
            ),
            what="the run the button started",
        )
        assert run["schedule"] == "nightly" and run["trigger"] == "manual"

        phone = browser.new_page(viewport={"width": 375, "height": 740}, is_mobile=True)
        phone.goto(url)
        width = phone.evaluate("document.documentElement.scrollWidth")
        phone.screenshot(path=str(shots / "phone.png"), full_page=True)
        assert width <= 375, "the schedules page scrolls sideways on a phone"
        assert served.stop() == 0
    refused = "the server responded with a status of 403 (Forbidden)"  # the wrong token's
    assert [problem for problem in problems if refused not in problem] == []
