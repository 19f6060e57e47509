"""Schedules checked end to end (daemon/serve/validate.py): every problem of every phase in one
run, each naming file, schedule and field; inputs converted to the annotated types the
same way from schedule files and from `--input`; the real CLI and `serve` on top."""

from __future__ import annotations

import json
import os
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hamilton import driver

from daemon.errors import InputTypeError, ScheduleError
from daemon.inputs import convert_input
from daemon.pipeline import Pipelines, RunConfig
from daemon.serve.validate import load_and_validate
from daemon.settings import load_settings
from tests.serve import cli, cli_here, make_project, runs

TYPED = """
from datetime import date, datetime


def summary(seconds: float, day: date, when: datetime, count: int, label: str) -> str:
    return f"{seconds!r} {day.isoformat()} {when.isoformat()} {count!r} {label}"
"""

PARALLEL = """
from hamilton.htypes import Collect, Parallelizable


def item(n: int) -> Parallelizable[int]:
    yield from range(n)


def doubled(item: int) -> int:
    return 2 * item


def final(doubled: Collect[int]) -> int:
    return sum(doubled) * 10
"""

TYPED_TOML = """
[typed]
pipeline = "typed"
interval = "1h"
async_driver = false
inputs = { seconds = 60, day = "2026-12-01", when = "2026-12-01T09:00:00+01:00", count = 3, label = "x" }
"""  # noqa: E501


def _validate(base: Path):
    settings = load_settings(base)
    return load_and_validate(settings, Pipelines(base, pipelines_dir=settings.pipelines_dir))


def _raw(base: Path, name: str, final_vars: list[str], inputs: dict, *, dynamic=False) -> dict:
    import importlib
    import sys

    sys.path.insert(0, str(base / "pipelines"))
    try:
        module = importlib.import_module(name)
        builder = driver.Builder().with_modules(module)
        if dynamic:
            builder = builder.enable_dynamic_execution(allow_experimental_mode=True)
        return builder.build().execute(final_vars, inputs=inputs)
    finally:
        sys.path.remove(str(base / "pipelines"))
        sys.modules.pop(name, None)


def test_schedule_inputs_become_the_annotated_types(tmp_path: Path):
    base = make_project(tmp_path, TYPED_TOML, typed=TYPED)
    [schedule], warnings = _validate(base)
    assert warnings == []
    expected = _raw(
        base,
        "typed",
        ["summary"],
        {
            "seconds": 60.0,
            "day": date(2026, 12, 1),
            "when": datetime(2026, 12, 1, 9, tzinfo=timezone(timedelta(hours=1))),
            "count": 3,
            "label": "x",
        },
    )
    pm = Pipelines(base)
    assert pm.run("typed", RunConfig(**schedule.run_config_kwargs())) == expected
    assert expected == {"summary": "60.0 2026-12-01 2026-12-01T09:00:00+01:00 3 x"}
    # the same conversion from the command line's strings
    strings = {"seconds": "60", "day": "2026-12-01", "when": "2026-12-01T09:00:00+01:00"}
    typed = pm.typed_inputs("typed", {**strings, "count": "3", "label": "x"}, async_driver=False)
    assert typed == dict(schedule.inputs) and type(typed["seconds"]) is float


@pytest.mark.parametrize(
    ("value", "annotation", "converted"),
    [
        (60, float, 60.0),
        ("60", float, 60.0),
        ("2026-12-01", date, date(2026, 12, 1)),
        (2.0, int, 2),
        ("yes", bool, True),
        ("[1, 2]", list[int], [1, 2]),
        ([1, 2], tuple, (1, 2)),
        (5, float | None, 5.0),
        (None, float | None, None),
        ("x", str, "x"),
    ],
)
def test_conversions_that_lose_nothing(value, annotation, converted):
    result = convert_input("v", value, annotation)
    assert result == converted and type(result) is type(converted)


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        ("soon", float, "input 'v': expected float, given str \"soon\""),
        (2.5, int, "input 'v': expected int, given float 2.5"),
        (2**60 + 1, float, "input 'v': expected float, given int"),
        (True, int, "input 'v': expected int, given bool True"),
        (datetime(2026, 1, 1, 9), date, "input 'v': expected date, given datetime"),
        (5, str, "input 'v': expected str, given int 5"),
        ("2026-13-01", date, "input 'v': expected date, given str"),
    ],
)
def test_conversions_that_would_lose_something_are_named_errors(value, annotation, message):
    with pytest.raises(InputTypeError, match="^" + message.replace("(", r"\(")) as err:
        convert_input("v", value, annotation)
    assert err.value.field == "inputs.v"


