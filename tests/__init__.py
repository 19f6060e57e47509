"""flowerd's tests: tests/<package>/test_<module>.py mirror daemon/; real-process
trials in tests/trials/; shared helpers here (contract, pg, serve, notify_socket)."""
