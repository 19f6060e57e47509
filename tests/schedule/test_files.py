"""Schedule files -> Schedule records, and every problem named by file, schedule and field."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.errors import ScheduleError
from daemon.schedule import Schedule, load_schedules, parse_cron, validate_schedule_dir
from tests.contract import bound, flowerd_here

REPO = Path(__file__).resolve().parents[2]


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(directory: Path, **kwargs) -> list[str]:
    with pytest.raises(ScheduleError) as caught:
        load_schedules(directory, **kwargs)
    return caught.value.problems


# --------------------------------------------------------------------------- valid files


def test_the_repo_examples_load_and_name_existing_pipelines():
    schedules = load_schedules(REPO / "schedules", pipelines_dir=REPO / "pipelines")
    by_id = {s.id: s for s in schedules}
    assert by_id["fanout_every_minute"].async_driver is True
    assert by_id["hello_sync_every_30s"].async_driver is False
    assert by_id["hello_sync_every_30s"].interval_s == 30
    nightly = by_id["fanout_nightly_berlin"]
    assert (nightly.cron, nightly.timezone, nightly.max_retries) == (
        "30 2 * * *",
        "Europe/Berlin",
        3,
    )


def test_a_full_table_becomes_a_schedule_with_every_field(tmp_path):
    write(
        tmp_path,
        "etl.toml",
        """
        [nightly]
        pipeline = "hello_world"
        cron = "30 2 * * *"
        timezone = "Europe/Berlin"
        enabled = false
        final_vars = ["full_greeting"]
        inputs = { name = "World", tags = ["a", "b"], nested = { k = 1 } }
        config = { mode = "x" }
        additional_modules = ["pipeline_setup"]
        async_driver = false
        log_level = "debug"
        max_retries = 2
        retry_delay = "2m"
        jitter_factor = 0.5
        retry_exceptions = ["ValueError", "my_pkg.errors.Flaky"]
        timeout = "1h"
        overlap = "queue"
        catchup = "all"
        misfire_grace = 5
        jitter = 1.5
        """,
    )
    [s] = load_schedules(tmp_path)
    assert (s.id, s.file, s.pipeline, s.trigger_kind) == (
        "nightly",
        tmp_path / "etl.toml",
        "hello_world",
        "cron",
    )
    assert (s.timezone, s.enabled, s.async_driver, s.log_level) == (
        "Europe/Berlin",
        False,
        False,
        "DEBUG",
    )
    assert (s.timeout_s, s.overlap, s.catchup, s.misfire_grace_s, s.jitter_s) == (
        3600,
        "queue",
        "all",
        5,
        1.5,
    )
    assert s.run_config_kwargs() == {
        "final_vars": ["full_greeting"],
        "inputs": {"name": "World", "tags": ["a", "b"], "nested": {"k": 1}},
        "config": {"mode": "x"},
        "additional_modules": ["pipeline_setup"],
        "async_driver": False,
        "log_level": "DEBUG",
        "max_retries": 2,
        "retry_delay": 120.0,
        "jitter_factor": 0.5,
        "retry_exceptions": ["ValueError", "my_pkg.errors.Flaky"],
        "cache": None,
        "executor": None,
        "with_adapter": None,
    }


def test_defaults_and_the_daemon_timezone(tmp_path):
    write(tmp_path, "a.toml", '[tick]\npipeline = "hello_world"\ninterval = 30\n')
    [s] = load_schedules(tmp_path, default_timezone="America/New_York")
    assert s.timezone == "America/New_York"
    assert (s.enabled, s.async_driver, s.overlap, s.catchup) == (True, True, "skip", "latest")
    assert (s.timeout_s, s.misfire_grace_s, s.jitter_s, s.max_retries) == (0, 60, 0, 0)
    assert s.run_config_kwargs()["retry_exceptions"] == ["Exception"]


def test_project_defaults_fill_what_a_schedule_leaves_out(tmp_path):
    write(
        tmp_path,
        "a.toml",
        '[plain]\npipeline = "hello_world"\ncron = "15 3 * * *"\n'
        '[own]\npipeline = "hello_world"\ninterval = 30\nasync_driver = true\n'
        'timezone = "UTC"\nmax_retries = 0\n',
    )
    defaults = {
        "async_driver": False,
        "max_retries": 2,
        "timezone": "Europe/Berlin",
        "notify": ["json://localhost/x"],
        "isolation": "process",
    }
    plain, own = load_schedules(tmp_path, default_timezone="America/New_York", defaults=defaults)
    assert (plain.async_driver, plain.max_retries, plain.timezone) == (False, 2, "Europe/Berlin")
    assert (plain.notify, plain.isolation) == (("json://localhost/x",), "process")
    assert (own.async_driver, own.max_retries, own.timezone) == (True, 0, "UTC")  # its own wins


def test_a_bad_value_from_project_defaults_names_them(tmp_path):
    write(tmp_path, "a.toml", '[plain]\npipeline = "hello_world"\ncron = "15 3 * * *"\n')
    [line] = problems_of(tmp_path, defaults={"memory_limit": "1GiB"})
    assert "a.toml: [plain] field 'memory_limit': only a schedule" in line
    assert line.endswith("(the value from [defaults] in flowerd.toml)")


def test_a_schedule_is_frozen_hashable_and_hands_out_fresh_copies(tmp_path):
    write(tmp_path, "a.toml", '[a]\npipeline = "p"\ncron = "* * * * *"\ninputs = { xs = [1] }\n')
    [s] = load_schedules(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pipeline = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.inputs["xs"] = 2  # type: ignore[index]
    assert s.inputs["xs"] == (1,)
    kwargs = s.run_config_kwargs()
    kwargs["inputs"]["xs"].append(2)
    assert s.run_config_kwargs()["inputs"] == {"xs": [1]}
    assert hash(s) == hash(dataclasses.replace(s)) and s == dataclasses.replace(s)
    assert {s: 1}[s] == 1


def test_a_schedule_built_by_hand_is_frozen_the_same_way(tmp_path):
    """The record's own checks and freezing, for schedules not read from a file."""
    s = Schedule(
        id="a", file=tmp_path / "a.toml", pipeline="p", interval_s=60.0,
        inputs={"when": date(2026, 12, 1), "nested": {"xs": [1, {"y": [2]}]}},
        config={}, cache={"recompute": ["x"]}, executor={"type": "dask"},
        final_vars=["v"], notify=["json://localhost/x"],
    )  # fmt: skip
    assert s.inputs["when"] == date(2026, 12, 1)
    assert s.inputs["nested"] == {"xs": (1, {"y": (2,)})}
    with pytest.raises(TypeError):
        s.inputs["nested"]["xs"] = ()  # type: ignore[index]
    assert s.config == {} and s.with_adapter == {}
    assert s.config is Schedule(id="b", file=s.file, pipeline="p", cron="* * * * *").config
    assert s.cache == {"recompute": ("x",)} and s.executor == {"type": "dask"}
    with pytest.raises(TypeError):
        s.executor["type"] = "local"  # type: ignore[index]
    assert (s.final_vars, s.notify) == (("v",), ("json://localhost/x",))
    for triggers in ({}, {"cron": "* * * * *", "interval_s": 5.0}, {"after": ("x",), "at": AT}):
        with pytest.raises(ValueError, match="give exactly one of"):
            Schedule(id="c", file=s.file, pipeline="p", **triggers)
    assert Schedule(id="d", file=s.file, pipeline="p", after=["x"]).after == ("x",)


