"""The `Schedule` record: one schedule, frozen and keyword-only, as the rest of flowerd
sees it once its table has been read (daemon.schedule.table) -- when it fires, what it
runs and how.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from daemon.durations import format_seconds
from daemon.schedule.notify_on import DEFAULT_NOTIFY_ON
from daemon.secrets import MASK

Overlap = Literal["skip", "queue", "allow"]
Catchup = Literal["none", "latest", "all"]
Isolation = Literal["thread", "process"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "queue", "allow")
CATCHUP_POLICIES: tuple[str, ...] = ("none", "latest", "all")
ISOLATIONS: tuple[str, ...] = ("thread", "process")


@dataclass(frozen=True, kw_only=True)
class FileTrigger:
    """`on_file`: a directory watched for files (daemon.incoming.files). `path` as written
    (relative to the base dir, or absolute); `pattern` a glob on the file name."""

    path: str
    pattern: str = "*"
    settle_s: float = 1.0
    recursive: bool = False

    def describe(self) -> str:
        deep = " (recursive)" if self.recursive else ""
        return f"on file {self.path}/{self.pattern}{deep}, settle {format_seconds(self.settle_s)}"

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "pattern": self.pattern,
            "settle": self.settle_s,
            "recursive": self.recursive,
        }


@dataclass(frozen=True, kw_only=True)
class WebhookTrigger:
    """`on_webhook`: a signed `POST /hooks/{id}` starts a run (daemon.http.hooks). `secret`
    as written -- a reference (daemon.secrets) the daemon resolves, never its value."""

    secret: str

    def to_json(self, schedule_id: str) -> dict:
        """What `schedules --json` shows: where to send, never the secret (nor where it lives)."""
        return {"path": f"/hooks/{schedule_id}", "secret": MASK}


@dataclass(frozen=True, kw_only=True, slots=True)  # 10,000 of them in a daemon
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
    # who is told (daemon/tell/notifications.py): Apprise URLs (None: the `notify` setting), and
    # when
    notify: tuple[str, ...] | None = None
    notify_on: tuple[str, ...] = DEFAULT_NOTIFY_ON
    # where it runs: in the daemon ("thread") or in a worker process (daemon.runner.workers)
    isolation: Isolation = "thread"
    memory_limit_bytes: int | None = None  # process isolation only: the worker's RLIMIT_AS
    # across schedules (DESIGN.md "Across schedules"): calendars (daemon.schedule.calendars)
    exclude: tuple[date, ...] = ()
    holidays: str | None = None
    pause_after_failures: int = 0  # daemon.orchestration.failures: pause after N failures in a row
    # daemon.orchestration.deadlines: told `late` once past slot + deadline (0: none)
    deadline_s: float = 0
    pool: str | None = None  # daemon.runner.pools: a limit shared with the pool's other schedules
    after: tuple[str, ...] = ()  # daemon.orchestration.upstream: instead of cron/interval/at
    on_file: FileTrigger | None = None  # daemon.incoming.files: files that land start runs
    on_webhook: WebhookTrigger | None = None  # daemon.http.hooks: a signed POST starts a run
    max_pending: int = 1_000  # daemon.incoming.journal: events held while paused / disabled
    otel: bool = True  # daemon.observe.otel: its runs' spans sent when [otel] is configured
    # daemon.observe.hamilton_ui / .openlineage: false keeps its runs from that sink
    hamilton_ui: bool = True
    openlineage: bool = True

    def __post_init__(self) -> None:
        # written for 10,000 schedules read at start-up: plain attribute reads, no ABC
        # checks where a value's type says it (it was half the cost of building one)
        triggers = (
            (self.cron is not None)
            + (self.interval_s is not None)
            + (self.at is not None)
            + bool(self.after)
            + bool(self.on_file)
            + bool(self.on_webhook)
        )
        if triggers != 1:
            raise ValueError(
                f"schedule {self.id!r}: give exactly one of cron, interval_s, at, after, "
                "on_file, on_webhook"
            )
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError(f"schedule {self.id!r}: `at` must be timezone-aware")
        if self.memory_limit_bytes is not None and self.isolation != "process":
            raise ValueError(f"schedule {self.id!r}: memory_limit needs isolation = 'process'")
        setattr_ = object.__setattr__
        setattr_(self, "inputs", _frozen_mapping(self.inputs))
        setattr_(self, "config", _frozen_mapping(self.config))
        setattr_(self, "with_adapter", _frozen_mapping(self.with_adapter))
        for name in ("cache", "executor"):
            if type(getattr(self, name)) not in _PLAIN and isinstance(getattr(self, name), Mapping):
                setattr_(self, name, _freeze(getattr(self, name)))
        if self.notify is not None:
            setattr_(self, "notify", tuple(self.notify))
        for name in _TUPLE_FIELDS:
            if type(getattr(self, name)) is not tuple:  # noqa: E721 - exactly a tuple
                setattr_(self, name, tuple(getattr(self, name)))

    @property
    def event_triggers(self) -> tuple[str, ...]:
        """The event triggers it has (`on_file`, `on_webhook`): runs the world starts."""
        return tuple(name for name in ("on_file", "on_webhook") if getattr(self, name, None))

    @property
    def has_clock(self) -> bool:
        """Fired by the clock (cron / interval / at): not `after`, not an event."""
        return not self.after and not self.event_triggers

    @property
    def trigger_kind(self) -> Literal["cron", "interval", "at", "after", "on_file", "on_webhook"]:
        if self.event_triggers:
            return self.event_triggers[0]  # type: ignore[return-value]
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
        `after extract, prices`, `on webhook POST /hooks/deploy`."""
        if self.after:
            return f"after {', '.join(self.after)}"
        if self.on_file is not None:
            return self.on_file.describe()
        if self.on_webhook is not None:
            return f"on webhook POST /hooks/{self.id}"
        if self.cron is not None:
            return f"cron {self.cron!r}"
        if self.interval_s is not None:
            return f"every {format_seconds(self.interval_s)}"
        assert self.at is not None
        return f"at {self.at.isoformat()}"

    def fingerprint(self) -> str:
        """A digest of everything the schedule says: equal digests, equal schedules. What
        `flowerd schedules` compares with what the running daemon fires."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def driver_shape(self) -> tuple:
        """What shapes the driver its runs build: the run config but the inputs. Equal
        shapes, one driver (10,000 schedules of one pipeline build and check it once)."""
        return (
            self.pipeline,
            self.final_vars,
            repr(self.config),
            self.additional_modules,
            self.async_driver,
            self.log_level,
            self.max_retries,
            self.retry_delay,
            self.jitter_factor,
            self.retry_exceptions,
            repr(self.cache),
            repr(self.executor),
            repr(self.with_adapter),
        )

    def raw_inputs(self) -> dict[str, Any]:
        """`inputs` as plain (mutable, fresh) dicts and lists, as run_config_kwargs gives them."""
        return _thaw(self.inputs)

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


_EMPTY: Mapping[str, Any] = MappingProxyType({})  # shared by the schedules that set none
_TUPLE_FIELDS = (
    "final_vars",
    "additional_modules",
    "retry_exceptions",
    "notify_on",
    "exclude",
    "after",
)


# the types TOML's scalars come as: frozen already (a type check, not two ABC checks)
_PLAIN = frozenset({str, int, float, bool, type(None), date, datetime})


def _frozen_mapping(value: Any) -> Mapping[str, Any]:
    """`inputs`, `config`, `with_adapter`: a read-only mapping (the shared empty one for none)."""
    if not value:
        return _EMPTY
    return _freeze(value) or _EMPTY


def _freeze(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
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
