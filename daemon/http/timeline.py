"""A run's nodes as a timeline for the page's run view: one bar per node, placed by its
start and sized by its duration within the run's span (plain HTML bars, no script).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

MIN_WIDTH_PCT = 0.4  # a node of microseconds still shows as a sliver


def bars(record: Any) -> list[dict[str, Any]]:
    """[{name, status, left, width (percent of the run), duration_s, started_at}], in the
    order the nodes started; a skipped node (never started) has no bar (left None)."""
    nodes = list(record.nodes or [])
    starts = [_at(n["started_at"]) for n in nodes]
    known = [s for s in starts if s is not None]
    if not known:
        return [_bar(n, None, None) for n in nodes]
    origin = min(known)
    end = max(s + n["duration_s"] for s, n in zip(starts, nodes, strict=True) if s is not None)
    if record.started_at is not None and record.finished_at is not None:
        origin = min(origin, record.started_at.timestamp())
        end = max(end, record.finished_at.timestamp())
    span = max(end - origin, 1e-9)
    out = []
    for start, node in zip(starts, nodes, strict=True):
        if start is None:
            out.append(_bar(node, None, None))
            continue
        left = 100.0 * (start - origin) / span
        width = max(100.0 * node["duration_s"] / span, MIN_WIDTH_PCT)
        out.append(_bar(node, round(left, 3), round(min(width, 100.0 - left), 3)))
    return out


def _bar(node: dict, left: float | None, width: float | None) -> dict[str, Any]:
    return {
        "name": node["name"],
        "status": node["status"],
        "duration_s": node["duration_s"],
        "started_at": node["started_at"],
        "left": left,
        "width": width,
    }


def _at(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None
