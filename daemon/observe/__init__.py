"""Inside a run: node timings for the history, and the sinks runs are reported to
(OpenTelemetry, the Hamilton UI, OpenLineage). Its rooms: listeners (the seam: RunStart /
NodeStart / NodeEnd / RunEnd, `RunListener`, `Sink`), nodes (one run's node timings,
bounded), taps (the Hamilton adapters handed down to daemon.pipeline, which never imports
this package), tracking (`Tracking`: the daemon's sinks and each run's listeners, handed
to the runner), sinks (settings section -> sink) and one module per sink.

Imports only from: leaves, schedule, history, pipeline, runner (and Hamilton's lifecycle
base classes, in taps). This file stays a docstring: importing the package costs nothing.
"""