AT = datetime(2026, 12, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("trigger", "kind", "described"),
    [
        ('cron = "30 2 * * *"', "cron", "cron '30 2 * * *'"),
        ('interval = "30s"', "interval", "every 30s"),
        ("interval = 300", "interval", "every 5m"),
        ('interval = "1.5h"', "interval", "every 90m"),
        ('interval = "2d"', "interval", "every 2d"),
        ("interval = 0.25", "interval", "every 0.25s"),
        ('at = "2026-12-01T09:00:00+01:00"', "at", "at 2026-12-01T09:00:00+01:00"),
        ("at = 2026-12-01T09:00:00+01:00", "at", "at 2026-12-01T09:00:00+01:00"),
    ],
)
def test_trigger_kinds_and_their_descriptions(tmp_path, trigger, kind, described):
    write(tmp_path, "a.toml", f'[a]\npipeline = "p"\n{trigger}\n')
    [s] = load_schedules(tmp_path)
    assert (s.trigger_kind, s.describe_trigger()) == (kind, described)


def test_a_naive_at_is_wall_clock_time_in_the_schedule_timezone(tmp_path):
    write(
        tmp_path,
        "a.toml",
        """
        [once]
        pipeline = "p"
        at = 2026-11-01T01:30:00
        timezone = "America/New_York"
        [once_quoted]
        pipeline = "p"
        at = "2026-12-01 09:00"
        """,
    )
    once, quoted = load_schedules(tmp_path, default_timezone="Europe/Berlin")
    assert once.at == datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    assert once.at.utcoffset().total_seconds() == -4 * 3600  # a repeated time: the first one
    assert quoted.at.isoformat() == "2026-12-01T09:00:00+01:00"


