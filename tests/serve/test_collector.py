"""The collector paused while a command builds (daemon/serve/collector.py): off inside, as it was
after, what was built frozen with `keep`; and a real daemon's start-up runs with it off
and serves with it on, its start-up objects frozen."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

from daemon.serve import collector
from tests.contract import bound
from tests.serve import make_project


def test_paused_turns_the_collector_off_inside_and_back_on_after():
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # nothing kept without `keep`


def test_a_caller_that_turned_it_off_keeps_it_off():
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_keep_freezes_what_was_built_before_the_collector_is_back():
    built = [[index] for index in range(1_000)]  # containers the collector would track
    try:
        with collector.paused(keep=True):
            more = [[index] for index in range(1_000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(built) + len(more)
        assert gc.get_count()[0] < 100  # the young generation is empty: nothing to walk
    finally:
        gc.unfreeze()


def test_an_error_inside_still_turns_it_back_on():
    try:
        with collector.paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


SERVE_AND_WATCH = """
import asyncio, gc, os, signal, sys
from pathlib import Path
from daemon.serve import daemon as daemon_app
from daemon.settings import load_settings

settings = load_settings(Path(sys.argv[1])).model_copy(update={"http": "off"})
seen = []

async def watch(serving):
    while not serving.done():
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
        if seen[-1] == (True, True):  # start-up done: serving
            os.kill(os.getpid(), signal.SIGTERM)
            return
        await asyncio.sleep(0.01)

async def main():
    serving = asyncio.create_task(daemon_app.serve(settings))
    await watch(serving)
    return await serving

code = asyncio.run(main())
print("start-up", "off" if (False, False) in seen else "on", "then", seen[-1], "exit", code)
"""


def test_a_daemon_starts_up_with_the_collector_off_and_serves_with_it_on(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [hello]
        pipeline = "hello_world"
        cron = "0 3 * * *"
        """,
    )
    script = tmp_path / "serve_and_watch.py"
    script.write_text(textwrap.dedent(SERVE_AND_WATCH))
    done = subprocess.run(
        [sys.executable, str(script), str(base)],
        capture_output=True,
        text=True,
        timeout=bound(60),
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert done.stdout.strip() == "start-up off then (True, True) exit 0", done.stderr[-3000:]
