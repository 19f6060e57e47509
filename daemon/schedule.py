"""Schedule files -> frozen `Schedule` records, with errors that name file, schedule and field.

Every `*.toml` in the schedules directory holds schedules; each top-level table is one
schedule, keyed by its id (`[a-z0-9_-]+`, unique across all files). `load_schedules`
reads them all and raises one `ScheduleError` listing *every* problem it found, one
line each: `schedules/etl.toml: [nightly] field 'cron': ...`.

pydantic parses the tables (strict types: TOML has real booleans and numbers, so
`enabled = "yes"` is an error, not a guess); everything past the parse is a frozen,
keyword-only dataclass. Cron expressions are parsed by daemon/cron.py (`parse_cron`),
into the explicit value sets `daemon.trigger` schedules from. This module imports
neither Hamilton nor APScheduler.
"""

from __future__ import annotations

import builtins
import json
import keyword
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from daemon.calendars import check_holidays, parse_date
from daemon.cron import CronSpec, parse_cron
from daemon.durations import parse_bytes, parse_duration_s
from daemon.errors import ScheduleError, did_you_mean
from daemon.notify import DEFAULT_NOTIFY_ON, check_states
from daemon.upstream import graph_problems

__all__ = [
    "CronSpec",
    "Schedule",
    "load_schedules",
    "parse_cron",
]