def test_files_are_read_in_name_order_and_other_files_are_ignored(tmp_path):
    write(tmp_path, "b.toml", '[b1]\npipeline = "p"\ncron = "* * * * *"\n')
    write(
        tmp_path,
        "a.toml",
        '[a2]\npipeline = "p"\ncron = "* * * * *"\n[a1]\npipeline = "p"\ncron = "* * * * *"\n',
    )
    write(tmp_path, "notes.txt", "not a schedule")
    write(tmp_path, "empty.toml", "# nothing yet\n")
    assert [s.id for s in load_schedules(tmp_path)] == ["a2", "a1", "b1"]


def test_a_missing_directory_holds_no_schedules(tmp_path):
    assert load_schedules(tmp_path / "nope") == []
    assert validate_schedule_dir(tmp_path / "nope") == []


def test_schedule_needs_exactly_one_trigger_when_built_in_code():
    with pytest.raises(ValueError, match="exactly one"):
        Schedule(id="a", file=Path("a.toml"), pipeline="p")
    with pytest.raises(ValueError, match="exactly one"):
        Schedule(id="a", file=Path("a.toml"), pipeline="p", cron="* * * * *", interval_s=5)
    with pytest.raises(ValueError, match="aware"):
        Schedule(id="a", file=Path("a.toml"), pipeline="p", at=datetime(2026, 1, 1))


