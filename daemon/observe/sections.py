"""The settings sections of the sinks, checked when the settings are read: what is wrong
in one, or what to install for it (its library is an optional extra). A leaf: no
Hamilton, no sink imported (only looked for).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

OBSERVE_EXTRA = "pip install 'flowerd[observe]'"
_URL = re.compile(r"^https?://[^/\s]+")

OTEL_KEYS = ("endpoint", "service_name")
OTEL_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def check_otel(section: dict[str, Any]) -> None:
    """`[otel]`: endpoint (an http(s) base URL, or OTEL_EXPORTER_OTLP_ENDPOINT's),
    service_name (optional); opentelemetry-sdk and its OTLP/HTTP exporter installed."""
    _known_keys("otel", section, OTEL_KEYS)
    endpoint = section.get("endpoint")
    if endpoint is not None and not (isinstance(endpoint, str) and _URL.match(endpoint)):
        raise ValueError(f"[otel] endpoint {endpoint!r} is not an http:// or https:// URL")
    name = section.get("service_name", "flowerd")
    if not isinstance(name, str) or not name:
        raise ValueError(f"[otel] service_name {name!r} must be a non-empty string")
    missing = [module for module in OTEL_MODULES if not _installed(module)]
    if missing:
        raise ValueError(
            f"[otel] needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http "
            f"({', '.join(missing)} cannot be imported): {OBSERVE_EXTRA}"
        )


def _known_keys(section: str, given: dict[str, Any], known: tuple[str, ...]) -> None:
    from daemon.errors import did_you_mean

    for key in given:
        if key not in known:
            raise ValueError(f"[{section}] has no key {key!r}{did_you_mean(key, known)}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


HAMILTON_UI_KEYS = ("url", "project_id", "username", "api_key")
OPENLINEAGE_KEYS = ("url", "namespace")


def check_hamilton_ui(section: dict[str, Any]) -> None:
    """`[hamilton_ui]`: url, project_id, username, api_key (optional: a key, or
    "env:NAME"); apache-hamilton-sdk installed."""
    _known_keys("hamilton_ui", section, HAMILTON_UI_KEYS)
    _required("hamilton_ui", section, ("url", "project_id", "username"))
    _url("hamilton_ui", "url", section["url"])
    project = section["project_id"]
    if not isinstance(project, int) or isinstance(project, bool) or project < 1:
        raise ValueError(f"[hamilton_ui] project_id {project!r} must be a positive integer")
    _text("hamilton_ui", "username", section["username"])
    if section.get("api_key") is not None:
        _text("hamilton_ui", "api_key", section["api_key"])  # env:/file: read by serve alone
    _needs("hamilton_ui", "apache-hamilton-sdk", "hamilton_sdk")


def check_openlineage(section: dict[str, Any]) -> None:
    """`[openlineage]`: url (events go to {url}/api/v1/lineage), namespace (optional,
    default "flowerd"); openlineage-python installed."""
    _known_keys("openlineage", section, OPENLINEAGE_KEYS)
    _required("openlineage", section, ("url",))
    _url("openlineage", "url", section["url"])
    _text("openlineage", "namespace", section.get("namespace", "flowerd"))
    _needs("openlineage", "openlineage-python", "openlineage.client")


def _required(section: str, given: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if given.get(key) is None]
    if missing:
        raise ValueError(f"[{section}] needs {', '.join(missing)}")


def _url(section: str, key: str, value: Any) -> None:
    if not (isinstance(value, str) and _URL.match(value)):
        raise ValueError(f"[{section}] {key} {value!r} is not an http:// or https:// URL")


def _text(section: str, key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"[{section}] {key} {value!r} must be a non-empty string")


def _needs(section: str, package: str, module: str) -> None:
    if not _installed(module):
        raise ValueError(
            f"[{section}] needs {package} ({module} cannot be imported): {OBSERVE_EXTRA}"
        )
