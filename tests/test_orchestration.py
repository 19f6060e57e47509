"""Orchestration between schedules (DESIGN.md "Across schedules"), end to end: real
`flowerd serve`, real time, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve import Served, cli, make_project, rows_where, wait_for

pytestmark = pytest.mark.timeout(120)

DOUBLE = """
def doubled(n: int = 1) -> int:
    return n * 2
"""


def test_trigger_with_inputs_overrides_for_that_run_only(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [double]
        pipeline = "double"
        interval = "1h"
        final_vars = ["doubled"]
        inputs = { n = 5 }
        """,
        double=DOUBLE,
    )
    with Served(base) as served:
        served.wait_ready()
        done = cli(base, "trigger", "double", "--input", "n=21")
        assert done.returncode == 0, done.stderr
        row = wait_for(lambda: rows_where(base, schedule="double", status="success"))[0]
        assert row.result == {"doubled": 42} and row.inputs == {"n": 21}
        assert cli(base, "trigger", "double").returncode == 0
        wait_for(lambda: len(rows_where(base, schedule="double", status="success")) == 2)
        again = rows_where(base, schedule="double", status="success")[0]  # newest first
        assert again.result == {"doubled": 10}
        reserved = cli(base, "trigger", "double", "--input", "run_id=3")
        assert reserved.returncode == 2 and "reserved" in reserved.stderr
        unknown = cli(base, "trigger", "double", "--input", "m=3")
        assert unknown.returncode == 1 and "no input 'm'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        bad = cli(base, "trigger", "double", "--input", "n=abc")
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert served.stop() == 0
