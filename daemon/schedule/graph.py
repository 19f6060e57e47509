"""The `after` graph's checks: every upstream a schedule, and no cycle.

Loading schedules checks them; orchestration/upstream.py runs the graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from daemon.errors import did_you_mean


def graph_problems(schedules: Iterable[Any], known: Iterable[str] = ()) -> list[str]:
    """Unknown upstream names and cycles, one line each naming file, schedule, field.
    `known`: every schedule id in the files (one with problems of its own is no unknown)."""
    from daemon.schedule.files import display_path

    by_id = {s.id: s for s in schedules}
    names = set(by_id) | set(known)
    problems = []
    for schedule in by_id.values():
        for name in schedule.after:
            if name not in names:
                problems.append(
                    f"{display_path(schedule.file)}: [{schedule.id}] field 'after': no "
                    f"schedule {name!r}{did_you_mean(name, sorted(names))}"
                )
    for cycle in cycles({s.id: [n for n in s.after if n in by_id] for s in by_id.values()}):
        first = by_id[cycle[0]]
        problems.append(
            f"{display_path(first.file)}: [{first.id}] field 'after': a cycle: "
            f"{' -> '.join([*cycle, cycle[0]])} (each runs after the next; none could ever run)"
        )
    return problems


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle's members (strongly connected components with an edge inside), in
    order of the path through them; Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(list(reversed(component)))
    return found
