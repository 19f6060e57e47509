"""Webhook deliveries: is this one signed by the schedule's secret, and which event is it.

A delivery to `POST {http}/hooks/{schedule}` (daemon/http/hooks.py) carries an HMAC-SHA256
of its raw body keyed with the schedule's `on_webhook.secret`: `X-Flowerd-Signature:
sha256=<hex>`, or GitHub's `X-Hub-Signature-256` of the same form. The digest is compared
in constant time (hmac.compare_digest). Its event key is the `Idempotency-Key` header, or
GitHub's `X-GitHub-Delivery`: one delivery sent five times is one event. A delivery with
neither is an event of its own (a fresh random key).

The secret (daemon.secrets) is resolved for every delivery (WebhookSecrets: a file is read
again only when it changed), and `webhook_problems` checks at start-up and on
reload that each resolves (a missing one refuses the schedules, naming file, schedule and
field).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from daemon import revealed, secrets
from daemon.schedule import Schedule, display_path

MAX_BODY_BYTES = 1024 * 1024  # DESIGN.md: a body over 1 MiB is a 413
INLINE_BYTES = 64 * 1024  # a larger body is hashed and parsed in a thread, off the loop
MAX_KEY_CHARS = 200  # an idempotency key is an id, not a document (it goes in the slot key)
SIGNATURE_HEADERS = ("x-flowerd-signature", "x-hub-signature-256")
KEY_HEADERS = ("idempotency-key", "x-github-delivery")
_SCHEME = "sha256="
# W3C Trace Context: version-traceid-parentid-flags (a malformed one is dropped, as the
# spec says: the run starts a trace of its own)
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


class BadDelivery(Exception):
    """A delivery refused for what it carries; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    """An accepted delivery: its event key, its JSON body, its W3C trace context."""

    key: str
    payload: dict[str, Any]
    traceparent: str | None = None


def signature_header(headers: Mapping[str, str]) -> str | None:
    """The signature the sender gave (ours first, then GitHub's); None: unsigned."""
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if value is not None:
            return value
    return None


def signed_by(secret: str, body: bytes, given: str) -> bool:
    """Whether `given` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`."""
    scheme, hex_digest = given[: len(_SCHEME)], given[len(_SCHEME) :].strip()
    if scheme.lower() != _SCHEME:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), hex_digest.lower().encode("ascii", "replace"))


def sign(secret: str, body: bytes) -> str:
    """The header value a sender puts in `X-Flowerd-Signature` (tests, benchmarks, docs)."""
    return _SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def open_delivery(
    secret: str, given: str, headers: Mapping[str, str], body: bytes
) -> Delivery:
    """The event a signed body is; `BadDelivery` 403 for a wrong signature, 400 for a body
    that is not a JSON object. A body over INLINE_BYTES (up to 1 MiB: some milliseconds of
    hashing and parsing) is opened in a worker thread, so the loop never waits on it."""
    if len(body) <= INLINE_BYTES:
        return _opened(secret, given, headers, body)
    return await asyncio.to_thread(_opened, secret, given, headers, body)


def _opened(secret: str, given: str, headers: Mapping[str, str], body: bytes) -> Delivery:
    if not signed_by(secret, body, given):
        raise BadDelivery(403, "wrong signature")
    return delivery(headers, body)


def delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """The event a signed body is: its key and its payload (`BadDelivery` 400 when the
    body is not a JSON object or the key is unusable)."""
    return Delivery(
        key=_event_key(headers),
        payload=_payload(body),
        traceparent=_traceparent(headers.get("traceparent", "")),
    )


class WebhookSecrets:
    """Each webhook schedule's secret as the daemon reads it: a variable at every delivery
    (a dict look-up), a file again only when its stat changed (then in a worker thread: the
    loop never waits on a disk, and a rotated credential file counts at once)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[tuple[int, int, int], secrets.Secret]] = {}

    async def of(self, schedule: Schedule) -> str:
        """The secret's value (`SecretError` naming file, schedule and field if it is gone)."""
        reference = schedule.on_webhook.secret if schedule.on_webhook else ""
        where = f"{display_path(schedule.file)}: [{schedule.id}] field 'on_webhook.secret'"
        ref = secrets.parse(reference)
        if ref is None or ref.kind == "env":  # remembered: masked wherever it would show
            return revealed.reveal(reference, where=where)
        try:
            info = os.stat(ref.target)
        except OSError:
            return secrets.resolve(reference, where=where)  # raises, saying why
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self._files.get(ref.target)
        if cached is not None and cached[0] == stamp:
            return cached[1].reveal()
        value = await asyncio.to_thread(revealed.reveal, reference, where=where)
        self._files[ref.target] = (stamp, secrets.Secret(value))
        return value


def webhook_problems(schedules: Iterable[Schedule], *, http: str, resolve: bool) -> list[str]:
    """Each webhook schedule's problem here: `http = "off"`, or (with `resolve`) a secret
    that does not resolve (a variable not set, a file missing). One line each, naming
    file, schedule and field."""
    problems = []
    for schedule in schedules:
        if schedule.on_webhook is None:
            continue
        where = f"{display_path(schedule.file)}: [{schedule.id}] field 'on_webhook"
        if http.strip().lower() == "off":
            problems.append(
                f"{where}': webhooks need the HTTP server, and the setting 'http' is \"off\" "
                "(set http = \"127.0.0.1:8787\", or another address, in flowerd.toml)"
            )
        secret = schedule.on_webhook.secret
        problem = resolve and secrets.problem(secret, where=f"{where}.secret'")
        if problem:
            problems.append(problem)
    return problems


def _traceparent(value: str) -> str | None:
    value = value.strip()
    return value if _TRACEPARENT.fullmatch(value) and not value.startswith("ff") else None


def _event_key(headers: Mapping[str, str]) -> str:
    for name in KEY_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        key = value.strip()
        if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
            raise BadDelivery(
                400,
                f"header {name!r} must be 1 to {MAX_KEY_CHARS} printable characters",
            )
        return key
    return f"auto-{uuid.uuid4()}"  # no key: a delivery of its own


def _payload(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError too
        raise BadDelivery(400, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise BadDelivery(400, "the body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadDelivery(400, "the body must be a JSON object (it reaches the run as `payload`)")
    return doc
