"""`flowerd init`: a project that validates and that a real daemon runs; nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

from tests.contract import flowerd, flowerd_here
from tests.serve import Served, rows_where, wait_for


def test_init_makes_a_project_that_validates_and_serves(tmp_path: Path):
    base = tmp_path / "shop"
    made = flowerd(tmp_path, "init", str(base))
    assert made.returncode == 0, made.stderr
    for name in ("pipelines/hello.py", "schedules/hello.toml", "flowerd.toml", ".gitignore"):
        assert f"created {name}" in made.stdout
    checked = flowerd_here(base, "validate")
    assert checked.returncode == 0 and "warning" not in checked.stderr, checked
    with Served(base) as served:
        status = served.wait_ready()
        assert "hello_every_minute" in json.dumps(status)
        assert flowerd_here(base, "trigger", "hello_every_minute").returncode == 0
        [row] = wait_for(
            lambda: rows_where(base, schedule="hello_every_minute", status="success"),
            timeout_s=60,
            what="the example schedule's run",
        )
        assert served.stop() == 0
    assert row.result["stamped"].startswith("Hello, flowerd! (slot ")
    assert row.async_driver is False  # from [defaults] in the generated flowerd.toml


def test_init_never_overwrites_a_file(tmp_path: Path):
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "hello.toml").write_text("# mine\n")
    made = flowerd(tmp_path, "init")
    assert made.returncode == 0, made.stderr
    assert "kept    schedules/hello.toml (it exists; not overwritten)" in made.stdout
    assert "created pipelines/hello.py" in made.stdout
    assert (tmp_path / "schedules" / "hello.toml").read_text() == "# mine\n"
    again = flowerd(tmp_path, "init")
    assert again.returncode == 0 and "created" not in again.stdout
