"""Delivering notifications: a `Sender` hands each `Message` to its targets in the
background -- one thread per delivery from a small pool of its own, a bounded number of
attempts with backoff, a timeout on each -- and counts the results (`DeliveryCounts`).
A target that cannot be reached fails only its delivery, logged with the target's URL in
Apprise's privacy form (`private`, `scrub`: no passwords or tokens). What is told, and
when, is daemon.tell.notifications's.

Apprise is imported only when something is sent or checked (it costs ~200 ms).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from daemon import revealed, secrets

log = logging.getLogger("daemon.notify")  # the notifier's: its lines keep that name

ATTEMPTS = 3
BACKOFF_S = 1.0  # then 2 s: a delivery gives up after ~3 s of waiting plus its timeouts
SEND_TIMEOUT_S = 20.0
THREADS = 2
THREAD_PREFIX = "flowerd-notify"
MAX_PENDING = 500  # deliveries waiting or under way; past this new ones are dropped
CLOSE_WAIT_S = 5.0


def url_problems(urls: Iterable[str] | None) -> list[str]:
    """Why Apprise cannot use some of `urls` (never repeating their secrets); []: all
    good. Apprise is imported only when there are URLs to check."""
    if not urls:
        return []
    import apprise

    problems = []
    for index, url in enumerate(urls):
        if secrets.is_reference(url):  # env: / file: -- read (and checked) when it sends
            continue
        if not apprise.Apprise().add(url):
            scheme = url.split("://", 1)[0] if "://" in url else ""
            shown = f"{scheme}://…" if scheme else "(no scheme://)"
            problems.append(
                f"[{index}] {shown} is not a URL Apprise can send to "
                "(https://github.com/caronc/apprise/wiki lists them)"
            )
    return problems


def _privacy_form(url: str) -> str | None:
    """Apprise's privacy form of `url` (passwords and tokens masked), or None."""
    try:
        import apprise

        services = apprise.Apprise()
        if services.add(url):
            return services[0].url(privacy=True)
    except Exception as exc:  # a URL we cannot read is shown by its scheme only
        log.debug("cannot read a notify URL: %s", type(exc).__name__)
    return None


def private(url: str) -> str:
    """The URL as it may be shown: passwords and tokens masked, without its options; a
    secret reference (env: / file:) as ***."""
    if secrets.is_reference(url):
        return secrets.MASK
    shown = _privacy_form(url)
    if shown is not None:
        return shown.split("?", 1)[0]
    return (url.split("://", 1)[0] + "://…") if "://" in url else "(not a URL)"


def scrub(text: str, url: str) -> str:
    """`text` with every part of `url` that its privacy form hides replaced by ***."""
    shown = _privacy_form(url) or ""
    for token in sorted(set(re.split(r"[:/@?&=#]+", url)), key=len, reverse=True):
        if len(token) >= 4 and token not in shown:
            text = text.replace(token, "***")
    return text


# --------------------------------------------------------------------------- counting


class DeliveryCounts:
    """Deliveries by result: `sent`, `error` (every attempt failed), `dropped` (too many
    waiting). Read `by_result`, or get each result as it happens with `on_result`."""

    def __init__(self) -> None:
        self.by_result: dict[str, int] = {"sent": 0, "error": 0, "dropped": 0}
        self._hooks: list[Callable[[str], None]] = []

    def on_result(self, hook: Callable[[str], None]) -> None:
        self._hooks.append(hook)

    def add(self, result: str) -> None:
        self.by_result[result] = self.by_result.get(result, 0) + 1
        for hook in self._hooks:
            try:
                hook(result)
            except Exception:
                log.exception("a notification counter hook failed")


counts = DeliveryCounts()  # the process's counts, as prometheus-client's registry is


# --------------------------------------------------------------------------- delivering


@dataclass(frozen=True, kw_only=True)
class Message:
    title: str
    body: str
    failure: bool  # Apprise type `failure`, else `success`
    targets: tuple[str, ...]
    what: str = ""  # for our own log lines: "run 42 failed"


def deliver_once(url: str, message: Message, timeout_s: float = SEND_TIMEOUT_S) -> str | None:
    """Send `message` to one URL, blocking; None when sent, else why not (scrubbed). A
    URL given as `env:NAME` / `file:/path` is read now, by the process that sends."""
    import apprise

    try:
        url = revealed.reveal(url, where="notify URL")
    except secrets.SecretError as exc:
        return str(exc)
    sender = apprise.Apprise()
    if not sender.add(url):
        return "not a URL Apprise can send to"
    kind = apprise.NotifyType.FAILURE if message.failure else apprise.NotifyType.SUCCESS
    try:
        result = sender.notify(
            body=message.body, title=message.title, notify_type=kind, timeout=timeout_s
        )
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is this delivery's failure
        return scrub(f"{type(exc).__name__}: {exc}", url)
    if result:
        return None
    reasons = [
        entry.message
        for service in result
        for attempt in service
        for entry in attempt
        if _level(entry.level) >= logging.WARNING
    ]
    return scrub("; ".join(dict.fromkeys(reasons)) or f"Apprise: {result.status.name}", url)


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    return logging.getLevelNamesMapping().get(str(level).upper(), logging.WARNING)


