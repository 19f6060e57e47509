"""(Coming.) What starts runs besides the clock: file arrivals, webhooks, and
their journal. Empty until those features land.

Imports only from: leaves, schedule, history, pipeline, runner. This file stays a docstring:
importing the package costs nothing.
"""