# --------------------------------------------------------------------------- problems


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'cron = "61 * * * *"',
            "[s] field 'cron': '61 * * * *' is not a valid cron expression (minute 61 out of 0-59)",
        ),
        (
            'cron = "* * * *"',
            "[s] field 'cron': '* * * *' is not a valid cron expression (4 fields; want 5",
        ),
        (
            'cron = "0 0 30 2 *"',
            "[s] field 'cron': '0 0 30 2 *' is not a valid cron expression (it never fires",
        ),
        ('cron = "* * * * * * *"', "(7 fields; want 5"),
        ('interval = 5\ncronn = "* * * * *"', "[s] unknown field 'cronn' (did you mean 'cron'?)"),
        (
            'cron = "* * * * *"\ninterval = 5',
            "[s] fields 'cron' and 'interval': give only one trigger",
        ),
        (
            "",
            "[s] no trigger: give one of 'cron', 'interval', 'at', 'after', 'on_file' or "
            "'on_webhook'",
        ),
        ('interval = "0s"', "[s] field 'interval': '0s': the interval must be more than 0 seconds"),
        ('interval = "5 minutes"', "[s] field 'interval': '5 minutes' is not a duration"),
        ("interval = -5", "[s] field 'interval': -5.0: a duration cannot be negative"),
        ("interval = true", "[s] field 'interval': expected a number or a string, got true"),
        ('at = "next tuesday"', "[s] field 'at': 'next tuesday' is not an ISO-8601 date-time"),
        ("at = 2026-12-01", "[s] field 'at': 2026-12-01 is not a date-time"),
        (
            'at = 2026-03-29T02:30:00\ntimezone = "Europe/Berlin"',
            "[s] field 'at': 2026-03-29T02:30:00 does not exist in Europe/Berlin",
        ),
        (
            'cron = "* * * * *"\ntimezone = "Mars/Olympus"',
            "[s] field 'timezone': unknown IANA timezone 'Mars/Olympus'",
        ),
        (
            'cron = "* * * * *"\noverlap = "skipp"',
            "[s] field 'overlap': 'skipp' is not one of skip, queue, allow (did you mean 'skip'?)",
        ),
        (
            'cron = "* * * * *"\ncatchup = "al"',
            "[s] field 'catchup': 'al' is not one of none, latest, all",
        ),
        (
            'cron = "* * * * *"\nlog_level = "loud"',
            "[s] field 'log_level': 'LOUD' is not one of DEBUG, INFO",
        ),
        (
            'cron = "* * * * *"\ntimeout = -1',
            "[s] field 'timeout': -1.0: a duration cannot be negative",
        ),
        (
            'cron = "* * * * *"\nmisfire_grace = -1',
            "[s] field 'misfire_grace': -1.0: a duration cannot be negative",
        ),
        ('cron = "* * * * *"\njitter = "-3s"', "[s] field 'jitter': '-3s' is not a duration"),
        ('cron = "* * * * *"\nmax_retries = -1', "[s] field 'max_retries': -1 cannot be negative"),
        (
            'cron = "* * * * *"\nmax_retries = 1.5',
            "[s] field 'max_retries': expected an integer, got 1.5",
        ),
        (
            'cron = "* * * * *"\nenabled = "yes"',
            "[s] field 'enabled': expected true or false, got \"yes\"",
        ),
        (
            'cron = "* * * * *"\nfinal_vars = "x"',
            "[s] field 'final_vars': expected an array, got \"x\"",
        ),
        (
            'cron = "* * * * *"\nfinal_vars = ["a", 1]',
            "[s] field 'final_vars[1]': expected a string, got 1",
        ),
        ('cron = "* * * * *"\ninputs = [1]', "[s] field 'inputs': expected a table, got [1]"),
        (
            'cron = "* * * * *"\nadditional_modules = ["a/b"]',
            "[s] field 'additional_modules': 'a/b' is not a module name",
        ),
        (
            'cron = "* * * * *"\nretry_exceptions = ["Flaky"]',
            "[s] field 'retry_exceptions': 'Flaky' is not a builtin exception",
        ),
        (
            'cron = "* * * * *"\nisolation = "proces"',
            "[s] field 'isolation': 'proces' is not one of thread, process (did you mean",
        ),
        (
            'cron = "* * * * *"\nisolation = "process"\nmemory_limit = "2G"',
            "[s] field 'memory_limit': '2G' is not a size; write a number and a unit: B, KiB",
        ),
        (
            'cron = "* * * * *"\nisolation = "process"\nmemory_limit = "1MiB"',
            "[s] field 'memory_limit': '1MiB' is too small for a worker process",
        ),
        (
            'cron = "* * * * *"\nmemory_limit = "2GiB"',
            "[s] field 'memory_limit': only a schedule with isolation = \"process\" can have a "
            "memory limit (this one runs in a daemon thread, the isolation setting's default)",
        ),
        (
            'cron = "* * * * *"\nisolation = "thread"\nmemory_limit = "2GiB"',
            "[s] field 'memory_limit': only a schedule with isolation = \"process\"",
        ),
    ],
)
def test_each_problem_names_file_schedule_and_field(tmp_path, body, expected):
    write(tmp_path, "etl.toml", f'[s]\npipeline = "p"\n{body}\n')
    [problem] = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path / 'etl.toml'}: [s] ")
    assert expected in problem


