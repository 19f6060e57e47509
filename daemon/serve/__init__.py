"""`flowerd serve`: the daemon as a process -- composition root, start-up in
order, catch-up, the control socket, status and health, the lease in a shared
history, retention and systemd.

Imports only from: leaves, schedule, history, pipeline, runner, orchestration, tell,
incoming, observe, http. This file stays a docstring: importing the package costs nothing.

Modules:
    catchup.py    Catch-up at start-up: the slots that passed while no daemon ran.
    collector.py  Python's cyclic garbage collector, paused while a command builds what lives
                  on (start-up, `validate`, `schedules`).
    commands.py   What the control channel (and HTTP) asks of a running daemon: trigger, pause,
                  resume, reload
    control.py    The control channel: a Unix socket next to the database (mode 0600) that
                  `flowerd status | trigger | pause | resume | reload` talk to.
    daemon.py     The composition root of `flowerd serve`: builds, starts and drains everything.
    lease.py      This daemon's lease in a history several daemons may share (one PostgreSQL).
    retention.py  The `retention` setting: the daemon prunes finished runs older than it, off
                  the hot path.
    startup.py    Start-up of `flowerd serve`, in order: the locks, the schedules (validated),
                  the history (migrated; a dead daemon's runs reaped as `crashed`)
    status.py     How a running daemon is doing: `flowerd status` (and the HTTP API's), the
                  health of each part (`/healthz`, systemd's STATUS=)
    systemd.py    systemd integration: the notify protocol (`SystemdNotifier`) and the unit file
                  (`render_unit`).
    validate.py   Schedules checked end to end: `flowerd validate`, the start of `flowerd
                  serve`, and every reload.
"""
