"""Hamilton's extensions, loaded when their library is imported instead of all at once.

Importing Hamilton autoloads an extension (`hamilton.plugins.<name>_extensions`) for every
library it supports that is installed: with dask installed that alone imports dask's
dataframe and array stacks, ~0.3 s and ~25 MiB in every daemon, `flowerd run` and worker
forkserver, whether a pipeline uses dask or not. flowerd imports Hamilton with autoload
off (daemon.pipeline) and loads a library's extension the moment that library is first
imported -- by a pipeline module, a sibling helper, an additional module from sys.path or
anything they import -- through a finder on `sys.meta_path` that runs the extension right
after the library's own module has run. Decorators such as `@extract_columns` on a
`pd.DataFrame` or `@load_from.csv`, which look Hamilton's registry up while a module runs,
find it as under autoload, so a pipeline written for Hamilton runs unchanged; a project
that never imports pandas (or dask, polars ...) never loads their extensions. Whoever
sets `HAMILTON_AUTOLOAD_EXTENSIONS` keeps Hamilton's own behaviour ("0": none, else all).

(Python has no post-import hook; a meta-path finder that wraps the library's loader is
the documented way to run code right after a module executes.)

This module imports no Hamilton: daemon.pipeline hands it Hamilton's loader (`use`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger("daemon.extensions")  # its name before the move

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
_finding = threading.local()


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
    """Load extensions on demand from now on, with Hamilton's `registry.load_extension`:
    at once for libraries already imported, else when they are."""
    global _loader
    by_library: dict[str, list[str]] = {}
    for name in extensions:
        by_library.setdefault(_LIBRARY.get(name, name), []).append(name)
    with _lock:
        _by_library.clear()
        _by_library.update({lib: tuple(names) for lib, names in by_library.items()})
        _loader = load_extension
        if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    for library in [lib for lib in _by_library if lib in sys.modules]:
        _load_for(library)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a library with an extension, it asks the other finders
    and wraps the loader they give, so the extension loads right after the library."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _by_library or getattr(_finding, "name", None) == fullname:
            return None
        _finding.name = fullname  # the inner find_spec must not come back here
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            _finding.name = None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _ThenExtension(spec.loader, fullname)
        return spec


class _ThenExtension(importlib.abc.Loader):
    def __init__(self, loader, library: str):
        self._loader = loader
        self._library = library

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        _load_for(self._library)

    def __getattr__(self, name):  # get_data, get_filename ... as the real loader has them
        return getattr(self._loader, name)


def _load_for(library: str) -> None:
    wanted = _by_library.get(library, ())
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


__all__ = ["autoload_off", "use"]