@pytest.mark.parametrize(
    "pipeline", ["../evil", "pipelines/hello", "hello.py", "a.b", "", "class", "hé"]
)
def test_a_pipeline_is_a_plain_module_name_never_a_path(tmp_path, pipeline):
    write(tmp_path, "a.toml", f'[s]\npipeline = "{pipeline}"\ncron = "* * * * *"\n')
    [problem] = problems_of(tmp_path)
    assert "field 'pipeline'" in problem and "is not a plain module name" in problem


def test_a_missing_pipeline_field_is_named(tmp_path):
    write(tmp_path, "a.toml", '[s]\ncron = "* * * * *"\n')
    assert problems_of(tmp_path) == [f"{tmp_path / 'a.toml'}: [s] field 'pipeline' is required"]


def test_messages_show_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "schedules", "etl.toml", '[nightly]\npipeline = "p"\ncron = "61 * * * *"\n')
    monkeypatch.chdir(tmp_path)
    [problem] = problems_of(tmp_path / "schedules")
    assert problem == (
        "schedules/etl.toml: [nightly] field 'cron': '61 * * * *' is not a valid cron "
        "expression (minute 61 out of 0-59)"
    )


def test_every_problem_in_every_file_is_collected(tmp_path):
    write(tmp_path, "a.toml", '[a]\npipeline = "p"\ncron = "61 * * * *"\novrlap = "skip"\n')
    write(
        tmp_path,
        "b.toml",
        "[b]\npipeline = 'p'\ncron = '* * * * *'\ninterval = 5\n[c]\npipeline = 'p'\n",
    )
    write(tmp_path, "c.toml", "[broken\n")
    write(tmp_path, "d.toml", '[good]\npipeline = "p"\ncron = "* * * * *"\n')
    problems = problems_of(tmp_path)
    assert len(problems) == 5, problems
    assert "a.toml: [a] unknown field 'ovrlap' (did you mean 'overlap'?)" in problems[0]
    assert "a.toml: [a] field 'cron'" in problems[1]
    assert "b.toml: [b] fields 'cron' and 'interval'" in problems[2]
    assert "b.toml: [c] no trigger" in problems[3]
    assert "c.toml: not valid TOML" in problems[4] and "line 1" in problems[4]
    assert validate_schedule_dir(tmp_path) == problems


def test_the_error_message_lists_every_problem_one_per_line(tmp_path):
    write(tmp_path, "a.toml", '[a]\npipeline = "p"\n[b]\npipeline = "p"\n')
    with pytest.raises(ScheduleError) as caught:
        load_schedules(tmp_path)
    assert str(caught.value).splitlines() == caught.value.problems
    assert caught.value.exit_code == 1


def test_bad_toml_says_where(tmp_path):
    write(tmp_path, "a.toml", '[a]\npipeline = "p"\ncron = "* * * * *\n')
    [problem] = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path / 'a.toml'}: not valid TOML: ")
    assert "line 3" in problem and "column" in problem


def test_duplicate_ids_across_files_name_both_files(tmp_path):
    write(tmp_path, "a.toml", '[nightly]\npipeline = "p"\ncron = "* * * * *"\n')
    write(tmp_path, "b.toml", '[nightly]\npipeline = "q"\ninterval = 5\n')
    [problem] = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path / 'b.toml'}: [nightly] duplicate schedule id")
    assert f"{tmp_path / 'a.toml'} already has [nightly]" in problem