def test_validate_reports_every_phase_in_one_run(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [bad_cron]
        pipeline = "hello_world"
        cron = "61 * * * *"

        [typo]
        pipeline = "hello_world"
        interval = "1h"
        final_vars = ["full_greting"]

        [par_async]
        pipeline = "par"
        interval = "1h"
        inputs = { n = 3 }

        [par_sync]
        pipeline = "par"
        interval = "1h"
        async_driver = false
        inputs = { n = 3 }

        [bad_input]
        pipeline = "typed"
        interval = "1h"
        async_driver = false
        inputs = { seconds = "soon", day = "2026-12-01", when = "2026-12-01T09:00:00Z", count = 1, label = "x" }
        """,  # noqa: E501
        par=PARALLEL,
        typed=TYPED,
    )
    (base / "pipelines" / "raises.py").write_text("raise RuntimeError('no config file')\n")
    (base / "schedules" / "more.toml").write_text(
        '[raises]\npipeline = "raises"\ninterval = "1h"\n'
        '[no_such]\npipeline = "nowhere"\ninterval = "1h"\n'
    )
    with pytest.raises(ScheduleError) as caught:
        _validate(base)
    problems = "\n".join(caught.value.problems)
    assert "test.toml: [bad_cron] field 'cron'" in problems
    assert "[typo] field 'final_vars'" in problems and "did you mean 'full_greeting'" in problems
    assert "[par_async] field 'async_driver'" in problems and "Parallelizable" in problems
    assert "[par_sync]" not in problems
    assert "[bad_input] field 'inputs.seconds'" in problems
    assert 'expected float, given str "soon"' in problems
    assert "more.toml: [raises] field 'pipeline'" in problems and "RuntimeError" in problems
    assert "more.toml: [no_such] field 'pipeline'" in problems
    assert len(caught.value.problems) == 6


def test_the_cli_validates_serves_and_runs_alike(tmp_path: Path):
    base = make_project(
        tmp_path,
        """
        [bad_cron]
        pipeline = "hello_world"
        cron = "61 * * * *"

        [par]
        pipeline = "par"
        interval = "1h"
        inputs = { n = 4 }
        """,
        par=PARALLEL,
    )
    done = cli_here(base, "validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "[bad_cron] field 'cron'" in done.stderr and "[par] field 'async_driver'" in done.stderr
    served = cli(base, "serve", timeout_s=60)
    assert served.returncode == 1 and "Traceback" not in served.stderr
    assert "[bad_cron]" in served.stderr and "[par] field 'async_driver'" in served.stderr
    # the Parallelizable pipeline itself runs with --sync, as raw Hamilton runs it
    done = cli(base, "run", "par", "--sync", "--input", "n=4", "--json")
    assert done.returncode == 0, done.stderr
    expected = _raw(base, "par", ["final"], {"n": 4}, dynamic=True)
    record = json.loads(done.stdout)
    assert expected == {"final": 120} and record["status"] == "success"
    assert "120" in record["result_summary"]
    (row,) = runs(base)
    assert row.status == "success"
    done = cli(base, "run", "par", "--input", "n=4")  # the async driver: refused, named
    assert done.returncode == 1 and "async_driver = false" in done.stderr
    assert "Traceback" not in done.stderr


def test_toml_dates_and_strings_for_a_datetime_input(tmp_path: Path):
    base = make_project(
        tmp_path,
        textwrap.dedent(
            """
            [native]
            pipeline = "typed"
            interval = "1h"
            async_driver = false
            inputs = { seconds = 1.5, day = 2026-12-01, when = 2026-12-01T09:00:00Z, count = 2, label = "y" }
            """  # noqa: E501
        ),
        typed=TYPED,
    )
    [schedule], _ = _validate(base)
    result = Pipelines(base).run("typed", RunConfig(**schedule.run_config_kwargs()))
    assert result == {"summary": "1.5 2026-12-01 2026-12-01T09:00:00+00:00 2 y"}


GREET = """
def greeting(name: {annotation}) -> str:
    return f"hello {{name}}"
"""
GREET_TOML = "".join(
    f'[g{i}]\npipeline = "greet"\ninterval = "1h"\nasync_driver = false\n'
    f'final_vars = ["greeting"]\ninputs = {{ name = "n{i}" }}\n'
    for i in range(3)
)


def test_a_reload_checks_again_only_what_changed_and_sees_a_pipeline_edit(tmp_path: Path):
    """Unchanged tables of an unchanged pipeline come back as they were checked (the same
    objects); an edit of the pipeline -- its input now an int, the file's size and mtime
    as they were -- is checked again, and refused naming file, schedule and field."""
    base = make_project(tmp_path, GREET_TOML, greet=GREET.format(annotation="str"))
    first, _ = _validate(base)
    again, _ = _validate(base)
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True, True]
    module = base / "pipelines" / "greet.py"
    stat = module.stat()
    module.write_text(GREET.format(annotation="int"))
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert module.stat().st_size == stat.st_size
    with pytest.raises(ScheduleError) as caught:
        _validate(base)
    assert len(caught.value.problems) == 3
    assert caught.value.problems[0].startswith("schedules/")
    assert "[g0] field 'inputs.name'" in caught.value.problems[0], caught.value.problems
    module.write_text(GREET.format(annotation="str"))
    assert [s.inputs["name"] for s in _validate(base)[0]] == ["n0", "n1", "n2"]
