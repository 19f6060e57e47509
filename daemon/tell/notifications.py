"""Telling someone: Apprise notifications of run outcomes.

A `Notifications` listens to the runner's run events (daemon/runner/events.py). For each run
outcome of a schedule -- after its last attempt -- whose state the schedule's
`notify_on` holds, it composes one message (schedule, pipeline, run id, status word,
slot, duration, the error's type and message, the run's last log lines, and where to
look) and hands it to a `Sender`, which delivers it to the schedule's `notify` URLs (or
the `notify` setting) in the background: one thread per delivery from a small pool of
its own, a bounded number of attempts with backoff, a timeout on each. A run never waits
for a notification, and a target that cannot be reached fails only its delivery --
logged with the target's URL in Apprise's privacy form (no passwords or tokens), and
counted in `counts` (the `/metrics` side reads `counts.by_result`, or adds a hook with
`counts.on_result(callback)`).

`recovered` is the first success after a failure of the schedule, read from the history,
so it is right across restarts. `missed` and `crashed` come in bursts (a restart after
an outage finds many): those of one schedule within COALESCE_S are told as one message.

Apprise is imported only when something is sent or checked (it costs ~200 ms).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import socket
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon import revealed, secrets
from daemon.durations import shown_iso
from daemon.schedule.notify_on import DEFAULT_NOTIFY_ON

if TYPE_CHECKING:
    from daemon.history import History
    from daemon.runner.events import Listeners, RunEvent

log = logging.getLogger("daemon.notify")  # its name before the move

FAILURE_WORDS = frozenset({"failed", "timed_out", "crashed", "missed", "paused", "late"})
COALESCED = ("missed", "crashed")
COALESCE_S = 2.0
ATTEMPTS = 3
BACKOFF_S = 1.0  # then 2 s: a delivery gives up after ~3 s of waiting plus its timeouts
SEND_TIMEOUT_S = 20.0
THREADS = 2
THREAD_PREFIX = "flowerd-notify"
MAX_PENDING = 500  # deliveries waiting or under way; past this new ones are dropped
CLOSE_WAIT_S = 5.0
LOG_LINES = 10
MAX_BODY_CHARS = 999  # a message reads on a phone and fits Slack: under 1,000 characters
MAX_ERROR_CHARS = 300  # the error's message; its traceback is a `runs show` away
MAX_LINE_CHARS = 160  # one line of the log excerpt
PREVIOUS_TIMEOUT_S = 10.0


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


# --------------------------------------------------------------------------- composing


def _slot(moment: datetime | None, schedule: Any) -> str:
    """As every time for people: in the schedule's timezone, its offset shown."""
    return shown_iso(moment, getattr(schedule, "zone", UTC)) if moment else "-"


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def compose(
    event: RunEvent,
    word: str,
    *,
    targets: Sequence[str],
    lines: Sequence[dict] = (),
    page_url: str | None = None,
) -> Message:
    """One run outcome as a message, its body under 1,000 characters: the log excerpt
    is cut to fit, its newest lines kept. `word`: the status word it is told as."""
    schedule = event.schedule_id or "-"
    title = f"flowerd: {schedule} {word} (run {event.run_id}, pipeline {event.pipeline})"
    duration = f"{event.duration_s:.3f} s" if event.duration_s is not None else "-"
    head = [
        f"schedule {schedule}, pipeline {event.pipeline}, run {event.run_id}: {word}",
        # a manual run has no slot of its own: its slot is when it started
        f"slot: {_slot(event.scheduled_at or event.started_at, event.schedule)}   "
        f"duration: {duration}   "
        f"attempts: {event.attempts}   trigger: {event.trigger}",
    ]
    if event.error is not None:
        head.append(_clip(f"error: {event.error.type}: {event.error.message}", MAX_ERROR_CHARS))
    foot = [f"look: flowerd runs show {event.run_id}   (log: flowerd runs logs {event.run_id})"]
    if page_url:
        foot.append(f"web: {page_url}")
    room = MAX_BODY_CHARS - sum(len(line) + 1 for line in head + foot)
    body = [*head, *_excerpt(lines, room), *foot]
    return Message(
        title=title,
        body=_clip("\n".join(body), MAX_BODY_CHARS),
        failure=word in FAILURE_WORDS,
        targets=tuple(targets),
        what=f"run {event.run_id} of {schedule} {word}",
    )