@pytest.mark.parametrize("schedule_id", ["Nightly", "night ly", "nacht.lauf", "été"])
def test_schedule_ids_are_lower_case_names(tmp_path, schedule_id):
    write(tmp_path, "a.toml", f'["{schedule_id}"]\npipeline = "p"\ncron = "* * * * *"\n')
    [problem] = problems_of(tmp_path)
    assert f"schedule id {schedule_id!r} may hold only a-z, 0-9, '_' and '-'" in problem


def test_a_top_level_value_that_is_not_a_table_is_a_problem(tmp_path):
    write(tmp_path, "a.toml", 'pipeline = "p"\n[ok]\npipeline = "p"\ncron = "* * * * *"\n')
    [problem] = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path / 'a.toml'}: 'pipeline' is a string, not a table")


def test_pipelines_must_exist_when_the_pipelines_directory_is_given(tmp_path):
    write(tmp_path / "pipelines", "hello_world.py", "")
    write(tmp_path / "pipelines", "etl.py", "")
    write(tmp_path / "schedules", "a.toml", '[s]\npipeline = "hello_wrld"\ncron = "* * * * *"\n')
    [problem] = problems_of(tmp_path / "schedules", pipelines_dir=tmp_path / "pipelines")
    assert problem == (
        f"{tmp_path / 'schedules' / 'a.toml'}: [s] field 'pipeline': pipeline 'hello_wrld' "
        f"not found in {tmp_path / 'pipelines'} (pipelines there: etl, hello_world) "
        "(did you mean 'hello_world'?)"
    )


# --------------------------------------------------------------------------- cron


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("0 9-17/4 * * *", "hours", (9, 13, 17)),
        ("0 0 1,15 * *", "days", (1, 15)),
        ("0 0 * jan,JUL-sep *", "months", (1, 7, 8, 9)),
        ("0 9 * * 1", "weekdays", (1,)),
        ("0 9 * * 0", "weekdays", (0,)),
        ("0 9 * * 7", "weekdays", (0,)),
        ("0 9 * * 5-7", "weekdays", (0, 5, 6)),
        ("0 9 * * mon-fri", "weekdays", (1, 2, 3, 4, 5)),
        ("0 9 * * Sun,sat", "weekdays", (0, 6)),
        ("0 5/20 * * *", "hours", (5,)),
        ("*/20 0 0 * * *", "seconds", (0, 20, 40)),
        ("0 0 * * *", "seconds", (0,)),
        ("@hourly", "minutes", (0,)),
        ("@weekly", "weekdays", (0,)),
    ],
)
def test_cron_fields_expand_like_crontab(expression, field, values):
    assert getattr(parse_cron(expression), field) == values


def test_both_day_fields_restricted_means_either_matches():
    assert parse_cron("0 0 1 * mon").days_or_weekdays
    assert not parse_cron("0 0 1 * *").days_or_weekdays
    assert not parse_cron("0 0 */2 * mon").days_or_weekdays


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute 61 out of 0-59"),
        ("* 24 * * *", "hour 24 out of 0-23"),
        ("* * 0 * *", "day of month 0 out of 1-31"),
        ("* * * 13 *", "month 13 out of 1-12"),
        ("* * * * 8", "day of week 8 out of 0-7"),
        ("60 * * * * *", "second 60 out of 0-59"),
        ("*/0 * * * *", "minute: step 0 must be at least 1"),
        ("5-1 * * * *", "minute: range '5-1' runs backwards"),
        ("* * * * funday", "day of week: 'funday' is not a number"),
        ("jan * * * *", "minute: 'jan' is not a number"),
        ("1,,2 * * * *", "minute: cannot read ''"),
        ("? * * * *", "minute: cannot read '?'"),
        ("@reboot", "1 fields; want 5"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("?", r"\?")):
        parse_cron(expression)


