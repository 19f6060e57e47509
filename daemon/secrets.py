"""Secret references: `"env:NAME"` and `"file:/absolute/path"` (DESIGN.md, "Events").

A string of exactly one of these forms -- in schedule `inputs`, notify URLs, HTTP tokens,
webhook secrets, tracking keys -- names a secret instead of holding it. The process that
uses the value (serve, an in-process run or backfill) resolves it; no other command does,
and a resolved value is never stored, logged or printed: where one would show, `***` does.
`"literal:..."` passes the rest as it is (`"literal:env:HOME"` is the string `env:HOME`).

The API:
- `parse(text)` -> `SecretRef | None` (None: not a reference)
- `plain(text)` -> the text with one `literal:` prefix removed
- `problem(text, where=...)` -> None, or a sentence why it cannot be resolved here
- `resolve(text, where=...)` -> the value (`SecretError` naming `where` when it cannot)
- `resolve_tree(value, where=...)` -> dicts and lists walked, every string resolved
- `shown(text)` -> what output may show of a configured string (`***` for a reference)
- `Secret` -> a resolved value whose str / repr are `***`; `.reveal()` gives it
- `mask(text, secrets)` -> `text` with every secret value in it replaced by `***`

`where` is the caller's prefix naming file, schedule and field, e.g.
`schedules/hooks.toml: [deploy] field 'on_webhook.secret'`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.errors import FlowerdError

MASK = "***"
LITERAL_PREFIX = "literal:"
_REFERENCE = re.compile(r"(?:env:(?P<env>[A-Za-z_][A-Za-z0-9_]*)|file:(?P<file>/.*))\Z", re.S)
# a secret file may end in a newline (echo, systemd-creds); the value is what comes before it
_TRAILING_NEWLINE = re.compile(r"\r?\n\Z")


class SecretError(FlowerdError):
    """A secret reference that cannot be resolved; the message names where it is set."""


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference: read environment variable `target`, or the file at `target`."""

    kind: Literal["env", "file"]
    target: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True)
class Secret:
    """A resolved secret: printing, logging or repr-ing it shows `***`."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"


def parse(text: Any) -> SecretRef | None:
    """The reference `text` is, or None (not a string of exactly `env:NAME` / `file:/path`)."""
    if not isinstance(text, str):
        return None
    match = _REFERENCE.match(text)
    if match is None:
        return None
    if match["env"] is not None:
        return SecretRef("env", match["env"])
    return SecretRef("file", match["file"])


def is_reference(text: Any) -> bool:
    return parse(text) is not None


def plain(text: str) -> str:
    """`text` with one leading `literal:` removed (a string that is not a reference)."""
    return text[len(LITERAL_PREFIX) :] if text.startswith(LITERAL_PREFIX) else text


def problem(
    text: Any, *, where: str = "", environ: Mapping[str, str] | None = None
) -> str | None:
    """None when `text` resolves here (or is no reference); else the sentence why not."""
    try:
        resolve(text, where=where, environ=environ)
    except SecretError as exc:
        return str(exc)
    return None


def resolve(text: Any, *, where: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """The value `text` stands for: a reference read now, a `literal:` string unwrapped,
    anything else as it is. Raises `SecretError` (prefixed with `where`) when a variable
    is not set or a file cannot be read."""
    if not isinstance(text, str):
        return text
    ref = parse(text)
    if ref is None:
        return plain(text)
    if ref.kind == "env":
        return _read_env(ref.target, where, os.environ if environ is None else environ)
    return _read_file(ref.target, where)


def resolve_tree(
    value: Any, *, where: str = "", environ: Mapping[str, str] | None = None
) -> Any:
    """`value` with every string in it (through dicts, lists and tuples) resolved; the
    message of a failure names the key path below `where`."""
    if isinstance(value, Mapping):
        return {
            k: resolve_tree(v, where=f"{where}.{k}" if where else str(k), environ=environ)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(
            resolve_tree(v, where=f"{where}[{i}]", environ=environ) for i, v in enumerate(value)
        )
    return resolve(value, where=where, environ=environ)


def tree_problems(
    value: Any, *, where: str = "", environ: Mapping[str, str] | None = None
) -> list[str]:
    """Every reference in `value` that cannot be resolved here, one sentence each."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = ((f"{where}.{k}" if where else str(k), v)
                                            for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        found = problem(value, where=where, environ=environ)
        return [found] if found else []
    return [line for sub, v in items for line in tree_problems(v, where=sub, environ=environ)]


def shown(text: Any) -> Any:
    """What output may show of a configured value: `***` for a reference (its value is
    never shown, and neither is where it lives), a `literal:` string unwrapped."""
    if not isinstance(text, str):
        return text
    return MASK if is_reference(text) else plain(text)


def mask(text: str, secrets: Iterable[str | Secret]) -> str:
    """`text` with every occurrence of each secret value replaced by `***` (longest first,
    so a secret that contains another is hidden whole)."""
    values = {s.reveal() if isinstance(s, Secret) else s for s in secrets}
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _read_env(name: str, where: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None:
        raise SecretError(_at(where, f"environment variable {name} is not set (from 'env:{name}')"))
    return value


def _read_file(path: str, where: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretError(_at(where, f"secret file {path} does not exist")) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretError(_at(where, f"secret file {path} cannot be read: {reason}")) from None
    return _TRAILING_NEWLINE.sub("", text)


def _at(where: str, sentence: str) -> str:
    return f"{where}: {sentence}" if where else sentence
