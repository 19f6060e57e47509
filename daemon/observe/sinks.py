"""The sinks a daemon reports runs to, made from its settings: one entry per settings
section (`[otel]`, and the others as they land). A sink module is imported only when its
section is configured, so a daemon without any pays nothing for them.

To add a sink: a module with `make(settings, section: dict) -> Sink` (see
daemon.observe.listeners.Sink), and a line in SECTIONS.
"""

from __future__ import annotations

import importlib
from typing import Any

from daemon.observe.listeners import Sink

# settings attribute (the TOML section) -> the module whose `make` builds its sink
SECTIONS: dict[str, str] = {
    "otel": "daemon.observe.otel",
    "hamilton_ui": "daemon.observe.hamilton_ui",
    "openlineage": "daemon.observe.openlineage",
}


def configured(settings: Any) -> list[Sink]:
    """The sinks whose sections the settings configure, in SECTIONS' order."""
    made = []
    for section, module in SECTIONS.items():
        options = getattr(settings, section, None)
        if options:
            made.append(importlib.import_module(module).make(settings, dict(options)))
    return made
