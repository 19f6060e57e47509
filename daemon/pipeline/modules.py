"""Pipeline modules, imported the way the user's own scripts import them.

A user runs a Hamilton project as `python run.py` next to its modules, so Python puts
that directory first on `sys.path`: `import helpers` and `from list_data import X` find
siblings, packages (`pkg.mod`) import with their relative imports, and every module has
its own name (Hamilton's node tag `module` reads `x`, pickle finds `x.fn` by that name).
`Project` gives flowerd the same, for one pipelines directory, without putting that
directory on `sys.path` for the whole process:

- A meta-path finder resolves top-level names found in the directory while a `Project`
  loads (and, at run time, for the project that ran last), and every submodule of a
  package that lives there. Modules are compiled from source each time they load (no
  `.pyc`: an edit within the same second is never hidden by a stale cache).
- A module of the directory whose name is importable from anywhere else (`json.py`,
  `daemon.py`) is refused with a message naming both: in a user's script it would
  shadow that module for the whole process.
- Each `Project` owns the modules it loaded. Before loading it takes the other
  projects' modules out of `sys.modules`, so two base dirs in one process never share a
  module; `install()` puts its own back (the run's modules are what `sys.modules` shows
  while it builds and runs, which pickling for process executors needs).
- Any edit to any loaded file of the directory (or `reload=True`) drops all of them and
  starts a new `generation`: a helper edit reaches every pipeline that imports it, and
  driver cache keys change with it.
- A top-level module may use `from . import helper` (flowerd always allowed it): its
  parent package is a per-project package under `flowerd_pipelines` whose path is the
  directory.
- Worker processes (`spawn`, `forkserver`) call `prepare_worker` first, so they import
  the pipeline by the same rules.

This module imports no Hamilton.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import itertools
import keyword
import logging
import os
import sys
import threading
import time
import types
import weakref
from pathlib import Path

from daemon import logs
from daemon.errors import ModuleImportError, PipelineError, PipelineNotFound, did_you_mean

ROOT_PACKAGE = logs.PIPELINE_LOGGER_ROOT
# a run uses its pipeline's files as they were at most this long before it started: the
# runs of a burst (and a run's two asks: its slot inputs, its driver) share one stat per file
UNCHANGED_FOR_S = 0.005
_LOCK = threading.RLock()  # sys.modules is process-wide: one project loads at a time
_local = threading.local()  # .loading: the Project loading in this thread
_generations = itertools.count(1)
_projects = itertools.count(1)
_owner: weakref.WeakKeyDictionary[types.ModuleType, Project] = weakref.WeakKeyDictionary()
_current: Project | None = None  # the project that ran last: run-time imports resolve there


def module_name_problem(name: object, *, dotted: bool) -> str | None:
    """Why `name` cannot name a module (None: it can). Pipelines are plain names;
    additional modules may be dotted (`pkg.mod`)."""
    if not isinstance(name, str) or not name.isascii():
        return f"{name!r} is not a module name"
    if name.endswith(".py"):
        return f"{name!r} is a file name; name the module without '.py'"
    parts = name.split(".") if dotted else [name]
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        what = "dotted module name (pkg.mod)" if dotted else "plain identifier"
        return (
            f"{name!r} is not a {what}; name a module in the pipelines directory without "
            "path or '.py' (e.g. 'hello_world')"
        )
    return None


class Project:
    """The modules of one pipelines directory, loaded for one Pipelines."""

    def __init__(self, directory: Path):
        self.directory = Path(directory).resolve()
        self.package = f"{ROOT_PACKAGE}._{next(_projects)}"
        self.generation = next(_generations)
        self._owned: dict[str, types.ModuleType] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        self._sys_path_seen: tuple[tuple, bool] = ((), False)
        self._checked_at = float("-inf")  # when the files were last found unchanged

    # -- what the pipeline layer calls --------------------------------------------------
    def available(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.py") if p.stem.isidentifier())

    def load(self, names: tuple[str, ...], *, reload: bool = False) -> tuple:
        """The pipeline `names[0]` (a module of the directory) and the additional modules
        `names[1:]` (of the directory, else from sys.path), loaded or current, and
        installed. Returns (generation, modules)."""
        if not reload and _current is self:
            current = self._current_modules(names)
            if current is not None:  # no lock: a reload validating in another thread
                return self.generation, current  # must not stall this run
        with _LOCK:
            self._refresh(reload)
            modules = []
            for i, name in enumerate(names):
                try:
                    modules.append(self._module(name, external_ok=i > 0, reload=reload))
                except PipelineError as exc:
                    exc.field = exc.field or ("additional_modules" if i else "pipeline")
                    raise
            self.install()
            return self.generation, tuple(modules)

    def _current_modules(self, names: tuple[str, ...]) -> tuple | None:
        """`names` loaded, no file of the project changed since (every run asks)."""
        owned = self._owned
        try:
            modules = tuple([owned[name] for name in names])
        except KeyError:
            return None
        now = time.monotonic()
        if now - self._checked_at < UNCHANGED_FOR_S:  # a burst: one stat per file, not per run
            return modules
        for path, stamp in self._stamps.items():
            if _stamp(path) != stamp:
                return None
        self._checked_at = now
        return modules

    def install(self) -> None:
        """Make this project's modules the ones `sys.modules` shows under their names."""
        global _current
        with _LOCK:
            _current = self
            _register_package(self.package, self.directory)
            for name, module in self._owned.items():
                if sys.modules.get(name) is not module:
                    sys.modules[name] = module

    def worker_args(self) -> tuple[str, str]:
        return str(self.directory), self.package

    # -- loading -------------------------------------------------------------------------
    def _refresh(self, reload: bool) -> None:
        """Drop every module of this project if any of its files changed (or on reload)."""
        if not self._owned:
            return
        if not reload and all(_stamp(path) == stamp for path, stamp in self._stamps.items()):
            return
        for name, module in self._owned.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        self._owned.clear()
        self._stamps.clear()
        self.generation = next(_generations)

    def _module(self, name: str, *, external_ok: bool, reload: bool) -> types.ModuleType:
        if name in self._owned:
            return self._owned[name]
        top = name.partition(".")[0]
        if self._source(top) is None:
            if external_ok:
                return self._external(name, reload=reload)
            raise self._not_found(name)
        where = self._shadowed(top)
        if where is not None:
            raise PipelineError(self._shadow_message(top, where))
        return self._import(name)

    def _import(self, name: str) -> types.ModuleType:
        self._evict_others()
        self.install()
        previous = getattr(_local, "loading", None)
        _local.loading = self
        try:
            module = importlib.import_module(name)
        except PipelineError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name == name:
                raise self._not_found(name) from None
            raise self._raised(name, exc) from exc
        except (Exception, SystemExit) as exc:  # the module's own code failed, not ours
            raise self._raised(name, exc) from exc
        finally:
            _local.loading = previous
        _scope_loggers(self._owned)
        return module

    def _external(self, name: str, *, reload: bool) -> types.ModuleType:
        """An additional module not in the directory: imported from sys.path, as Python
        would (`reload=True` reloads it too)."""
        try:
            module = importlib.import_module(name)
            module = importlib.reload(module) if reload else module
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                raise self._not_found(name) from None
            raise self._raised(name, exc) from exc
        except (Exception, SystemExit) as exc:
            raise self._raised(name, exc) from exc
        return module

    def _raised(self, name: str, exc: BaseException) -> ModuleImportError:
        return ModuleImportError(
            f"module {name!r} of {self.directory} raised while importing: "
            f"{type(exc).__name__}: {exc}"
        )

    def _not_found(self, name: str) -> PipelineNotFound:
        there = self.available()
        return PipelineNotFound(
            f"no pipeline {name!r} in {self.directory}{did_you_mean(name, there)}; "
            f"pipelines there: {', '.join(there) or '(none)'}"
        )

    def _shadow_message(self, name: str, where: str) -> str:
        return (
            f"{self._source(name)} would shadow the module {name!r} ({where}) for the whole "
            f"process, as it would in your own script; rename {name!r} in {self.directory}"
        )

    def _evict_others(self) -> None:
        """Out of sys.modules: other projects' modules, and modules of this directory
        imported some other way (a caller's own `import x`), so imports bind to ours."""
        prefix = str(self.directory) + os.sep
        for key, module in list(sys.modules.items()):
            if not isinstance(module, types.ModuleType):
                continue
            owner = _owner.get(module)
            if owner is self:
                continue
            if owner is not None or str(getattr(module, "__file__", "")).startswith(prefix):
                del sys.modules[key]

    # -- the finder's half -----------------------------------------------------------------
    def _source(self, name: str) -> Path | None:
        for candidate in (self.directory / f"{name}.py", self.directory / name / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def find_spec(self, fullname: str, path, *, strict: bool):
        if path is None:
            source = self._source(fullname)
            if source is None:
                return None
            if not strict and self._on_sys_path():
                return None  # the caller's own import through sys.path: theirs, not ours
            if self._shadowed(fullname) is not None:
                if strict:  # while loading: say so, instead of importing the wrong one
                    raise PipelineError(self._shadow_message(fullname, self._shadowed(fullname)))
                return None  # at run time, another module's import: leave it to Python
            return self._spec(fullname, source, top_level=True)
        for entry in path:
            if not str(entry).startswith(str(self.directory)) or not _under(entry, self.directory):
                continue  # (the string test first: every import in the process asks here)
            if not strict and self._on_sys_path():
                return None
            last = fullname.rpartition(".")[2]
            for source in (Path(entry) / f"{last}.py", Path(entry) / last / "__init__.py"):
                if source.is_file():
                    return self._spec(fullname, source, top_level=False)
        return None

    def _on_sys_path(self) -> bool:
        """The directory is on sys.path: the caller imports from it as a script does."""
        entries = tuple(sys.path)
        if self._sys_path_seen[0] != entries:
            found = any(_under(entry or os.getcwd(), self.directory) for entry in entries)
            self._sys_path_seen = (entries, found)
        return self._sys_path_seen[1]

    def _spec(self, fullname: str, source: Path, *, top_level: bool):
        loader = _Loader(fullname, str(source), self)
        package = source.name == "__init__.py"
        locations = [str(source.parent)] if package else None
        spec_class = _TopLevelSpec if top_level and not package else importlib.machinery.ModuleSpec
        spec = spec_class(fullname, loader, origin=str(source), is_package=package)
        if locations:
            spec.submodule_search_locations = locations
        spec.has_location = True
        if isinstance(spec, _TopLevelSpec):
            spec.package_name = self.package
        return spec

    def adopt(self, module: types.ModuleType) -> None:
        self._owned[module.__name__] = module
        _owner[module] = self
        path = getattr(module, "__file__", None)
        if path:
            self._stamps[path] = _stamp(path)

    def _shadowed(self, name: str) -> str | None:
        """Where else `name` can be imported from (None: only from this directory)."""
        existing = sys.modules.get(name)
        if existing is not None and _owner.get(existing) is None:
            origin = getattr(existing, "__file__", None)
            if origin is None or not _under(origin, self.directory):
                return origin or "already imported"
        if name in sys.builtin_module_names:
            return "built in"
        for finder in sys.meta_path:
            if isinstance(finder, _Finder):
                continue
            origin = self._found_by(finder, name)
            if origin is not None:
                return origin
        return None

    def _found_by(self, finder, name: str) -> str | None:
        try:
            if finder is importlib.machinery.PathFinder:
                paths = [p for p in sys.path if not _under(p or os.getcwd(), self.directory)]
                spec = finder.find_spec(name, paths)
            else:
                spec = finder.find_spec(name, None)
        except (ImportError, ValueError, AttributeError, TypeError):
            return None
        if spec is None:
            return None
        origin = spec.origin or "a namespace package"
        if spec.origin and _under(spec.origin, self.directory):
            return None
        return origin


def _register_package(name: str, directory: Path) -> None:
    """The project's package (`name`, under ROOT_PACKAGE) in sys.modules, its path the
    project's directory: a top-level module's `from . import x` resolves there."""
    if ROOT_PACKAGE not in sys.modules:
        root = types.ModuleType(ROOT_PACKAGE, "flowerd's per-project packages")
        root.__path__ = []
        root.__spec__ = importlib.machinery.ModuleSpec(ROOT_PACKAGE, None, is_package=True)
        sys.modules[ROOT_PACKAGE] = root
    if name not in sys.modules:
        package = types.ModuleType(name, f"the modules of {directory}")
        package.__path__ = [str(directory)]
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        package.__spec__.submodule_search_locations = package.__path__
        sys.modules[name] = package


class _TopLevelSpec(importlib.machinery.ModuleSpec):
    """A top-level module whose `from . import x` resolves in its project's package."""

    package_name = ""

    @property
    def parent(self) -> str:
        return self.package_name


class _Loader(importlib.machinery.SourceFileLoader):
    """Compiles from source every time (no .pyc), and tells the project what it loaded."""

    def __init__(self, fullname: str, path: str, project: Project):
        super().__init__(fullname, path)
        self.project = project

    def get_code(self, fullname: str) -> types.CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)

    def exec_module(self, module: types.ModuleType) -> None:
        super().exec_module(module)
        self.project.adopt(module)


