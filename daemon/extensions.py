"""Hamilton's extensions, loaded when a pipeline uses their library instead of all at once.

Importing Hamilton autoloads an extension (`hamilton.plugins.<name>_extensions`) for every
library it supports that is installed: with dask installed that alone imports dask's
dataframe and array stacks, ~0.3 s and ~25 MiB in every daemon, `flowerd run` and worker
forkserver, whether a pipeline uses dask or not. flowerd imports Hamilton with autoload
off (daemon.pipeline) and loads the extension of a library once a pipeline uses it:

- before a module of the pipelines directory runs, for the libraries its source imports
  (decorators such as `@load_from.csv` look Hamilton's registry up while the module runs);
- after any pipeline module (or additional module) is imported, for the libraries its
  globals come from (`@extract_columns` on a `pd.DataFrame` finds the column type when
  the driver is built).

So a pipeline written for Hamilton's autoload runs unchanged, and a project that never
imports pandas (or dask, polars...) never loads their extensions. Whoever sets
`HAMILTON_AUTOLOAD_EXTENSIONS` keeps Hamilton's own behaviour ("0": none, else all).

This module imports no Hamilton: daemon.pipeline hands it Hamilton's loader (`use`).
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import threading
import types
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

AUTOLOAD_ENV = "HAMILTON_AUTOLOAD_EXTENSIONS"  # hamilton.registry.HAMILTON_AUTOLOAD_ENV
# extension -> the top-level module its library imports as (else: the extension's name)
_LIBRARY = {
    "polars_lazyframe": "polars",
    "pyspark_pandas": "pyspark",
    "spark": "pyspark",
    "sklearn_plot": "sklearn",
    "huggingface": "datasets",
}
_lock = threading.RLock()
_loader: Callable[[str], object] | None = None
_by_library: dict[str, tuple[str, ...]] = {}
_tried: set[str] = set()


@contextlib.contextmanager
def autoload_off() -> Iterator[bool]:
    """Around the first import of Hamilton: autoload off (unless the user chose), and the
    environment as it was afterwards (child processes inherit it). Yields whether it was
    turned off here, i.e. whether extensions are to be loaded on demand."""
    if AUTOLOAD_ENV in os.environ:
        yield False
        return
    os.environ[AUTOLOAD_ENV] = "0"
    try:
        yield True
    finally:
        os.environ.pop(AUTOLOAD_ENV, None)


def use(load_extension: Callable[[str], object], extensions: Iterable[str]) -> None:
    """Load extensions on demand from now on, with Hamilton's `registry.load_extension`."""
    global _loader
    by_library: dict[str, list[str]] = {}
    for name in extensions:
        by_library.setdefault(_LIBRARY.get(name, name), []).append(name)
    with _lock:
        _by_library.clear()
        _by_library.update({lib: tuple(names) for lib, names in by_library.items()})
        _loader = load_extension


def loaded() -> frozenset[str]:
    """The extensions loaded on demand so far (tried: a missing library stays unloaded)."""
    with _lock:
        return frozenset(_tried)


def for_source(tree: ast.AST) -> None:
    """Before a module runs: the extensions of the libraries its source imports."""
    if _loader is None:
        return
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.partition(".")[0])
    _load_for(names)


def for_module(module: types.ModuleType) -> None:
    """After a module ran: the extensions of the libraries its globals come from."""
    if _loader is None:
        return
    names = set()
    for value in list(vars(module).values()):
        names.add(_library_of(value))
    _load_for(names)


def _library_of(value: object) -> str:
    try:
        if isinstance(value, types.ModuleType):
            name = value.__name__
        elif isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
            name = value.__module__
        else:
            name = type(value).__module__
    except Exception:  # noqa: BLE001 - a global with a hostile __getattr__ names nothing
        return ""
    return name.partition(".")[0] if isinstance(name, str) else ""


def _load_for(libraries: set[str]) -> None:
    wanted = [ext for lib in libraries & _by_library.keys() for ext in _by_library[lib]]
    if not wanted or _tried.issuperset(wanted):
        return
    with _lock:
        for name in wanted:
            if name not in _tried:
                _tried.add(name)
                _load(name)


def _load(name: str) -> None:
    try:
        _loader(name)
    except (ImportError, NotImplementedError, Warning) as exc:  # as Hamilton's autoload
        log.debug("Hamilton extension %s not loaded: %s", name, exc)
    except Exception as exc:  # noqa: BLE001 - autoload would have failed Hamilton's import
        log.warning("Hamilton extension %s failed to load: %s: %s", name, type(exc).__name__, exc)


__all__ = ["autoload_off", "for_module", "for_source", "loaded", "use"]
