"""A schedule file parsed table by table: only the tables whose text changed are parsed
again. A reload of 10,000 schedules in one file with one of them changed parses one
table's text, not 1.3 MB (tomli: ~0.3 s of CPU for the whole file).

The file's text is cut at the lines that open a plain table (`[name]`, a bare key, alone
on its line but for a comment). Each piece is parsed alone (kept by its text: parsing is
a function of the text), and the pieces' documents joined are the file's document only
when that is sure; otherwise the whole text is parsed as before:

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

import re
from typing import Any

try:  # tomllib's API; its compiled wheel is faster
    import tomli as tomllib
except ImportError:  # pragma: no cover - a dependency; tomllib reads the same
    import tomllib

_OPENS_TABLE = re.compile(r"^[ \t]*\[[ \t]*([A-Za-z0-9_-]+)[ \t]*\][ \t]*(?:#[^\n]*)?$", re.M)
_PIECES: dict[str, dict[str, Any] | None] = {}  # a piece's text -> its document (None: fails)
MAX_PIECES = 100_000


def loads(text: str) -> dict[str, Any]:
    """tomllib.loads(text), parsing again only the tables not seen before."""
    document = _by_pieces(text)
    return tomllib.loads(text) if document is None else document


def _by_pieces(text: str) -> dict[str, Any] | None:
    """The document joined from its pieces, or None when that is not sure (see above)."""
    cuts = [match.start() for match in _OPENS_TABLE.finditer(text)]
    if not cuts or text[: cuts[0]].strip() and _piece(text[: cuts[0]]) != {}:
        return None
    document: dict[str, Any] = {}
    for start, end in zip(cuts, [*cuts[1:], len(text)], strict=True):
        piece = _piece(text[start:end])
        if piece is None or len(piece) != 1:
            return None
        ((name, table),) = piece.items()
        if name in document:  # defined twice: the whole parse says where
            return None
        document[name] = table
    return document


def _piece(text: str) -> dict[str, Any] | None:
    if text in _PIECES:
        return _PIECES[text]
    try:
        document: dict[str, Any] | None = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        document = None
    if len(_PIECES) >= MAX_PIECES:
        _PIECES.clear()
    _PIECES[text] = document
    return document
