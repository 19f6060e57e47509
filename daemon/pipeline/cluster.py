"""The Dask clusters runs execute on (`executor = { type = "dask", address = ... }`).

One `distributed.Client` per scheduler address, made on first use and reused by every
run after it (a connection costs a handshake; a run should not). A scheduler that does not
answer fails the run within DASK_CONNECT_S with a message naming its address -- never a
hang. The project's pipeline modules are sent to the workers (`Client.upload_file`) when
they change, so a worker needs only Hamilton and the libraries the nodes import.

No Hamilton here (daemon.pipeline builds the Hamilton side); `distributed` is the
optional `flowerd[dask]` extra, imported only when a dask executor is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
import types
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from daemon.errors import PipelineError

log = logging.getLogger("daemon.cluster")  # its name before the move

DASK_CONNECT_S = 10.0
CLOSE_S = 2.0
PROBE_S = 2.0  # validate's look at a cluster: a warning, so never long
_USABLE = ("running", "connecting", "newly-created")

_clients: dict[str, Any] = {}
_shipped: set[tuple] = set()  # (client, module, sha256 of its file)
_lock = threading.Lock()


def _client_class():
    try:
        from distributed import Client
    except ImportError as exc:
        raise PipelineError(
            f"executor 'dask' needs Dask: pip install 'flowerd[dask]' (import failed: {exc})",
            field="executor",
        ) from None
    return Client


def check_address(address: str | None) -> str:
    """An executor's own setting, checked without reaching the cluster (validation)."""
    if not address:
        raise PipelineError(
            "executor 'dask' needs an address (the Dask scheduler, tcp://HOST:PORT)",
            field="executor",
        )
    return address


def unreachable(address: str, *, timeout_s: float = PROBE_S) -> str | None:
    """Why the scheduler at `address` cannot be reached now (a TCP connect, no Dask
    handshake), or None if it answers or is not a TCP address. For `flowerd validate`'s
    warning only: a cluster down now may be up when its runs come."""
    parts = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname:
        return None
    try:
        port = parts.port or 8786
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except (OSError, ValueError) as exc:
        return f"the Dask scheduler at {address} cannot be reached now: {exc}"


def client(address: str | None, *, timeout_s: float = DASK_CONNECT_S) -> Any:
    """The Client for the scheduler at `address`: the one made before, or a new one."""
    address = check_address(address)
    Client = _client_class()
    with _lock:
        existing = _clients.get(address)
        if existing is not None and existing.status in _USABLE:
            return existing
        if existing is not None:
            _close_quietly(existing)
        try:
            made = Client(address, timeout=timeout_s, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise PipelineError(
                f"the Dask scheduler at {address} cannot be reached "
                f"(waited {timeout_s:g} s): {exc}",
                field="executor",
            ) from None
        _clients[address] = made
        log.info("connected to the Dask scheduler at %s (dashboard %s)", address, dashboard(made))
        return made


def dashboard(made: Any) -> str | None:
    """The cluster's dashboard link, or None if the scheduler serves none."""
    try:
        return made.dashboard_link
    except Exception:  # no dashboard service (bokeh missing): only a link less
        return None


def where(address: str) -> str:
    """How a run's row names the cluster it ran on."""
    made = _clients.get(address)
    link = dashboard(made) if made is not None else None
    return f"Dask cluster {address}" + (f", dashboard {link}" if link else "")


def ship(made: Any, modules: Iterable[types.ModuleType]) -> None:
    """Send the project's pipeline modules to the workers (`Client.upload_file`, which
    later workers get too), once per version of each file: the tasks name their functions
    by module, and the workers have no copy of the project. Modules from elsewhere
    (installed packages) must be installed on the workers, as Dask expects."""
    for module in modules:
        path = getattr(module, "__file__", None)
        if "." in module.__name__ or not path or not path.endswith(".py"):
            continue
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        key = (id(made), module.__name__, digest)
        with _lock:
            if key in _shipped:
                continue
        made.upload_file(path, load=True)
        with _lock:
            _shipped.add(key)
        log.debug("sent %s to the workers of %s", path, made.scheduler.address)


@contextlib.contextmanager
def current(made: Any) -> Iterator[None]:
    """`dask.compute` in this thread goes to this client (not a process-wide default)."""
    with made.as_current():
        yield


def close_all() -> None:
    """At the daemon's stop: let go of every cluster (the clusters themselves live on)."""
    with _lock:
        made = list(_clients.values())
        _clients.clear()
    for each in made:
        _close_quietly(each)


def _close_quietly(made: Any) -> None:
    try:
        made.close(timeout=CLOSE_S)
    except Exception as exc:  # closing a client of a dead scheduler says nothing new
        log.debug("closing a Dask client failed: %s", exc)
