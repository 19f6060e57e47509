"""Telling someone: each run's log kept with the run, and Apprise notifications
of outcomes -- both listen to the runner's run events.

Imports only from: leaves, schedule, history, pipeline, runner. This file stays a docstring:
importing the package costs nothing.

Modules:
    delivery.py       Delivering notifications: the Sender, its counts, URLs shown privately.
    notifications.py  Telling someone: Apprise notifications of run outcomes.
    runlogs.py        Each run's log: everything logged and printed while it runs, kept with the
                      run.
"""
