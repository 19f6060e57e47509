"""Hamilton, imported once for the whole daemon: the only import of Hamilton's core.

Part of the pipeline layer (daemon.pipeline), the only package that imports Hamilton.
Its other modules take Hamilton from here (plugins they import where they use them); every
other module reaches Hamilton only through `daemon.pipeline.Pipelines`. Extensions
(Hamilton's registry of pandas, polars, ... adapters) load when their library is first
imported, not all at start-up (daemon.pipeline.extensions).
"""

from __future__ import annotations

import importlib

from daemon.pipeline import extensions

try:  # the sync driver is Hamilton's core; the async driver may be missing in old versions
    with extensions.autoload_off() as _on_demand:  # each extension once a pipeline uses it
        from hamilton import common as hamilton_common
        from hamilton import driver as hamilton_driver
        from hamilton import node as hamilton_node
        from hamilton import registry as _hamilton_registry
        from hamilton.lifecycle import base as lifecycle_base
except ImportError as exc:  # pragma: no cover - sf-hamilton is a dependency
    raise ImportError("flowerd needs Hamilton: pip install -U sf-hamilton") from exc
if _on_demand and hasattr(_hamilton_registry, "load_extension"):
    extensions.use(
        _hamilton_registry.load_extension, getattr(_hamilton_registry, "HAMILTON_EXTENSIONS", ())
    )

ASYNC_DRIVER_MISSING = (
    "hamilton.async_driver cannot be imported, so run_async is unavailable; "
    "upgrade Hamilton with `pip install -U sf-hamilton` (or use pm.run(...))"
)


def import_async_driver():
    try:
        return importlib.import_module("hamilton.async_driver")
    except ImportError as exc:
        raise ImportError(ASYNC_DRIVER_MISSING) from exc


__all__ = [
    "ASYNC_DRIVER_MISSING",
    "hamilton_common",
    "hamilton_driver",
    "hamilton_node",
    "import_async_driver",
    "lifecycle_base",
]
