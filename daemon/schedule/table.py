"""One schedule table -> a `Schedule`, or the lines saying what is wrong with it.

Each line names the schedule and the field (`[nightly] field 'cron': ...`); the file is
put in front by daemon.schedule.files. pydantic's errors (daemon.schedule.fields) become
one line per field, with the types spelled as TOML spells them; what pydantic does not
see -- the id, unknown fields, how many triggers -- is checked here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from daemon.errors import SettingsError, did_you_mean
from daemon.schedule.fields import TABLE_FIELDS, ScheduleTable, known_zone
from daemon.schedule.record import FileTrigger, Schedule, WebhookTrigger
from daemon.settings import SETTINGS_FILE, Settings, setting_problem

SCHEDULE_ID = re.compile(r"[a-z0-9_-]+")
TRIGGER_FIELDS: tuple[str, ...] = ("cron", "interval", "at")
# runs the world starts (daemon.incoming): each a trigger of its own, like `after`
EVENT_FIELDS: tuple[str, ...] = ("on_file", "on_webhook")
ALL_TRIGGERS: tuple[str, ...] = (*TRIGGER_FIELDS, "after", *EVENT_FIELDS)


_KNOWN_FIELDS = frozenset(TABLE_FIELDS)  # asked of every key of 10,000 tables: a set lookup

# What makes a schedule itself: never a project-wide default.
NOT_DEFAULTS: tuple[str, ...] = ("pipeline", *ALL_TRIGGERS)


@dataclass(frozen=True)
class Defaults:
    """What a schedule gets for the fields it leaves out: the settings' timezone and
    isolation, and `[defaults]` of flowerd.toml (`fields`, which win over those two)."""

    timezone: str = "UTC"
    isolation: str = "thread"
    fields: tuple[tuple[str, Any], ...] = ()


def defaults_problems(table: Mapping[str, Any]) -> list[str]:
    """What is wrong with a `[defaults]` table: unknown keys, the fields that make a
    schedule (no default for those), values a schedule could not take."""
    allowed = [name for name in TABLE_FIELDS if name not in NOT_DEFAULTS]
    problems = []
    for key in table:
        if key in NOT_DEFAULTS:
            problems.append(f"field {key!r} is what makes a schedule; set it in each schedule")
        elif key not in TABLE_FIELDS:
            problems.append(f"unknown field {key!r}{did_you_mean(key, allowed)}")
    known = {key: value for key, value in table.items() if key in allowed}
    try:
        ScheduleTable.model_validate({"pipeline": "defaults", **known})
    except ValidationError as exc:
        problems += _field_problems(exc)
    return problems


def check_defaults(settings: Settings) -> Settings:
    """`settings` whose `[defaults]` table holds only what a schedule's fields can take;
    else a SettingsError naming each bad key. daemon.settings is below the schedule
    package, so whoever loads settings for a project (the CLI, the Python API) asks here."""
    problems = defaults_problems(settings.defaults) if settings.defaults else []
    if problems:
        toml_file = settings.base_dir / SETTINGS_FILE
        raise SettingsError(
            setting_problem("defaults", "[defaults] " + "; ".join(problems), toml_file)
        )
    return settings


def parse_table(
    path: Path, schedule_id: str, table: object, defaults: Defaults
) -> tuple[Schedule | None, list[str]]:
    if not isinstance(table, dict):
        return None, [
            f"{schedule_id!r} is a {_toml_type(table)}, not a table; each schedule is a "
            f"[section] (write [{schedule_id}] with pipeline = ... under it)"
        ]
    merged = {**dict(defaults.fields), **table}
    schedule, problems = _parse_table(path, schedule_id, merged, defaults)
    inherited = [name for name, _ in defaults.fields if name not in table]
    return schedule, [_from_defaults(line, inherited) for line in problems]


def _from_defaults(line: str, inherited: list[str]) -> str:
    """A problem with a field the schedule took from [defaults] says so."""
    for name in inherited:
        if f" field {name!r}" in line:
            return f"{line} (the value from [defaults] in flowerd.toml)"
    return line


def _parse_table(
    path: Path, schedule_id: str, table: dict, defaults: Defaults
) -> tuple[Schedule | None, list[str]]:
    prefix = f"[{schedule_id}]"
    problems = [f"{prefix} {line}" for line in _shape_problems(schedule_id, table)]
    known = {key: value for key, value in table.items() if key in _KNOWN_FIELDS}
    try:
        parsed = ScheduleTable.model_validate(known)
    except ValidationError as exc:
        return None, problems + [f"{prefix} {line}" for line in _field_problems(exc)]
    try:
        at = _localised_at(parsed, defaults.timezone)
    except ValueError as exc:
        return None, [*problems, f"{prefix} field 'at': {exc}"]
    isolation = parsed.isolation or defaults.isolation
    if parsed.memory_limit is not None and isolation != "process":
        problems.append(
            f"{prefix} field 'memory_limit': only a schedule with isolation = \"process\" can "
            f"have a memory limit (this one runs in a daemon thread{_isolation_source(parsed)}); "
            'add isolation = "process" or remove memory_limit'
        )
    if problems:
        return None, problems
    return _schedule(path, schedule_id, parsed, at, defaults), []


def _isolation_source(parsed: ScheduleTable) -> str:
    return ': isolation = "thread"' if parsed.isolation else ", the isolation setting's default"


def _shape_problems(schedule_id: str, table: dict) -> list[str]:
    """Problems pydantic does not see: the id, unknown fields, the trigger count."""
    problems = []
    if not SCHEDULE_ID.fullmatch(schedule_id):
        problems.append(
            f"schedule id {schedule_id!r} may hold only a-z, 0-9, '_' and '-' (lower case)"
        )
    for key in table:
        if key not in _KNOWN_FIELDS:
            problems.append(f"unknown field {key!r}{did_you_mean(key, TABLE_FIELDS)}")
    problems += _trigger_problems(table)
    return problems


def _trigger_problems(table: dict) -> list[str]:
    """Exactly one trigger: cron, interval, at, after, on_file or on_webhook."""
    given = [name for name in ALL_TRIGGERS if name in table]
    if not given:
        names = ", ".join(repr(name) for name in ALL_TRIGGERS[:-1])
        return [f"no trigger: give one of {names} or {ALL_TRIGGERS[-1]!r}"]
    if len(given) == 1:
        return []
    if "after" in given:  # named first: it is the one to keep or drop
        given = ["after", *(name for name in given if name != "after")]
    names = " and ".join(repr(name) for name in given)
    if "after" in given:
        return [
            f"fields {names}: `after` runs the schedule when its upstreams succeed; give it "
            "instead of cron, interval, at, on_file or on_webhook"
        ]
    return [
        f"fields {names}: give only one trigger (one of "
        + ", ".join(ALL_TRIGGERS)
        + "; a schedule that should also run on a clock is a second schedule)"
    ]


def _field_problems(exc: ValidationError) -> list[str]:
    """pydantic's errors as lines; a union's type errors become one line per field."""
    by_field: dict[str, list[dict]] = {}
    for error in exc.errors():
        by_field.setdefault(_field_name(error["loc"]), []).append(error)
    return [_field_problem(name, errors) for name, errors in by_field.items()]


def _field_problem(name: str, errors: list[dict]) -> str:
    if errors[0]["type"] == "missing":
        return f"field {name!r} is required"
    own = [e["msg"].removeprefix("Value error, ") for e in errors if e["type"] == "value_error"]
    if own:
        return f"field {name!r}: " + "; ".join(own)
    wanted = " or ".join(_unique(_TYPE_WORDS.get(e["type"], e["type"]) for e in errors))
    return f"field {name!r}: expected {wanted}, got {_toml_repr(errors[0]['input'])}"


_TYPE_WORDS = {
    "float_type": "a number",
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "datetime_type": "a date-time",
    "list_type": "an array",
    "dict_type": "a table",
    "int_from_float": "an integer",
    "model_type": "a table",
}


def _field_name(loc: tuple) -> str:
    """('final_vars', 1) -> 'final_vars[1]'; ('interval', 'float') -> 'interval'."""
    name = str(loc[0])
    for part in loc[1:]:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in ("float", "str", "int", "datetime", "bool"):
            continue  # which member of a union pydantic tried; not a place in the file
        else:
            name += f".{part}"
    return name


def _unique(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _toml_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return names.get(type(value), type(value).__name__)


def _toml_repr(value: object) -> str:
    """A value as it looks in TOML: true, 3, "text", [1, 2]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string looks like a JSON string
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _localised_at(parsed: ScheduleTable, default_timezone: str) -> datetime | None:
    """A naive `at` means wall-clock time in the schedule's timezone."""
    if parsed.at is None or parsed.at.tzinfo is not None:
        return parsed.at
    zone = known_zone(parsed.timezone or default_timezone)
    local = parsed.at.replace(tzinfo=zone)
    if local.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) != parsed.at:
        raise ValueError(
            f"{parsed.at.isoformat()} does not exist in {zone.key} (a daylight-saving "
            "gap); give an offset"
        )
    return local


