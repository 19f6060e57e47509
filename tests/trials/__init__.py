"""Real-process trials: whole `flowerd serve` daemons killed, faulted, fuzzed and
watched from outside (systemd, benchmarks, plain errors)."""