Overlap = Literal["skip", "queue", "allow"]
Catchup = Literal["none", "latest", "all"]
Isolation = Literal["thread", "process"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "queue", "allow")
CATCHUP_POLICIES: tuple[str, ...] = ("none", "latest", "all")
ISOLATIONS: tuple[str, ...] = ("thread", "process")
MIN_MEMORY_LIMIT = 16 * 1024**2  # below this no Python process can even start
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SCHEDULE_ID = re.compile(r"[a-z0-9_-]+")
TRIGGER_FIELDS: tuple[str, ...] = ("cron", "interval", "at")
# inputs flowerd passes to a pipeline that declares them: the slot's time (aware, in the
# schedule's timezone) and the run's id; reserved, so never set in `inputs`
SLOT_INPUTS: tuple[str, ...] = ("scheduled_at", "run_id")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One schedule: when (`cron` | `interval_s` | `at`, in `timezone`), what, and how.

    `inputs` and `config` are frozen (read-only mappings, lists become tuples);
    `run_config_kwargs()` gives them back as plain dicts and lists for a RunConfig."""

    id: str
    file: Path
    pipeline: str
    cron: str | None = None
    interval_s: float | None = None
    at: datetime | None = None
    timezone: str = "UTC"
    enabled: bool = True
    # what to run: RunConfig fields, same names as the Python API
    final_vars: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    additional_modules: tuple[str, ...] = ()
    async_driver: bool = True
    log_level: str | None = None
    max_retries: int = 0
    retry_delay: float = 1.0
    jitter_factor: float = 0.1
    retry_exceptions: tuple[str, ...] = ("Exception",)
    cache: bool | Mapping[str, Any] = field(default=False, hash=False)
    executor: str | Mapping[str, Any] | None = field(default=None, hash=False)
    with_adapter: Mapping[str, bool] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # how to schedule it
    timeout_s: float = 0
    overlap: Overlap = "skip"
    catchup: Catchup = "latest"
    misfire_grace_s: float = 60
    jitter_s: float = 0
    # who is told (daemon/notify.py): Apprise URLs (None: the `notify` setting), and when
    notify: tuple[str, ...] | None = None
    notify_on: tuple[str, ...] = DEFAULT_NOTIFY_ON
    # where it runs: in the daemon ("thread") or in a worker process (daemon.workers)
    isolation: Isolation = "thread"
    memory_limit_bytes: int | None = None  # process isolation only: the worker's RLIMIT_AS
    # across schedules (DESIGN.md "Across schedules"): calendars (daemon.calendars)
    exclude: tuple[date, ...] = ()
    holidays: str | None = None
    pause_after_failures: int = 0  # daemon.failures: pause after N failures in a row
    deadline_s: float = 0  # daemon.deadlines: told `late` once past slot + deadline (0: none)
    pool: str | None = None  # daemon.pools: a limit shared with the pool's other schedules
    after: tuple[str, ...] = ()  # daemon.upstream: instead of cron/interval/at

    def __post_init__(self) -> None:
        given = [name for name in ("cron", "interval_s", "at") if getattr(self, name) is not None]
        if len(given) + bool(self.after) != 1:
            raise ValueError(
                f"schedule {self.id!r}: give exactly one of cron, interval_s, at, after"
            )
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError(f"schedule {self.id!r}: `at` must be timezone-aware")
        if self.memory_limit_bytes is not None and self.isolation != "process":
            raise ValueError(f"schedule {self.id!r}: memory_limit needs isolation = 'process'")
        for name in ("inputs", "config", "with_adapter"):
            object.__setattr__(self, name, _freeze(dict(getattr(self, name))))
        for name in ("cache", "executor"):
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, _freeze(dict(getattr(self, name))))
        if self.notify is not None:
            object.__setattr__(self, "notify", tuple(self.notify))
        for name in (
            "final_vars",
            "additional_modules",
            "retry_exceptions",
            "notify_on",
            "exclude",
            "after",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def trigger_kind(self) -> Literal["cron", "interval", "at", "after"]:
        if self.after:
            return "after"
        if self.cron is not None:
            return "cron"
        return "interval" if self.interval_s is not None else "at"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe_trigger(self) -> str:
        """`cron '30 2 * * *'`, `every 30s`, `at 2026-12-01T09:00:00+01:00`,
        `after extract, prices`."""
        if self.after:
            return f"after {', '.join(self.after)}"
        if self.cron is not None:
            return f"cron {self.cron!r}"
        if self.interval_s is not None:
            return f"every {format_seconds(self.interval_s)}"
        assert self.at is not None
        return f"at {self.at.isoformat()}"

    def run_config_kwargs(self) -> dict[str, Any]:
        """The RunConfig keyword arguments, as plain (mutable, fresh) lists and dicts."""
        return {
            "final_vars": list(self.final_vars),
            "inputs": _thaw(self.inputs),
            "config": _thaw(self.config),
            "additional_modules": list(self.additional_modules),
            "async_driver": self.async_driver,
            "log_level": self.log_level,
            "max_retries": self.max_retries,
            "retry_delay": self.retry_delay,
            "jitter_factor": self.jitter_factor,
            "retry_exceptions": list(self.retry_exceptions),
            "cache": _thaw(self.cache) or None,
            "executor": _thaw(self.executor),
            "with_adapter": _thaw(self.with_adapter) or None,
        }


def format_seconds(seconds: float) -> str:
    """90 -> '90s', 300 -> '5m', 7200 -> '2h', 86400 -> '1d', 0.5 -> '0.5s'."""
    for unit, size_s in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size_s and seconds % size_s == 0:
            return f"{int(seconds // size_s)}{unit}"
    return f"{seconds:g}s"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# --------------------------------------------------------------------------- parsing


class _Table(BaseModel):
    """One schedule table as written in TOML (field names as users write them)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    pipeline: str
    cron: str | None = None
    interval: float | str | None = None
    at: datetime | None = None
    timezone: str | None = None
    enabled: bool = True
    final_vars: list[str] = []
    inputs: dict[str, Any] = {}
    config: dict[str, Any] = {}
    additional_modules: list[str] = []
    async_driver: bool = True
    log_level: str | None = None
    max_retries: int = 0
    retry_delay: float | str = 1.0
    jitter_factor: float = 0.1
    retry_exceptions: list[str] = ["Exception"]
    cache: bool | dict[str, Any] = False
    executor: str | dict[str, Any] | None = None
    with_adapter: dict[str, bool] = {}
    timeout: float | str = 0
    overlap: str = "skip"
    catchup: str = "latest"
    misfire_grace: float | str = 60
    jitter: float | str = 0
    notify: list[str] | None = None
    notify_on: list[str] = list(DEFAULT_NOTIFY_ON)
    isolation: str | None = None
    memory_limit: str | int | None = None
    exclude: list[Any] = []
    holidays: str | None = None
    pause_after_failures: int = 0
    deadline: float | str = 0
    pool: str | None = None
    after: list[str] | None = None

    @field_validator("pipeline")
    @classmethod
    def _plain_pipeline(cls, value: str) -> str:
        return _plain_module_name(value)

    @field_validator("additional_modules")
    @classmethod
    def _plain_modules(cls, value: list[str]) -> list[str]:
        return [_plain_module_name(name, dotted=True) for name in value]

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid cron expression ({exc})") from None
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float | str | None) -> float | None:
        if value is None:
            return None
        seconds = parse_duration_s(value)
        if seconds <= 0:
            raise ValueError(f"{value!r}: the interval must be more than 0 seconds")
        return seconds

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an ISO-8601 date-time (2026-12-01T09:00:00+01:00)"
                ) from None
        if value is not None and not isinstance(value, datetime):
            raise ValueError(f"{value} is not a date-time (write 2026-12-01T09:00:00+01:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            known_zone(value)
        return value

    @field_validator("retry_delay", "timeout", "misfire_grace", "jitter")
    @classmethod
    def _seconds(cls, value: float | str) -> float:
        return parse_duration_s(value)

    @field_validator("max_retries", "jitter_factor")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"{value!r} cannot be negative")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value.upper(), LOG_LEVELS)

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, value: str) -> str:
        return _one_of(value, OVERLAP_POLICIES)

    @field_validator("catchup")
    @classmethod
    def _catchup(cls, value: str) -> str:
        return _one_of(value, CATCHUP_POLICIES)

    @field_validator("notify")
    @classmethod
    def _notify_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or ():
            if "://" not in url:  # Apprise checks the rest (`flowerd validate`, serve)
                raise ValueError("each entry is an Apprise URL (mailto://, json://, ...)")
        return value

    @field_validator("notify_on")
    @classmethod
    def _notify_states(cls, value: list[str]) -> list[str]:
        return check_states(value)

    @field_validator("inputs")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_not_reserved(value)
        return value

    @field_validator("isolation")
    @classmethod
    def _isolation(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value, ISOLATIONS)

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, value: str | int | None) -> int | None:
        if value is None:
            return None
        size = parse_bytes(value)
        if size < MIN_MEMORY_LIMIT:
            raise ValueError(
                f"{value!r} is too small for a worker process (at least 16MiB; the limit "
                "is the worker's whole address space, Python and Hamilton included)"
            )
        return size

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: list[Any]) -> list[date]:
        return [parse_date(day) for day in value]

    @field_validator("after")
    @classmethod
    def _after(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("names no schedule; list the schedules this one runs after")
        return value

    @field_validator("pause_after_failures")
    @classmethod
    def _pause_after(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"{value} must be 0 (never) or more")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: float | str) -> float:
        seconds = parse_duration_s(value)
        if seconds < 0:
            raise ValueError(f"{value!r}: a deadline is 0 (none) or more")
        return seconds

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: str | None) -> str | None:
        return None if value is None else check_holidays(value)

    @field_validator("retry_exceptions")
    @classmethod
    def _exception_names(cls, value: list[str]) -> list[str]:
        return [_exception_name(name) for name in value]