# --------------------------------------------------------------------------- flowerd schedules


NIGHTLY_AND_TICK = """
[nightly]
pipeline = "hello_world"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
async_driver = false

[tick]
pipeline = "hello_world"
interval = "5m"

[off]
pipeline = "hello_world"
at = "2026-12-01T09:00:00+01:00"
enabled = false
"""


def test_schedules_json_lists_each_schedule_with_its_next_fire_times(tmp_path):
    write(tmp_path / "schedules", "etl.toml", NIGHTLY_AND_TICK)
    done = flowerd_here(
        tmp_path, "schedules", "--json", "--next", "2", "--from", "2026-03-28T12:00:00Z"
    )
    assert done.returncode == 0, done.stderr
    nightly, tick, off = json.loads(done.stdout)
    assert nightly == {
        "id": "nightly",
        "pipeline": "hello_world",
        "file": str(tmp_path / "schedules" / "etl.toml"),
        "trigger": "cron '30 2 * * *'",
        "timezone": "Europe/Berlin",
        "enabled": True,
        "paused": False,
        "paused_reason": None,
        "pool": None,
        "after": [],
        "async_driver": False,
        "loaded": False,  # no daemon runs it
        "on_file": None,
        "on_webhook": None,
        "pending": None,  # no event schedule
        "next": ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],  # the gap: 03:00
    }
    assert tick["next"] == ["2026-03-28T12:05:00+00:00", "2026-03-28T12:10:00+00:00"]
    assert (tick["trigger"], tick["timezone"]) == ("every 5m", "UTC")
    assert (off["enabled"], off["next"], off["trigger"]) == (
        False,
        [],
        "at 2026-12-01T09:00:00+01:00",
    )


def test_schedules_defaults_to_now_and_the_daemon_timezone(tmp_path):
    write(tmp_path, "flowerd.toml", 'timezone = "America/New_York"\n')
    write(tmp_path / "schedules", "a.toml", '[tick]\npipeline = "p"\ncron = "* * * * *"\n')
    before = datetime.now(UTC)
    done = flowerd_here(tmp_path, "schedules", "--json")
    after = datetime.now(UTC)  # the command's own "now" lies between the two
    [tick] = json.loads(done.stdout)
    fires = [datetime.fromisoformat(t) for t in tick["next"]]
    assert tick["timezone"] == "America/New_York" and len(fires) == 3
    assert before < fires[0] <= after + timedelta(minutes=1)
    assert all(t.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4)) for t in fires)


def test_schedules_table_for_people(tmp_path):
    write(tmp_path / "schedules", "etl.toml", NIGHTLY_AND_TICK)
    done = flowerd_here(tmp_path, "schedules", "--next", "1", "--from", "2026-11-24T00:00:00Z")
    assert done.returncode == 0, done.stderr
    for text in (
        "nightly",
        "cron '30 2 * * *'",
        "2026-11-24T02:30:00+01:00",
        "disabled",
        "every 5m",
    ):
        assert text in done.stdout


def test_schedules_without_schedule_files(tmp_path):
    (tmp_path / "schedules").mkdir()
    assert json.loads(flowerd_here(tmp_path, "schedules", "--json").stdout) == []
    done = flowerd_here(tmp_path, "schedules")
    assert (done.returncode, done.stdout.strip()) == (
        0,
        f"no schedules in {tmp_path / 'schedules'}",
    )


def test_schedules_with_invalid_files_exits_1_listing_every_problem(tmp_path):
    write(tmp_path / "schedules", "a.toml", '[a]\npipeline = "p"\ncron = "61 * * * *"\n')
    write(tmp_path / "schedules", "b.toml", '[b]\npipeline = "p"\n')
    done = flowerd_here(tmp_path, "schedules", "--json")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in done.stderr
    assert "schedules/a.toml: [a] field 'cron': '61 * * * *' is not a valid cron" in lines[0]
    assert "schedules/b.toml: [b] no trigger" in lines[1]