def _excerpt(lines: Sequence[dict], room: int) -> list[str]:
    """The run's last log lines in at most `room` characters: the newest kept, each
    line cut to MAX_LINE_CHARS, a multi-line message (a traceback) as its lines."""
    rows = [
        _clip(f"  {row}", MAX_LINE_CHARS)
        for line in lines
        for row in f"{line['level']} {line['logger']}: {line['message']}".splitlines()
        if row.strip()
    ]
    kept: list[str] = []
    room -= len(f"log, last {len(rows)} of {len(rows)} line(s):") + 1
    for row in reversed(rows):
        if room < len(row) + 1:
            break
        kept.append(row)
        room -= len(row) + 1
    if not kept:
        return []
    return [f"log, last {len(kept)} of {len(rows)} line(s):", *reversed(kept)]


def compose_burst(schedule: str, pipeline: str, events: list[RunEvent], targets) -> Message:
    """Several missed / crashed rows of one schedule, as one message."""
    by_word: dict[str, list[RunEvent]] = {}
    for event in events:
        by_word.setdefault(event.status, []).append(event)
    words = ", ".join(f"{len(found)} {word}" for word, found in by_word.items())
    slots = sorted(e.scheduled_at for e in events if e.scheduled_at is not None)
    ids = sorted(e.run_id for e in events if e.run_id is not None)
    shown = ", ".join(str(i) for i in ids[:10]) + (f" and {len(ids) - 10} more" if ids[10:] else "")
    body = [f"schedule {schedule}, pipeline {pipeline}: {words}"]
    if slots:
        zone_of = events[0].schedule
        body.append(f"slots: {_slot(slots[0], zone_of)} .. {_slot(slots[-1], zone_of)}")
    body.append(f"runs: {shown}")
    last = events[-1]
    if last.error is not None:
        body.append(f"error (run {last.run_id}): {last.error.type}: {last.error.message}")
    body.append(f"look: flowerd runs --schedule {schedule}")
    return Message(
        title=f"flowerd: {schedule} {words}",
        body="\n".join(body),
        failure=True,
        targets=tuple(targets),
        what=f"{words} of {schedule}",
    )


# --------------------------------------------------------------------------- deciding


@dataclass
class _Burst:
    events: list = field(default_factory=list)
    handle: asyncio.TimerHandle | None = None


