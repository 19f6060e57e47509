"""Tables that fit the terminal: columns are dropped by priority, never cut in the middle
of an id, a schedule name or a status; one flexible column (an error) takes what is left,
on one line.

Times are shown by one rule everywhere: in the schedule's own timezone when the row has a
schedule, else in the `timezone` setting; JSON keeps ISO-8601 with its offset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from daemon.durations import shown_iso

WIDE = 200  # piped or captured without COLUMNS: full rows
FLEX_MIN = 12


@dataclass(frozen=True)
class Column:
    name: str
    drop: int = 0  # 0: always shown; else dropped lowest first when the row is too wide
    flex: bool = False  # takes the width that is left, cut with an ellipsis
    justify: str = "left"


def console():
    from rich.console import Console

    found = Console(highlight=False)
    if not found.is_terminal and "COLUMNS" not in os.environ:
        found.width = max(found.width, WIDE)
    return found


def _cell_len(cell: str) -> int:
    from rich.text import Text

    lines = Text.from_markup(cell).plain.splitlines() or [""]
    return max(len(line) for line in lines)


def table(columns: list[Column], rows: list[list[str]], width: int, **kwargs):
    """A rich Table of the columns that fit `width` (rows are markup strings)."""
    from rich.table import Table

    natural = [
        max([len(c.name), *(_cell_len(row[i]) for row in rows)]) for i, c in enumerate(columns)
    ]
    shown = list(range(len(columns)))

    def needed() -> int:
        fixed = sum(natural[i] for i in shown if not columns[i].flex)
        flex = sum(min(natural[i], FLEX_MIN) for i in shown if columns[i].flex)
        return fixed + flex + 3 * len(shown) + 1

    droppable = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop)
    for _, index in droppable:
        if needed() <= width:
            break
        shown.remove(index)
    out = Table(**kwargs)
    spare = width - needed()
    for i in shown:
        column = columns[i]
        if column.flex:
            out.add_column(
                column.name,
                no_wrap=True,
                overflow="ellipsis",
                max_width=max(FLEX_MIN, min(natural[i], FLEX_MIN + spare)),
            )
        else:
            out.add_column(
                column.name,
                no_wrap=True,
                overflow="fold",
                min_width=natural[i],
                justify=column.justify,
            )
    for row in rows:
        out.add_row(*(row[i] for i in shown))
    return out


def zone_of(schedule: str | None, zones: dict[str, str], default: str) -> ZoneInfo:
    return ZoneInfo(zones.get(schedule or "", default))


def shown_at(moment: datetime | None, zone: ZoneInfo, *, short: bool = False) -> str:
    """A time for people: ISO-8601 in `zone` (its offset shown), or `2026-12-01 09:00 CET`."""
    if moment is None:
        return "-"
    if short:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    return shown_iso(moment, zone)
