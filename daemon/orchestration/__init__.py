"""Between schedules: `after` (upstream), pools shared by schedules,
deadlines and the failure policy, wired to the runner's run events.

Imports only from: leaves, schedule, history, pipeline, runner. This file stays a docstring:
importing the package costs nothing.

Modules:
    deadlines.py  `deadline = "45m"`: a slot not finished this long after its time is told once
                  as `late`.
    failures.py   `pause_after_failures = N`: a schedule that keeps failing pauses itself.
    upstream.py   `after = ["extract", "prices"]`: a schedule that runs when its upstreams have
                  succeeded.
    wiring.py     Across schedules: what joins the daemon for orchestration (DESIGN.md "Across
                  schedules") -- pools (daemon.runner.pools), deadlines
"""
