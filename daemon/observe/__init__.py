"""(Coming.) Hamilton UI tracking, OpenTelemetry, OpenLineage: listeners and
driver adapters the daemon hands down (pipeline/ is handed them and never
imports this package). Empty until those features land.

Imports only from: leaves, schedule, history, pipeline, runner. This file stays a docstring:
importing the package costs nothing.
"""