TABLE_FIELDS: tuple[str, ...] = tuple(_Table.model_fields)


def check_not_reserved(inputs: Iterable[str]) -> None:
    """ValueError naming the reserved input names (SLOT_INPUTS) among `inputs`."""
    reserved = [name for name in inputs if name in SLOT_INPUTS]
    if reserved:
        names = " and ".join(repr(name) for name in reserved)
        raise ValueError(
            f"{names} {'is' if len(reserved) == 1 else 'are'} reserved: flowerd passes the "
            "slot's time as `scheduled_at` and the run's id as `run_id` to a pipeline that "
            "declares them; remove it from the inputs"
        )


def known_zone(name: str) -> ZoneInfo:
    """ZoneInfo(name); ValueError "unknown IANA timezone 'x'" for anything else."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown IANA timezone {name!r} (write e.g. 'UTC', 'Europe/Berlin')"
        ) from None


def _plain_module_name(name: str, *, dotted: bool = False) -> str:
    parts = name.split(".") if dotted else [name]
    if not all(p.isidentifier() and p.isascii() and not keyword.iskeyword(p) for p in parts):
        raise ValueError(
            f"{name!r} is not a plain module name (a Python identifier naming a module "
            "in pipelines/: no paths, no dots, no '.py')"
            if not dotted
            else f"{name!r} is not a module name (a module in pipelines/ or a dotted "
            "pkg.mod: no paths, no '.py')"
        )
    return name


def _exception_name(name: str) -> str:
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ValueError(f"{name!r} is not an exception class name (ValueError, pkg.mod.Error)")
    found = getattr(builtins, name, None) if len(parts) == 1 else None
    if len(parts) == 1 and not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(
            f"{name!r} is not a builtin exception; give a dotted path (package.module.{name})"
        )
    return name


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(
            f"{value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}"
        )
    return value


# --------------------------------------------------------------------------- loading


def load_schedules(
    directory: Path,
    *,
    default_timezone: str = "UTC",
    pipelines_dir: Path | None = None,
    default_isolation: str = "thread",
) -> list[Schedule]:
    """Every schedule in `directory/*.toml` (files sorted by name, tables in file order).

    Raises `ScheduleError` listing every problem in every file. A missing directory
    holds no schedules. With `pipelines_dir`, each pipeline must be a module there.
    `default_timezone` and `default_isolation` apply where a schedule sets none."""
    schedules, problems = read_schedules(
        directory,
        default_timezone=default_timezone,
        pipelines_dir=pipelines_dir,
        default_isolation=default_isolation,
    )
    if problems:
        raise ScheduleError(problems)
    return schedules


def read_schedules(
    directory: Path,
    *,
    default_timezone: str = "UTC",
    pipelines_dir: Path | None = None,
    default_isolation: str = "thread",
) -> tuple[list[Schedule], list[str]]:
    """(the valid schedules, every problem): `flowerd validate` goes on to check the
    valid schedules' pipelines, so one run reports every problem of every phase."""
    directory = Path(directory)
    if not directory.is_dir():
        return [], []
    schedules: list[Schedule] = []
    problems: list[str] = []
    ids: list[tuple[str, Path]] = []
    defaults = _Defaults(timezone=default_timezone, isolation=default_isolation)
    for path in sorted(directory.glob("*.toml")):
        found, file_problems, file_ids = _load_file(path, defaults)
        schedules += found
        problems += file_problems
        ids += [(schedule_id, path) for schedule_id in file_ids]
    problems += _duplicate_ids(ids)
    problems += graph_problems(schedules, known=[schedule_id for schedule_id, _ in ids])
    if pipelines_dir is not None:
        problems += _missing_pipelines(schedules, Path(pipelines_dir))
        schedules = [s for s in schedules if (Path(pipelines_dir) / f"{s.pipeline}.py").exists()]
    return schedules, problems