@pytest.mark.parametrize("args", [("--from", "yesterday"), ("--next", "-1"), ("--next", "x")])
def test_schedules_bad_options_exit_2(tmp_path, args):
    done = flowerd_here(tmp_path, "schedules", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert args[0] in done.stderr


def test_schedules_does_not_import_hamilton(tmp_path):
    write(tmp_path / "schedules", "a.toml", '[a]\npipeline = "p"\ncron = "* * * * *"\n')
    script = (
        "import sys\nfrom daemon.cli import main\n"
        f"sys.argv = ['flowerd', '--base-dir', {str(tmp_path)!r}, 'schedules', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('hamilton' in sys.modules, 'pandas' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=bound(30)
    )
    assert done.stderr.strip().splitlines()[-1] == "False False"
    assert json.loads(done.stdout)[0]["id"] == "a"


async def test_paused_state_comes_from_the_history(tmp_path: Path):
    from daemon.history import History
    from daemon.settings import load_settings

    write(tmp_path / "schedules", "a.toml", '[nightly]\npipeline = "p"\ncron = "0 3 * * *"\n')
    listed = json.loads(flowerd_here(tmp_path, "schedules", "--json").stdout)
    assert not listed[0]["paused"]  # no database yet: nothing is paused
    async with History.open(load_settings(tmp_path).db_url) as history:
        await history.set_paused("nightly", True)
    listed = json.loads(flowerd_here(tmp_path, "schedules", "--json").stdout)
    assert listed[0]["paused"] and listed[0]["next"] == []


def test_executor_cache_and_adapters_are_run_config_fields_too(tmp_path: Path):
    (tmp_path / "scale.toml").write_text(
        '[scaled]\npipeline = "hello_world"\ninterval = "1h"\nasync_driver = false\n'
        'executor = { type = "dask", address = "tcp://10.0.0.5:8786" }\n'
        'cache = { path = "/var/cache/flowerd" }\nwith_adapter = { progressbar = true }\n'
    )
    [s] = load_schedules(tmp_path)
    kwargs = s.run_config_kwargs()
    assert kwargs["executor"] == {"type": "dask", "address": "tcp://10.0.0.5:8786"}
    assert kwargs["cache"] == {"path": "/var/cache/flowerd"}
    assert kwargs["with_adapter"] == {"progressbar": True}


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 * 1024**3), ("512MiB", 512 * 1024**2), ("1.5GB", 1_500_000_000),
     ("64 mib", 64 * 1024**2), (100_000_000, 100_000_000), ("3GB", 3_000_000_000)],
)  # fmt: skip
def test_isolation_and_memory_limit(tmp_path, text, size):
    limit = f'"{text}"' if isinstance(text, str) else text
    write(tmp_path, "a.toml", f'[p]\npipeline = "p"\ncron = "* * * * *"\nisolation = "process"\n'
          f"memory_limit = {limit}\n[t]\npipeline = \"p\"\ncron = \"* * * * *\"\n")  # fmt: skip
    process, thread = load_schedules(tmp_path)
    assert (process.isolation, process.memory_limit_bytes) == ("process", size)
    assert (thread.isolation, thread.memory_limit_bytes) == ("thread", None)


def test_isolation_defaults_to_the_setting(tmp_path):
    write(tmp_path, "a.toml", '[s]\npipeline = "p"\ncron = "* * * * *"\nmemory_limit = "1GiB"\n')
    [s] = load_schedules(tmp_path, default_isolation="process")
    assert (s.isolation, s.memory_limit_bytes) == ("process", 1024**3)
    with pytest.raises(ValueError, match="memory_limit needs isolation"):
        Schedule(id="a", file=Path("a.toml"), pipeline="p", cron="* * * * *",
                 memory_limit_bytes=1024**3)  # fmt: skip
