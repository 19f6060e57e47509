"""What HTTP reads and asks of the running daemon (daemon.serve.daemon, above this
package): a view written against a type, never the concrete Daemon. The routes
(daemon.http.json_api, daemon.http.page), the server and the scrape-time gauges
(daemon.http.metrics) take a `Served`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from daemon.history import History
from daemon.pipeline import Pipelines
from daemon.runner.runner import Runner
from daemon.runner.scheduler import Scheduler
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.http.metrics import Metrics


class Served(Protocol):
    settings: Settings
    history: History
    pm: Pipelines
    runner: Runner
    scheduler: Scheduler
    metrics: Metrics
    http_health: str  # set by daemon.http.server when it cannot listen
    status: Callable[..., Awaitable[dict]]
    trigger: Callable[[dict], Awaitable[dict]]
    pause: Callable[[dict], Awaitable[dict]]
    resume: Callable[[dict], Awaitable[dict]]

    @property
    def paused(self) -> set[str]: ...

    @property
    def paused_reasons(self) -> dict[str, str | None]: ...

    @property
    def loop_lag_s(self) -> float: ...

    def health(self) -> dict[str, str]: ...