def validate_schedule_dir(
    directory: Path,
    *,
    default_timezone: str = "UTC",
    pipelines_dir: Path | None = None,
    default_isolation: str = "thread",
) -> list[str]:
    """Every problem in the schedule files, as lines (empty: all valid)."""
    try:
        load_schedules(
            directory,
            default_timezone=default_timezone,
            pipelines_dir=pipelines_dir,
            default_isolation=default_isolation,
        )
    except ScheduleError as exc:
        return exc.problems
    return []


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # elsewhere; or a symlink loop
        return str(path)


@dataclass(frozen=True)
class _Defaults:
    """What a schedule gets for the fields it leaves out that come from settings."""

    timezone: str = "UTC"
    isolation: str = "thread"


def _load_file(path: Path, defaults: _Defaults) -> tuple[list[Schedule], list[str], list[str]]:
    """(valid schedules, problems, every table id) of one file."""
    where = display_path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line L, column C)"
        return [], [f"{where}: not valid TOML: {exc}"], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{where}: cannot read: {exc}"], []
    schedules: list[Schedule] = []
    problems: list[str] = []
    for schedule_id, table in document.items():
        schedule, table_problems = _parse_table(path, schedule_id, table, defaults)
        problems += [f"{where}: {line}" for line in table_problems]
        if schedule is not None:
            schedules.append(schedule)
    return schedules, problems, list(document)


