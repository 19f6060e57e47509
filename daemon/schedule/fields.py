"""The fields of one schedule table as users write them in TOML, checked one by one.

pydantic parses the table (strict types: TOML has real booleans and numbers, so
`enabled = "yes"` is an error, not a guess); each field's own check raises a ValueError
whose message daemon.schedule.table turns into a line naming the field. Cron
expressions are checked by daemon/schedule/cron.py (`parse_cron`).
"""

from __future__ import annotations

import builtins
import keyword
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daemon import secrets
from daemon.durations import parse_bytes, parse_duration_s
from daemon.errors import did_you_mean
from daemon.inputs import check_not_reserved
from daemon.schedule.calendars import check_holidays, parse_date
from daemon.schedule.cron import parse_cron
from daemon.schedule.notify_on import DEFAULT_NOTIFY_ON, check_states
from daemon.schedule.record import CATCHUP_POLICIES, ISOLATIONS, OVERLAP_POLICIES
from daemon.schedule.webhook import WebhookTable

MIN_MEMORY_LIMIT = 16 * 1024**2  # below this no Python process can even start
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ScheduleTable(BaseModel):
    """One schedule table as written in TOML (field names as users write them). Mutable
    defaults are factories: pydantic deep-copies a literal `[]` for every table."""

    model_config = ConfigDict(strict=True, extra="forbid")

    pipeline: str
    cron: str | None = None
    interval: float | str | None = None
    at: datetime | None = None
    timezone: str | None = None
    enabled: bool = True
    final_vars: list[str] = Field(default_factory=list)
    inputs: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    additional_modules: list[str] = Field(default_factory=list)
    async_driver: bool = True
    log_level: str | None = None
    max_retries: int = 0
    retry_delay: float | str = 1.0
    jitter_factor: float = 0.1
    retry_exceptions: list[str] = Field(default_factory=lambda: ["Exception"])
    cache: bool | dict[str, Any] = False
    executor: str | dict[str, Any] | None = None
    with_adapter: dict[str, bool] = Field(default_factory=dict)
    timeout: float | str = 0
    overlap: str | None = None  # default: "skip"; "queue" for an event trigger
    catchup: str = "latest"
    misfire_grace: float | str = 60
    jitter: float | str = 0
    notify: list[str] | None = None
    notify_on: list[str] = Field(default_factory=lambda: list(DEFAULT_NOTIFY_ON))
    isolation: str | None = None
    memory_limit: str | int | None = None
    exclude: list[Any] = Field(default_factory=list)
    holidays: str | None = None
    pause_after_failures: int = 0
    deadline: float | str = 0
    pool: str | None = None
    after: list[str] | None = None
    on_file: dict[str, Any] | None = None
    on_webhook: WebhookTable | None = None  # daemon.schedule.webhook: a signed POST starts it
    max_pending: int = 1_000  # events held while paused / disabled; past it: Overflow rows
    otel: bool = True  # its runs' spans go to [otel] (daemon.observe.otel), when configured
    hamilton_ui: bool = True
    openlineage: bool = True

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
    def _overlap(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value, OVERLAP_POLICIES)

    @field_validator("on_file")
    @classmethod
    def _on_file(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_on_file(value)

    @field_validator("catchup")
    @classmethod
    def _catchup(cls, value: str) -> str:
        return _one_of(value, CATCHUP_POLICIES)

    @field_validator("notify")
    @classmethod
    def _notify_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or ():
            if "://" not in url and not secrets.is_reference(url):  # Apprise checks the rest
                raise ValueError(
                    "each entry is an Apprise URL (mailto://, json://, ...) or a secret "
                    "reference (env:NAME, file:/path)"
                )
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

    @field_validator("max_pending")
    @classmethod
    def _max_pending(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"{value} must be 0 (keep none) or more")
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


TABLE_FIELDS: tuple[str, ...] = tuple(ScheduleTable.model_fields)
ON_FILE_KEYS: tuple[str, ...] = ("path", "pattern", "settle", "recursive")


def check_on_file(table: dict[str, Any]) -> dict[str, Any]:
    """`on_file = { path, pattern = "*", settle = "1s", recursive = false }`, checked key
    by key; returns it with `settle` in seconds."""
    problems = [
        f"unknown key {key!r}{did_you_mean(key, ON_FILE_KEYS)} (keys: {', '.join(ON_FILE_KEYS)})"
        for key in table
        if key not in ON_FILE_KEYS
    ]
    path, pattern = table.get("path"), table.get("pattern", "*")
    if not isinstance(path, str) or not path.strip():
        problems.append("'path' (a directory: relative to the base dir, or absolute) is required")
    if not isinstance(pattern, str) or not pattern or "/" in pattern:
        problems.append(f"'pattern' is a glob on the file name (\"*.csv\"), not {pattern!r}")
    if not isinstance(table.get("recursive", False), bool):
        problems.append("'recursive' is true or false")
    settle = table.get("settle", "1s")
    try:
        settle_s = parse_duration_s(settle) if isinstance(settle, str | int | float) else -1.0
    except ValueError as exc:
        problems.append(f"'settle': {exc}")
        settle_s = 0.0
    if settle_s < 0 or isinstance(settle, bool):
        problems.append(f"'settle' is a duration (\"2s\", 0.5), not {settle!r}")
    if problems:
        raise ValueError("; ".join(problems))
    return {
        "path": path.strip(),
        "pattern": pattern,
        "settle": settle_s,
        "recursive": table.get("recursive", False),
    }


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