class _Finder(importlib.abc.MetaPathFinder):
    """The one finder flowerd adds to sys.meta_path (first, as a script's own directory
    comes first on sys.path)."""

    def find_spec(self, fullname, path, target=None):
        loading = getattr(_local, "loading", None)
        project = loading or _current
        if project is None:
            return None
        return project.find_spec(fullname, path, strict=loading is not None)


def _install_finder() -> None:
    with _LOCK:
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())


_install_finder()


def prepare_worker(directory: str, package: str) -> None:
    """The initializer of a worker process: import the project's modules as the parent
    did (a `spawn`ed child starts with none of them)."""
    global _current
    if _current is not None and str(_current.directory) == directory:
        return
    project = Project(Path(directory))
    project.package = package
    _register_package(package, project.directory)
    _current = project


def _stamp(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return stat.st_mtime_ns, stat.st_size


def _under(path: str, directory: Path) -> bool:
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == directory or directory in resolved.parents


def _scope_loggers(owned: dict[str, types.ModuleType]) -> None:
    """A run's `log_level` applies to its pipeline modules' loggers (see daemon.logs)."""
    logs.scope_pipeline_loggers()
    prefixes = tuple(f"{name}." for name in owned)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if type(logger) is logging.Logger and (name in owned or name.startswith(prefixes)):
            logger.__class__ = logs.RunScopedLogger


__all__ = ["Project", "module_name_problem", "prepare_worker"]
