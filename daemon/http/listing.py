"""The runs list of `/api/runs` and the page's `/runs`: paged and bounded (DESIGN.md
"HTTP": at most MAX_ROWS rows, newest first; `before=ID` gives the page below ID).

One answer never holds the event loop for long nor takes unbounded memory: rows are read
CHUNK_ROWS at a time (a keyset on the last row, so each read is one short indexed query),
made records in the reader's thread and JSON in a thread, at most READS_AT_ONCE such
steps at a time across all requests (so eight hostile readers neither fill the default
executor the runner's process starts use, nor take turns at the GIL with the loop eight
ways), and the JSON stops at MAX_BYTES (the rest is the next page).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

MAX_ROWS = 1_000
CHUNK_ROWS = 100
READS_AT_ONCE = 2
MAX_BYTES = 8 * 1024 * 1024
ROWS_PER_TURN = 20


class Listing:
    """Pages of runs from one history, for every request of one HTTP server."""

    def __init__(self, history: Any):
        self._history = history
        self._steps = asyncio.Semaphore(READS_AT_ONCE)

    async def records(self, filters: dict) -> list:
        """The page's rows (RunRecords): at most `filters["limit"]` (<= MAX_ROWS)."""
        return [record async for chunk in self._chunks(filters) for record in chunk]

    async def json(self, filters: dict) -> tuple[bytes, int | None]:
        """The JSON array of the page's rows, and the id to ask `before=` for the next
        page (None: this page ended the list)."""
        pieces: list[bytes] = []
        size, last, more = 2, None, False
        async for chunk in self._chunks(filters):
            async with self._steps:
                dumped = await asyncio.to_thread(_dump, chunk, MAX_BYTES - size)
            pieces += dumped
            size += sum(len(piece) + 1 for piece in dumped)
            if dumped:
                last = chunk[len(dumped) - 1].id
            if len(dumped) < len(chunk):
                more = True  # the byte bound, not the rows, ended this page
                break
        rows = len(pieces)
        full = more or rows >= min(filters["limit"], MAX_ROWS)
        return b"[" + b",".join(pieces) + b"]", last if full and rows else None

    async def _chunks(self, filters: dict) -> AsyncIterator[list]:
        query = dict(filters)
        left, before = min(query.pop("limit"), MAX_ROWS), query.pop("before", None)
        if before is not None:
            await self._history.get_run(before)  # RunNotFound: a 404, not an empty page
        while left > 0:
            size = min(CHUNK_ROWS, left)
            async with self._steps:
                chunk = await self._history.list_runs(**query, limit=size, before=before)
            if chunk:
                yield chunk
            if len(chunk) < size:
                return
            left, before = left - size, chunk[-1].id


def _dump(records: list, budget: int) -> list[bytes]:
    """Each record's JSON, as many as fit in `budget` bytes (at least one, so a page
    always moves on)."""
    pieces: list[bytes] = []
    for record in records:
        piece = json.dumps(record.to_json()).encode()
        budget -= len(piece) + 1
        if budget < 0 and pieces:
            break
        pieces.append(piece)
        if len(pieces) % ROWS_PER_TURN == 0:
            time.sleep(0)  # the GIL to the event loop's thread (see _records_of)
    return pieces
