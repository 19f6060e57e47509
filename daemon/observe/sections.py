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
