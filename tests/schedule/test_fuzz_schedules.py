"""Fuzzing schedule files: whatever a table holds, loading it gives Schedules or one
ScheduleError naming file, id and field -- never another exception, never a traceback."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import ScheduleError
from daemon.schedule import load_schedules

FIELDS = [
    "pipeline", "cron", "interval", "at", "timezone", "enabled", "final_vars", "inputs",
    "config", "additional_modules", "async_driver", "log_level", "max_retries", "retry_delay",
    "jitter_factor", "retry_exceptions", "timeout", "overlap", "catchup", "misfire_grace",
    "jitter", "cache", "executor", "with_adapter", "cronn", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "* * * * *",
            "61 * * * *",
            "30 2 * * *",
            "@daily",
            "5m",
            "-1s",
            "0",
            "1e9",
            "Europe/Berlin",
            "Mars/Olympus",
            "hello_world",
            "../x",
            "2026-12-01T09:00:00+01:00",
            "skip",
            "queue",
            "all",
            "DEBUG",
            "ValueError",
            "a.b.C",
            "",
        ]
    ),  # fmt: skip
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
tables = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)
documents = st.dictionaries(st.text(min_size=1, max_size=8), tables | scalars, max_size=3)


def _toml(document: dict) -> str | None:
    """The document as TOML text, or None when TOML cannot hold it (None, NaN keys...)."""
    import json

    lines = []
    try:
        for key, table in document.items():
            if isinstance(table, dict):
                lines.append(f"[{json.dumps(key)}]")
                lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in table.items()]
            else:
                lines.insert(0, f"{json.dumps(key)} = {_value(table)}")
    except TypeError:
        return None
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return text  # bad TOML is input too: it must be reported, not crash
    return text


def _value(value) -> str:
    import json
    import math

    if value is None:
        raise TypeError("TOML has no null")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + "}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents)
def test_any_schedule_file_loads_or_names_its_problems(tmp_path_factory, document):
    text = _toml(document)
    if text is None:
        return
    directory: Path = tmp_path_factory.mktemp("schedules")
    (directory / "fuzz.toml").write_text(text)
    try:
        schedules = load_schedules(directory, pipelines_dir=None)
    except ScheduleError as exc:
        assert exc.problems and all("fuzz.toml" in p for p in exc.problems), exc.problems
        return
    for schedule in schedules:
        assert schedule.pipeline and schedule.trigger_kind in ("cron", "interval", "at")