class Notifications:
    """Decides what is told, to whom; `Sender` delivers. Attach to the runner's events."""

    def __init__(
        self,
        history: History,
        *,
        default_targets: Sequence[str] = (),
        sender: Sender | None = None,
        tail: Callable[[int, int], list[dict] | None] | None = None,
        page_url: Callable[[int], str | None] | None = None,
        coalesce_s: float = COALESCE_S,
    ):
        self.history = history
        self.default_targets = tuple(default_targets)
        self.sender = sender if sender is not None else Sender()
        self._tail = tail
        self.page_url = page_url  # run id -> a link for the people told (public_url)
        self.coalesce_s = coalesce_s
        self._bursts: dict[str, _Burst] = {}
        self._tasks: set[asyncio.Task] = set()
        self._history_down = False

    def attach(self, events: Listeners) -> Notifications:
        events.add(self.on_event)
        return self

    def targets(self, schedule: Any) -> tuple[str, ...]:
        own = getattr(schedule, "notify", None)
        return tuple(own) if own is not None else self.default_targets

    @staticmethod
    def wants(schedule: Any) -> tuple[str, ...]:
        return tuple(getattr(schedule, "notify_on", DEFAULT_NOTIFY_ON))

    # -- the run-event edge -------------------------------------------------------------
    def on_event(self, event: RunEvent) -> None:
        if event.kind != "finished" or event.schedule is None or event.run_id is None:
            return
        if not self.targets(event.schedule):
            return
        wants = self.wants(event.schedule)
        if event.status in COALESCED:
            if event.status in wants:
                self._hold(event)
        elif event.status in ("failed", "timed_out"):
            if event.status in wants:
                self._spawn(self._tell(event, event.status))
        elif event.status == "success" and ({"recovered", "success"} & set(wants)):
            self._spawn(self._success(event))

    def notify_state(self, schedule: Any, word: str, message: str) -> None:
        """A schedule's state change that is no run outcome (`paused`, `late`, ...):
        told when its notify_on holds `word`."""
        targets = self.targets(schedule)
        if not targets or word not in self.wants(schedule):
            return
        schedule_id = getattr(schedule, "id", str(schedule))
        self.sender.send(
            Message(
                title=f"flowerd: {schedule_id} {word}",
                body=f"schedule {schedule_id}: {word}\n{message}",
                failure=word in FAILURE_WORDS,
                targets=targets,
                what=f"{schedule_id} {word}",
            )
        )

    def history_health(self, health: str) -> None:
        """The history's health changed (History.on_fault): an outage, and its end, are
        told to the default targets (the `notify` setting), once each."""
        down = health != "ok"
        if down == self._history_down:
            return
        self._history_down = down
        if not self.default_targets:
            return
        word = "history unavailable" if down else "history writable again"
        where = socket.gethostname()
        self.sender.send(
            Message(
                title=f"flowerd on {where}: {word}",
                body=f"{self.history.label}: {health if down else 'the rows held are written'}"
                "\nlook: flowerd status",
                failure=down,
                targets=self.default_targets,
                what=word,
            )
        )

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a notification could not be composed: %r", task.exception())

    async def _success(self, event: RunEvent) -> None:
        wants = self.wants(event.schedule)
        word = "success"
        if "recovered" in wants:
            async with asyncio.timeout(PREVIOUS_TIMEOUT_S):
                previous = await self.history.previous_outcome(
                    event.schedule_id, run_id=event.run_id, finished_at=event.finished_at
                )
            if previous is not None and previous != "success":
                word = "recovered"
        if word in wants:
            await self._tell(event, word)

    async def _tell(self, event: RunEvent, word: str) -> None:
        lines = await self._last_lines(event.run_id)
        page = self.page_url(event.run_id) if self.page_url else None
        targets = self.targets(event.schedule)
        self.sender.send(compose(event, word, targets=targets, lines=lines, page_url=page))

    async def _last_lines(self, run_id: int) -> list[dict]:
        found = self._tail(run_id, LOG_LINES) if self._tail else None
        if found is not None:
            return found
        try:
            return await self.history.log_lines(run_id, last=LOG_LINES)
        except Exception as exc:  # noqa: BLE001 - the message goes out without them
            log.debug("no log lines for run %s's notification: %s", run_id, exc)
            return []

    # -- bursts -------------------------------------------------------------------------
    def _hold(self, event: RunEvent) -> None:
        burst = self._bursts.setdefault(event.schedule_id, _Burst())
        burst.events.append(event)
        if burst.handle is None:
            loop = asyncio.get_running_loop()
            burst.handle = loop.call_later(self.coalesce_s, self._release, event.schedule_id)

    def _release(self, schedule_id: str) -> None:
        burst = self._bursts.pop(schedule_id, None)
        if burst is None or not burst.events:
            return
        if len(burst.events) == 1:
            event = burst.events[0]
            self._spawn(self._tell(event, event.status))
            return
        first = burst.events[0]
        targets = self.targets(first.schedule)
        self.sender.send(compose_burst(schedule_id, first.pipeline, burst.events, targets))

    async def close(self) -> None:
        """Tell the bursts still held, then let the sender finish (bounded)."""
        for schedule_id, burst in list(self._bursts.items()):
            if burst.handle is not None:
                burst.handle.cancel()
            self._release(schedule_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
        await self.sender.close()


def page_url_for(public_url: str | None) -> Callable[[int], str | None]:
    """The run's web page under the `public_url` setting: the address the people told
    can open (the daemon's own `http` address is 127.0.0.1 to them). None without it."""
    if not public_url:
        return lambda run_id: None
    base = public_url.rstrip("/")
    return lambda run_id: f"{base}/runs/{run_id}"
