"""The secret values this process has read (daemon.secrets references it resolved for a
run's inputs, a notify URL, ...), so that no line, error or result of it shows one.

A leaf like daemon.secrets: the run log (daemon.tell.runlogs), the daemon's own log
(daemon.logs) and the history's error and result columns pass their text through
`masked`, which replaces each value read so far with `***`. Values shorter than
MIN_CHARS are not remembered: masking "1" or "no" would blank half of every line (a
secret that short is no secret).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from daemon import secrets

MIN_CHARS = 4
_values: set[str] = set()
_lock = threading.Lock()


def reveal(text: Any, *, where: str = "") -> Any:
    """`secrets.resolve(text)`, remembering the value when `text` is a reference."""
    value = secrets.resolve(text, where=where)
    if secrets.is_reference(text) and isinstance(value, str) and len(value) >= MIN_CHARS:
        with _lock:
            _values.add(value)
    return value


def reveal_inputs(inputs: Mapping[str, Any], *, where: str = "input") -> dict[str, Any]:
    """A run's inputs as its pipeline gets them: each top-level string that is a
    reference read now, a `literal:` one unwrapped; nested values as they are (a webhook's
    payload is never resolved)."""
    return {key: reveal(value, where=f"{where} {key!r}") for key, value in inputs.items()}


def given_literally(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs a request gives (`flowerd trigger --input`, POST .../trigger): never
    references -- an operator must not read the daemon's environment or files through a
    run -- so a string that looks like one is passed as `literal:` text."""
    return {key: _literal(value) for key, value in inputs.items()}


def _literal(value: Any) -> Any:
    if isinstance(value, str) and (
        secrets.is_reference(value) or value.startswith(secrets.LITERAL_PREFIX)
    ):
        return secrets.LITERAL_PREFIX + value
    return value


def masked(text: str) -> str:
    if not _values or not isinstance(text, str):
        return text
    return secrets.mask(text, list(_values))


def any_revealed() -> bool:
    return bool(_values)
