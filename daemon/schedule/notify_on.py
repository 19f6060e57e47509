"""The states a schedule's `notify_on` may name, and its default (tell/notifications.py
tells them; a schedule file names them).
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.errors import did_you_mean

NOTIFY_STATES = ("failed", "timed_out", "crashed", "missed", "recovered", "paused", "late",
                 "success")  # fmt: skip
DEFAULT_NOTIFY_ON = ("failed", "timed_out", "crashed", "missed", "recovered", "paused")


def check_states(states: Iterable[str]) -> list[str]:
    """`notify_on` as given, or ValueError naming the unknown state (with a guess)."""
    states = list(states)
    for state in states:
        if state not in NOTIFY_STATES:
            raise ValueError(
                f"{state!r} is not a state to notify on{did_you_mean(state, NOTIFY_STATES)}; "
                f"states: {', '.join(NOTIFY_STATES)}"
            )
    return states
