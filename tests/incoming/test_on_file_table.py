"""`on_file` in schedule files: parsed into a FileTrigger, each mistake one line naming
the file, the schedule and the field; exactly one trigger; events queue by default."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon.errors import ScheduleError
from daemon.schedule import load_schedules
from tests.contract import flowerd_here
from tests.serve import make_project


def _load(tmp_path: Path, body: str):
    (tmp_path / "s").mkdir(exist_ok=True)
    (tmp_path / "s" / "events.toml").write_text(textwrap.dedent(body))
    return load_schedules(tmp_path / "s")


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ScheduleError) as caught:
        _load(tmp_path, body)
    return caught.value.problems


def test_on_file_is_parsed_with_its_defaults_and_queues_by_default(tmp_path):
    (schedule,) = _load(
        tmp_path,
        """
        [orders]
        pipeline = "hello_world"
        on_file = { path = "incoming/orders", pattern = "*.csv", settle = "2s" }
        """,
    )
    assert schedule.on_file.path == "incoming/orders"
    assert (schedule.on_file.settle_s, schedule.on_file.recursive) == (2.0, False)
    assert schedule.overlap == "queue" and schedule.trigger_kind == "on_file"
    assert not schedule.has_clock
    assert schedule.describe_trigger() == "on file incoming/orders/*.csv, settle 2s"
    (plain,) = _load(tmp_path, '[o]\npipeline = "p"\non_file = { path = "in" }\noverlap = "skip"\n')
    assert (plain.on_file.pattern, plain.on_file.settle_s, plain.overlap) == ("*", 1.0, "skip")


@pytest.mark.parametrize(
    ("on_file", "wanted"),
    [
        ("{ pattern = '*.csv' }", "'path' (a directory: relative to the base dir, or absolute)"),
        ("{ path = 'in', settle = 'soon' }", "'settle': 'soon' is not a duration"),
        ("{ path = 'in', patern = '*' }", "unknown key 'patern' (did you mean 'pattern'"),
        ("{ path = 'in', recursive = 'yes' }", "'recursive' is true or false"),
        ("{ path = 'in', pattern = 'a/*.csv' }", "'pattern' is a glob on the file name"),
        ("'in'", "field 'on_file': expected a table"),
    ],
)
def test_a_bad_on_file_is_one_line_naming_file_schedule_and_field(tmp_path, on_file, wanted):
    problems = _problems(tmp_path, f'[orders]\npipeline = "p"\non_file = {on_file}\n')
    assert len(problems) == 1, problems
    assert "events.toml" in problems[0] and "[orders]" in problems[0], problems
    assert "'on_file'" in problems[0] and wanted in problems[0], problems


def test_on_file_beside_a_clock_trigger_is_refused(tmp_path):
    problems = _problems(
        tmp_path, '[orders]\npipeline = "p"\ncron = "* * * * *"\non_file = { path = "in" }\n'
    )
    assert any("'cron' and 'on_file': give only one trigger" in line for line in problems), problems


def test_validate_warns_of_a_directory_not_there_yet(tmp_path):
    base = make_project(
        tmp_path / "p",
        '[orders]\npipeline = "hello_world"\nfinal_vars = ["full_greeting"]\n'
        'inputs = { name = "x" }\non_file = { path = "incoming" }\n',
    )
    done = flowerd_here(base, "validate")
    assert done.returncode == 0, done.stderr
    assert f"{(base / 'incoming').resolve()} does not exist (yet)" in done.stderr