def _schedule(
    path: Path, schedule_id: str, parsed: ScheduleTable, at: datetime | None, defaults: Defaults
) -> Schedule:
    return Schedule(
        id=schedule_id,
        file=path,
        pipeline=parsed.pipeline,
        cron=parsed.cron.strip() if parsed.cron is not None else None,
        interval_s=parsed.interval,  # type: ignore[arg-type]  # seconds after validation
        at=at,
        timezone=parsed.timezone or defaults.timezone,
        enabled=parsed.enabled,
        final_vars=tuple(parsed.final_vars),
        inputs=parsed.inputs,
        config=parsed.config,
        additional_modules=tuple(parsed.additional_modules),
        async_driver=parsed.async_driver,
        log_level=parsed.log_level,
        max_retries=parsed.max_retries,
        retry_delay=float(parsed.retry_delay),
        jitter_factor=float(parsed.jitter_factor),
        retry_exceptions=tuple(parsed.retry_exceptions),
        cache=parsed.cache,
        executor=parsed.executor,
        with_adapter=parsed.with_adapter,
        timeout_s=float(parsed.timeout),
        overlap=_overlap(parsed),  # type: ignore[arg-type]  # checked by _one_of
        catchup=parsed.catchup,  # type: ignore[arg-type]
        misfire_grace_s=float(parsed.misfire_grace),
        jitter_s=float(parsed.jitter),
        notify=None if parsed.notify is None else tuple(parsed.notify),
        notify_on=tuple(parsed.notify_on),
        isolation=parsed.isolation or defaults.isolation,  # type: ignore[arg-type]
        memory_limit_bytes=parsed.memory_limit,  # type: ignore[arg-type]  # bytes by now
        exclude=tuple(parsed.exclude),
        holidays=parsed.holidays,
        pause_after_failures=parsed.pause_after_failures,
        deadline_s=float(parsed.deadline),
        pool=parsed.pool,
        after=tuple(parsed.after or ()),
        on_file=_file_trigger(parsed.on_file),
        on_webhook=WebhookTrigger(secret=parsed.on_webhook.secret) if parsed.on_webhook else None,
        max_pending=parsed.max_pending,
        otel=parsed.otel,
        hamilton_ui=parsed.hamilton_ui,
        openlineage=parsed.openlineage,
    )


def _overlap(parsed: ScheduleTable) -> str:
    """Events queue by default (each one runs); slots skip."""
    if parsed.overlap is not None:
        return parsed.overlap
    events = (parsed.on_file, parsed.on_webhook)
    return "queue" if any(event is not None for event in events) else "skip"


def _file_trigger(on_file: dict | None) -> FileTrigger | None:
    if on_file is None:
        return None
    return FileTrigger(
        path=on_file["path"],
        pattern=on_file["pattern"],
        settle_s=float(on_file["settle"]),
        recursive=on_file["recursive"],
    )
