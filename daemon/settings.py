"""Settings, read once at the edge (the CLI) and passed down.

Precedence: CLI flags > FLOWERD_* environment > <base_dir>/flowerd.toml > defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daemon.errors import SettingsError, did_you_mean

SETTINGS_FILE = "flowerd.toml"
ROLES = ("viewer", "operator", "admin")  # of HTTP tokens, each may what the one before may
STATE_DIR = ".flowerd"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWERD_", extra="forbid", frozen=True)

    base_dir: Path = Path(".")
    database_url: str = ""  # empty: sqlite file <base_dir>/.flowerd/history.db
    timezone: str = "UTC"
    max_concurrent_runs: int = Field(default=16, ge=1)
    threads: int = Field(default=4, ge=1)
    shutdown_grace: float = Field(default=30.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # faults: how long the history may be unwritable before the daemon exits (systemd
    # restarts it); how large one stored input or result value may be
    history_outage_s: float = Field(default=300.0, gt=0)
    max_row_bytes: int = Field(default=64 * 1024, ge=256)
    # where a run executes unless its schedule says otherwise: thread | process
    isolation: Literal["thread", "process"] = "thread"
    # tell someone: default Apprise URLs; each run's log is kept up to this size
    notify: list[str] = Field(default_factory=list)
    max_log_bytes: int = Field(default=1024 * 1024, ge=1024)
    # see it: HOST:PORT or "off" (port 0: any free port); the token for POST endpoints
    http: str = "127.0.0.1:8787"
    http_token: str | None = None  # an admin token (see http_tokens)
    # named tokens with roles: {"alice": {"token": "env:ALICE_TOKEN", "role": "operator"}}
    # (daemon.http.auth); http_read_auth: GETs need a token too (any role)
    http_tokens: dict[str, dict[str, str]] = Field(default_factory=dict)
    http_read_auth: bool = False
    # a request's line and headers, then its body, must each arrive within this
    http_read_timeout_s: float = Field(default=10.0, gt=0)
    # the page's address as the people told see it (https://flowerd.example.com): links in
    # notifications use it; without it a notification carries no link
    public_url: str | None = None
    # retention: finished runs older than this are pruned by the daemon ("90d"); None: keep
    retention: str | None = None
    # ... except each schedule's last N runs that ended failed or timed_out (also past
    # `flowerd db prune`)
    retention_keep_failures: int = Field(default=0, ge=0)
    # several daemons on one PostgreSQL: each renews its lease every lease_s / 3
    lease_s: float = Field(default=30.0, gt=0)
    # pools shared by schedules: name -> how many runs at once
    pools: dict[str, int] = Field(default_factory=dict)
    # [defaults]: any schedule field, for every schedule that leaves it out
    defaults: dict[str, Any] = Field(default_factory=dict)
    # inside a run (daemon.observe): each wait on a tracking sink is bounded by this
    tracking_timeout_s: float = Field(default=5.0, gt=0)
    # [otel]: OpenTelemetry traces over OTLP/HTTP: endpoint (base URL), service_name
    otel: dict[str, Any] | None = None
    # [hamilton_ui]: the Hamilton UI: url, project_id, username, api_key (optional)
    hamilton_ui: dict[str, Any] | None = None
    # [openlineage]: OpenLineage run events over HTTP: url, namespace (optional)
    openlineage: dict[str, Any] | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str) -> str:
        """From any source, a plain path (or sqlite:///) becomes an aiosqlite URL."""
        return normalise_db(value) if value else value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value else None

    @field_validator("retention")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            from daemon.durations import parse_duration_s

            parse_duration_s(value)  # ValueError names the bad text
        return value

    @field_validator("http_tokens")
    @classmethod
    def _tokens(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        problems = token_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("pools")
    @classmethod
    def _pool_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for name, limit in value.items():
            if limit < 1:
                raise ValueError(f"pool {name!r} needs a limit of 1 or more, not {limit}")
        return value

    @field_validator("otel")
    @classmethod
    def _otel(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from daemon.observe.sections import check_otel

            check_otel(value)  # ValueError: what is wrong, or what to install
        return value

    @field_validator("hamilton_ui")
    @classmethod
    def _hamilton_ui(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from daemon.observe.sections import check_hamilton_ui

            check_hamilton_ui(value)
        return value

    @field_validator("openlineage")
    @classmethod
    def _openlineage(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from daemon.observe.sections import check_openlineage

            check_openlineage(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {value!r}") from exc
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # -- derived paths ---------------------------------------------------------------
    @property
    def pipelines_dir(self) -> Path:
        return self.base_dir / "pipelines"

    @property
    def schedules_dir(self) -> Path:
        return self.base_dir / "schedules"

    @property
    def state_dir(self) -> Path:
        """Where the default database, the lock and the control socket live."""
        path = sqlite_path(self.db_url)
        return path.parent if path else self.base_dir / STATE_DIR

    @property
    def db_url(self) -> str:
        return self.database_url or sqlite_url(self.base_dir / STATE_DIR / "history.db")

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "flowerd.sock"


def token_problems(tokens: Mapping[str, Mapping[str, str]]) -> list[str]:
    """`http_tokens`' shape, said per name (the settings validator's)."""
    problems = []
    for name, entry in tokens.items():
        unknown = sorted(set(entry) - {"token", "role"})
        if unknown:
            problems.append(f"{name}: unknown key(s) {', '.join(unknown)}; keys: token, role")
        if not entry.get("token"):
            problems.append(f'{name}: needs a token (e.g. token = "env:{name.upper()}_TOKEN")')
        if entry.get("role") not in ROLES:
            problems.append(f"{name}: role {entry.get('role')!r} is none of {', '.join(ROLES)}")
    return problems


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{Path(path).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (any driver), or None for in-memory, `file:` URIs
    and other databases. Parsed here without SQLAlchemy: settings is a leaf module, and
    SQLite URLs are just `sqlite[+driver]:///<path>[?query]`."""
    scheme, separator, rest = url.partition(":///")
    if not separator or scheme.split("+", 1)[0] != "sqlite":
        return None
    name = unquote(rest.split("?", 1)[0])
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).resolve()  # no expanduser: the driver opens the name as given


def normalise_db(value: str) -> str:
    """`--db` takes a URL or a plain path; a path becomes an aiosqlite URL."""
    if "://" in value:
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
        return value
    return sqlite_url(Path(value).expanduser())


def load_settings(base_dir: str | Path | None = None, **overrides: object) -> Settings:
    """Settings from flags (`overrides`, None means 'not given'), env and flowerd.toml."""
    base = Path(base_dir or os.environ.get("FLOWERD_BASE_DIR") or ".").expanduser().resolve()
    toml_file = base / SETTINGS_FILE
    given = {k: v for k, v in overrides.items() if v is not None}

    class _FromBaseDir(Settings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    try:
        return _FromBaseDir(base_dir=base, **given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, toml_file)) from None
    except (OSError, ValueError) as exc:  # unreadable or unparseable flowerd.toml
        raise SettingsError(_unreadable(exc, toml_file)) from None


def _unreadable(exc: Exception, toml_file: Path) -> str:
    """pydantic-settings names the source, not the variable: a list or table setting in
    the environment that is not JSON is said as the variable's name."""
    found = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(exc))
    if found:
        name = f"FLOWERD_{found.group(1).upper()}"
        example = f"{name}='{{\"a\": 1}}'"
        return f"{name}: not valid JSON (a list or table setting is JSON there, e.g. {example})"
    return f"{toml_file}: cannot read settings: {exc}"


def _describe(exc: ValidationError, toml_file: Path) -> str:
    fields = list(Settings.model_fields)
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            lines.append(
                f"{toml_file}: unknown setting {name!r}{did_you_mean(name, fields)}; "
                f"known settings: {', '.join(fields)}"
            )
        else:
            lines.append(setting_problem(name, err["msg"].removeprefix("Value error, "), toml_file))
    return "\n".join(lines)


def setting_problem(name: str, problem: str, toml_file: Path) -> str:
    """One line of a SettingsError: the setting, where it can be given, what is wrong."""
    return f"setting {name!r} (flag, FLOWERD_{name.upper()} or {toml_file}): {problem}"
