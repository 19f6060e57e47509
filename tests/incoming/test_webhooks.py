"""Webhook deliveries: signatures checked over the raw body, keys, payloads, secrets."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from daemon.incoming.webhooks import (
    BadDelivery,
    WebhookSecrets,
    delivery,
    open_delivery,
    sign,
    signature_header,
    signed_by,
    webhook_problems,
)
from daemon.schedule import Schedule
from daemon.schedule.record import WebhookTrigger
from daemon.secrets import SecretError

BODY = b'{"ref": "refs/heads/main", "n": 1}'


def test_a_signature_is_the_hmac_sha256_of_the_raw_body():
    given = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", BODY) == given
    assert signed_by("s3cret", BODY, given)
    assert signed_by("s3cret", BODY, given.upper().replace("SHA256=", "sha256="))  # hex case
    assert not signed_by("other", BODY, given)
    assert not signed_by("s3cret", BODY + b" ", given)  # the raw body, not its JSON
    assert not signed_by("s3cret", BODY, given.removeprefix("sha256="))
    assert not signed_by("s3cret", BODY, "sha1=" + given[7:])
    assert not signed_by("s3cret", BODY, "sha256=ünïcode")


async def test_a_delivery_is_opened_once_signed_inline_or_in_a_thread():
    small, large = BODY, b'{"x": "' + b"a" * 100_000 + b'"}'
    for body in (small, large):
        opened = await open_delivery("s", sign("s", body), {"idempotency-key": "k"}, body)
        assert (opened.key, set(opened.payload)) == ("k", {"ref", "n"} if body is small else {"x"})
        with pytest.raises(BadDelivery) as caught:
            await open_delivery("s", sign("other", body), {}, body)
        assert caught.value.status == 403


def test_our_signature_header_comes_before_githubs():
    assert signature_header({"x-hub-signature-256": "b"}) == "b"
    assert signature_header({"x-flowerd-signature": "a", "x-hub-signature-256": "b"}) == "a"
    assert signature_header({"x-hub-signature": "sha1=..."}) is None


def test_the_delivery_key_is_the_idempotency_key_or_githubs_or_fresh():
    assert delivery({"idempotency-key": " k1 "}, BODY).key == "k1"
    assert delivery({"x-github-delivery": "g-1"}, BODY).key == "g-1"
    assert delivery({"idempotency-key": "k1", "x-github-delivery": "g-1"}, BODY).key == "k1"
    first, second = delivery({}, BODY).key, delivery({}, BODY).key
    assert first != second
    assert first.startswith("auto-")
    for bad in ("", "x" * 201, "a\nb"):
        with pytest.raises(BadDelivery) as caught:
            delivery({"idempotency-key": bad}, BODY)
        assert caught.value.status == 400


def test_the_payload_is_the_json_object_and_the_traceparent_passes():
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    got = delivery({"traceparent": tp}, BODY)
    assert (got.payload, got.traceparent) == ({"ref": "refs/heads/main", "n": 1}, tp)
    for bad in ("", "garbage", tp + "-extra" * 20, tp.replace("0af7", "0AF7"), "ff" + tp[2:]):
        assert delivery({"traceparent": bad}, BODY).traceparent is None  # dropped, as W3C says
    for body in (b"not json", b"[1, 2]", b"\xff\xfe", b"", b"[" * 100_000):
        with pytest.raises(BadDelivery) as caught:
            delivery({}, body)
        assert caught.value.status == 400


def _hook(tmp_path: Path, secret: str) -> Schedule:
    return Schedule(
        id="deploy",
        file=tmp_path / "hooks.toml",
        pipeline="p",
        on_webhook=WebhookTrigger(secret=secret),
    )


async def test_a_secret_resolves_from_env_or_file_and_a_changed_file_counts(
    tmp_path, monkeypatch
):
    found = WebhookSecrets()
    monkeypatch.setenv("FLOWERD_TEST_HOOK", "from-env")
    assert await found.of(_hook(tmp_path, "env:FLOWERD_TEST_HOOK")) == "from-env"
    monkeypatch.setenv("FLOWERD_TEST_HOOK", "changed")
    assert await found.of(_hook(tmp_path, "env:FLOWERD_TEST_HOOK")) == "changed"
    assert await found.of(_hook(tmp_path, "literal:env:X")) == "env:X"
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    hook = _hook(tmp_path, f"file:{path}")
    assert await found.of(hook) == "from-file"
    assert await found.of(hook) == "from-file"  # cached: the same stat
    path.write_text("rotated, and longer\n")
    assert await found.of(hook) == "rotated, and longer"
    path.unlink()
    with pytest.raises(SecretError, match=r"\[deploy\] field 'on_webhook.secret': secret file"):
        await found.of(hook)


def test_problems_name_file_schedule_and_field(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWERD_TEST_HOOK_UNSET", raising=False)
    hooks = [_hook(tmp_path, "env:FLOWERD_TEST_HOOK_UNSET")]
    where = f"{tmp_path}/hooks.toml: [deploy] field 'on_webhook"
    assert webhook_problems(hooks, http="127.0.0.1:0", resolve=True) == [
        f"{where}.secret': environment variable FLOWERD_TEST_HOOK_UNSET is not set "
        "(from 'env:FLOWERD_TEST_HOOK_UNSET')"
    ]
    assert webhook_problems(hooks, http="127.0.0.1:0", resolve=False) == []
    off = webhook_problems(hooks, http="off", resolve=False)
    assert off == [
        f"{where}': webhooks need the HTTP server, and the setting 'http' is \"off\" "
        '(set http = "127.0.0.1:8787", or another address, in flowerd.toml)'
    ]