class Sender:
    """Background delivery: never blocks the caller, bounded in attempts and in time."""

    def __init__(
        self,
        *,
        counts: DeliveryCounts = counts,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        timeout_s: float = SEND_TIMEOUT_S,
        threads: int = THREADS,
    ):
        self.counts = counts
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=THREAD_PREFIX)
        # Apprise's own lines come back with each result (read, scrubbed, logged once by
        # _deliver); they do not also go to the daemon's log, where a plugin might show
        # more of a URL than its privacy form
        logging.getLogger("apprise").propagate = False
        self._tasks: dict[asyncio.Task, tuple[str, str]] = {}  # -> (what, url), under way
        # one target's messages go out in the order they were told (a `recovered` never
        # reaches anyone before the `failed` it follows); different targets in parallel
        self._in_order: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def send(self, message: Message) -> None:
        for url in message.targets:
            if len(self._tasks) >= MAX_PENDING:
                self.counts.add("dropped")
                log.error("notification %r to %s dropped: %d deliveries are waiting",
                          message.what, private(url), len(self._tasks))  # fmt: skip
                continue
            # a context of its own: the delivery is no part of the run that caused it
            task = asyncio.get_running_loop().create_task(
                self._deliver(url, message), context=contextvars.Context()
            )
            self._tasks[task] = (message.what or message.title, url)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        self._tasks.pop(task, None)

    async def _deliver(self, url: str, message: Message) -> bool:
        async with self._in_order[url]:  # FIFO: the tasks were made in the order told
            return await self._deliver_now(url, message)

    async def _deliver_now(self, url: str, message: Message) -> bool:
        loop = asyncio.get_running_loop()
        why = None
        for attempt in range(1, self.attempts + 1):
            why = await loop.run_in_executor(self._pool, deliver_once, url, message, self.timeout_s)
            if why is None:
                self.counts.add("sent")
                log.info("notified %s: %s", private(url), message.what)
                return True
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.counts.add("error")
        log.warning("notification %r to %s failed after %d attempt(s): %s",
                    message.what, private(url), self.attempts, why)  # fmt: skip
        return False

    async def send_now(self, message: Message) -> dict[str, str | None]:
        """Deliver to every target and wait: url (private) -> None or why it failed."""
        results = await asyncio.gather(
            *(asyncio.get_running_loop().run_in_executor(
                self._pool, deliver_once, url, message, self.timeout_s) for url in message.targets)
        )  # fmt: skip
        for why in results:
            self.counts.add("sent" if why is None else "error")
        return {private(url): why for url, why in zip(message.targets, results, strict=True)}

    async def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Let deliveries under way finish (bounded); the rest are given up, and said so."""
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            log.info("stopping: waiting up to %g s for %d notification(s) under way",
                     timeout_s, len(pending))  # fmt: skip
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            told = [self._tasks.get(task, ("a notification", "")) for task in pending]
            names = sorted(f"{what} to {private(url)}" for what, url in told)
            log.warning("stopping: %d notification(s) not delivered within %g s, given up: %s",
                        len(pending), timeout_s, "; ".join(names))  # fmt: skip
            await asyncio.gather(*pending, return_exceptions=True)
        # a thread still waiting on a target (up to its SEND_TIMEOUT_S) is left behind:
        # the process exits without it (daemon.serve.daemon.exit_past_stuck_threads)
        self._pool.shutdown(wait=False, cancel_futures=True)
        _release_apprise()


def _release_apprise() -> None:
    """Apprise (1.9+) keeps process-wide thread pools that it never shuts down, so their
    idle threads would outlive the stop (and be taken for stuck ones). Shut them down, and
    name their threads as ours: one still under way is a delivery given up, said above."""
    module = sys.modules.get("apprise.apprise")
    for name in ("_shared_executor", "_coordinator_executor"):
        pool = getattr(module, name, None)
        if not isinstance(pool, ThreadPoolExecutor):
            continue
        for thread in list(getattr(pool, "_threads", ())):
            thread.name = f"{THREAD_PREFIX}-apprise-{thread.name}"
        pool.shutdown(wait=False, cancel_futures=True)
        setattr(module, name, None)  # a later delivery (a test's next Sender) makes its own
