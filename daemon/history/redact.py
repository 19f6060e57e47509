"""Which values the history may store: secret-looking keys hidden, large values bounded.

Run inputs (and results) are kept with every run. Two things never go in as they are:
the values of keys that look like secrets (`password`, `api_key`, `AUTH_TOKEN` ...), and
values larger than `max_row_bytes` -- those are stored as a marker naming their size and
sha256, so a 5 MB input does not write 5 MB per run into the history. The run itself
always gets the real value.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from daemon import secrets

REDACTED = "***"
_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "passphrase", "token", "secret", "key", "apikey", "credentials"}
)

DEFAULT_MAX_ROW_BYTES = 64 * 1024


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


@functools.lru_cache(maxsize=1024)  # the same few input names, run after run
def is_secret_key(key: str) -> bool:
    """`password`, `db_password`, `apiKey`, `AUTH_TOKEN`, `client-secret` ... are secrets."""
    words = _words(str(key))
    return any(w in _SECRET_WORDS for w in words) or "".join(words).endswith(
        ("password", "token", "secret", "apikey")
    )


def redact(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe copy of run inputs with the values of secret-looking keys replaced."""
    if depth > 20:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_secret_key(str(k)) else redact(v, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, depth=depth + 1) for v in value]
    if isinstance(value, str) and secrets.is_reference(value):  # env: / file: (never its value)
        return REDACTED
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _clipped_repr(value)


def _clipped_repr(value: Any, max_chars: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def bounded(values: Mapping[str, Any], max_bytes: int = DEFAULT_MAX_ROW_BYTES) -> dict:
    """`values` (already JSON-safe) with each value larger than `max_bytes` as JSON
    replaced by a marker naming its size and sha256."""
    return {key: bound_value(value, max_bytes) for key, value in values.items()}


def bound_value(value: Any, max_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) * 4 <= max_bytes:  # UTF-8: at most 4 bytes a char
        return value
    encoded = json.dumps(value, ensure_ascii=False, default=repr).encode()
    if len(encoded) <= max_bytes:
        return value
    digest = hashlib.sha256(encoded).hexdigest()
    return f"<not stored: {len(encoded):,} bytes (max_row_bytes is {max_bytes:,}), sha256 {digest}>"


def json_safe(value: Any, *, depth: int = 0) -> Any:
    """A JSON-able copy: containers walked, anything else as its repr string."""
    if depth > 20:
        return _clipped_repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth=depth + 1) for v in value]
    return repr(value)
