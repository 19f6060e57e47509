"""systemd credentials for secret references: `flowerd service print | install` writes one
`LoadCredential=ID` line for each `file:` reference under the unit's credentials directory
(`$CREDENTIALS_DIRECTORY`, i.e. /run/credentials/<unit>/ID).

systemd then copies the credential ID from /etc/credstore/ (or /run/credstore/, ...) for
the service alone, readable by its (dynamic) user even when the source is root's 0600
file; `"file:/run/credentials/flowerd-shop.service/alice_token"` reads it. References are
found wherever they are written -- flowerd.toml and every schedule file, any field --
and never read here: only their names go in the unit.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon import secrets
from daemon.settings import SETTINGS_FILE, Settings

CREDENTIALS_ROOT = "/run/credentials"
_CREDENTIAL_ID = re.compile(r"[A-Za-z0-9_.-]+\Z")


def credential_lines(settings: Settings, unit: str) -> list[str]:
    """`LoadCredential=ID` for each reference under /run/credentials/<unit>/."""
    directory = f"{CREDENTIALS_ROOT}/{unit}/"
    names = set()
    for text in (text for doc in _documents(settings) for text in _strings(doc)):
        ref = secrets.parse(text)
        if ref is not None and ref.kind == "file" and ref.target.startswith(directory):
            name = ref.target[len(directory) :]
            if _CREDENTIAL_ID.match(name):
                names.add(name)
    if not names:
        return []
    return [
        "# secrets referenced as file:$CREDENTIALS_DIRECTORY/ID (source: /etc/credstore/ID)",
        *(f"LoadCredential={name}" for name in sorted(names)),
    ]


def _documents(settings: Settings) -> Iterator[Any]:
    files = [Path(settings.base_dir) / SETTINGS_FILE]
    files += sorted(Path(settings.schedules_dir).glob("*.toml"))
    for path in files:
        try:
            yield tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing or broken: `validate` says so, not this
            continue
    yield settings.model_dump(include={"http_token", "http_tokens", "notify"})


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