def _parse_table(
    path: Path, schedule_id: str, table: object, defaults: _Defaults
) -> tuple[Schedule | None, list[str]]:
    if not isinstance(table, dict):
        return None, [
            f"{schedule_id!r} is a {_toml_type(table)}, not a table; each schedule is a "
            f"[section] (write [{schedule_id}] with pipeline = ... under it)"
        ]
    prefix = f"[{schedule_id}]"
    problems = [f"{prefix} {line}" for line in _shape_problems(schedule_id, table)]
    known = {key: value for key, value in table.items() if key in TABLE_FIELDS}
    try:
        parsed = _Table.model_validate(known)
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


def _isolation_source(parsed: _Table) -> str:
    return ': isolation = "thread"' if parsed.isolation else ", the isolation setting's default"


def _shape_problems(schedule_id: str, table: dict) -> list[str]:
    """Problems pydantic does not see: the id, unknown fields, the trigger count."""
    problems = []
    if not SCHEDULE_ID.fullmatch(schedule_id):
        problems.append(
            f"schedule id {schedule_id!r} may hold only a-z, 0-9, '_' and '-' (lower case)"
        )
    for key in table:
        if key not in TABLE_FIELDS:
            problems.append(f"unknown field {key!r}{did_you_mean(key, TABLE_FIELDS)}")
    triggers = [name for name in TRIGGER_FIELDS if name in table]
    if "after" in table and triggers:
        problems.append(
            f"fields 'after' and {' and '.join(repr(t) for t in triggers)}: `after` runs the "
            "schedule when its upstreams succeed; give it instead of cron, interval or at"
        )
    elif "after" in table:
        pass
    elif len(triggers) > 1:
        problems.append(
            f"fields {' and '.join(repr(t) for t in triggers)}: give only one trigger "
            "(cron, interval or at)"
        )
    elif not triggers:
        problems.append("no trigger: give one of 'cron', 'interval', 'at' or 'after'")
    return problems


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


def _localised_at(parsed: _Table, default_timezone: str) -> datetime | None:
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
    path: Path, schedule_id: str, parsed: _Table, at: datetime | None, defaults: _Defaults
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
        overlap=parsed.overlap,  # type: ignore[arg-type]  # checked by _one_of
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
    )


def _duplicate_ids(ids: list[tuple[str, Path]]) -> list[str]:
    first_file: dict[str, Path] = {}
    problems = []
    for schedule_id, path in ids:
        earlier = first_file.setdefault(schedule_id, path)
        if earlier is not path:
            problems.append(
                f"{display_path(path)}: [{schedule_id}] duplicate schedule id; "
                f"{display_path(earlier)} already has [{schedule_id}] "
                "(ids are unique across all schedule files)"
            )
    return problems


def _missing_pipelines(schedules: list[Schedule], pipelines_dir: Path) -> list[str]:
    available = sorted(p.stem for p in pipelines_dir.glob("*.py") if p.stem.isidentifier())
    problems = []
    for schedule in schedules:
        if schedule.pipeline not in available:
            problems.append(
                f"{display_path(schedule.file)}: [{schedule.id}] field 'pipeline': pipeline "
                f"{schedule.pipeline!r} not found in {display_path(pipelines_dir)} "
                f"(pipelines there: {', '.join(available) or 'none'})"
                f"{did_you_mean(schedule.pipeline, available)}"
            )
    return problems
