"""A schedule file parsed table by table: only the tables whose text changed are parsed
again. A reload of 10,000 schedules in one file with one of them changed parses one
table's text, not 1.3 MB (tomli: ~0.3 s of CPU for the whole file).

The file's text is cut at the lines that open a plain table (`[name]`, a bare key, alone
on its line but for a comment). Each piece is parsed alone once (what it holds is kept by
its digest: parsing is a function of the text), and the pieces are the file only when
that is sure; otherwise the whole text is parsed as before:

- A cut is made at a line start. Were it inside a multi-line string or array of the
  file, the piece before it would end inside that string or array and fail to parse;
  so when every piece parses, each cut was between two statements, and each piece is
  read as the whole file reads it (by induction from the file's start).
- Each piece's document must hold exactly its own table (no `[name.sub]`, dotted key
  or `[[array]]` reaching another table), the text before the first cut nothing but
  comments and blank lines, and no name may open two pieces (TOML refuses a table
  defined twice: the whole parse says so, with its line).

Any piece that fails sends the whole text to tomli, whose message names the line in
the file. This module imports nothing of flowerd.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

try:  # tomllib's API; its compiled wheel is faster
    import tomli as tomllib
except ImportError:  # pragma: no cover - a dependency; tomllib reads the same
    import tomllib

_OPENS_TABLE = re.compile(r"^[ \t]*\[[ \t]*([A-Za-z0-9_-]+)[ \t]*\][ \t]*(?:#[^\n]*)?$", re.M)
# a piece's digest -> what its document holds: its one table's name, "" (nothing), None
# (it fails, or holds more). Digests and names, not the tables: 10,000 cost ~1 MB.
_KNOWN: dict[bytes, str | None] = {}
MAX_KNOWN = 100_000


Piece = tuple[str, str, bytes, Any]  # (table name, its text, its digest, its table or None)


def pieces(text: str) -> list[Piece] | None:
    """The file's pieces in file order, when the pieces read alone are the file (see
    above); None when that is not sure. Only pieces not seen before are parsed, and
    those come with their table (None: use `table` if it is needed)."""
    cuts = [match.start() for match in _OPENS_TABLE.finditer(text)]
    if not cuts or _holds(text[: cuts[0]])[0] != "":
        return None
    found: list[Piece] = []
    names: set[str] = set()
    for start, end in zip(cuts, [*cuts[1:], len(text)], strict=True):
        piece = text[start:end]
        digest = hashlib.blake2b(piece.encode(), digest_size=16).digest()
        name, document = _holds(piece, digest)
        if not name or name in names:  # defined twice: the whole parse says where
            return None
        names.add(name)
        found.append((name, piece, digest, None if document is None else document[name]))
    return found


def table(piece: str, name: str) -> Any:
    """The table a piece that `pieces` handed out defines."""
    return tomllib.loads(piece)[name]


def loads(text: str) -> dict[str, Any]:
    """tomllib.loads(text), as the pieces read (what daemon.schedule.files reads)."""
    found = pieces(text)
    if found is None:
        return tomllib.loads(text)
    return {name: table(piece, name) for name, piece, _, _ in found}


def _holds(piece: str, digest: bytes | None = None) -> tuple[str | None, dict | None]:
    """(what the piece holds, its document when it was parsed now)."""
    if not piece.strip():
        return "", None
    digest = digest or hashlib.blake2b(piece.encode(), digest_size=16).digest()
    if digest in _KNOWN:
        return _KNOWN[digest], None
    try:
        document = tomllib.loads(piece)
    except tomllib.TOMLDecodeError:
        document = None
    held = None if document is None or len(document) > 1 else next(iter(document), "")
    if len(_KNOWN) >= MAX_KNOWN:
        _KNOWN.clear()
    _KNOWN[digest] = held
    return held, document
