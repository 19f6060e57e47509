"""log_config(): one handler, run ids on every line, journald priorities, JSON lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from datetime import datetime

import pytest

from daemon import logs, revealed
from daemon.logs import log_config, run_id_var, run_level_var

THIRD_PARTIES = ("apscheduler", "hamilton", "aiosqlite")
log = logging.getLogger("daemon.test_logs")


@pytest.fixture(autouse=True)
def restore_logging():
    """log_config changes process-wide state; put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTIES}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.fixture
def journal(tmp_path):
    """A stream and the JOURNAL_STREAM value systemd would set for it."""
    with open(tmp_path / "journal", "w+") as stream:
        st = os.fstat(stream.fileno())
        yield stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_flowerd_handler", False)]


def test_text_lines_have_a_timestamp_and_the_run_id():
    out = io.StringIO()
    log_config("INFO", environ={}, stream=out)
    log.info("outside %s", "a run")
    token = run_id_var.set(42)
    try:
        log.warning("inside")
    finally:
        run_id_var.reset(token)
    log.debug("hidden")
    first, second = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"  # ISO, its offset shown
    assert re.fullmatch(stamp + r" INFO daemon\.test_logs \[-\] outside a run", first)
    assert re.fullmatch(stamp + r" WARNING daemon\.test_logs \[42\] inside", second)


def test_under_journald_lines_carry_priorities_and_no_timestamps(journal):
    stream, env = journal
    log_config("DEBUG", environ=env, stream=stream)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    stream.seek(0)
    assert stream.read().splitlines() == [
        "<7>DEBUG daemon.test_logs [-] d",
        "<6>INFO daemon.test_logs [-] i",
        "<4>WARNING daemon.test_logs [-] w",
        "<3>ERROR daemon.test_logs [-] e",
        "<2>CRITICAL daemon.test_logs [-] c",
    ]


def test_every_traceback_line_keeps_the_priority(journal):
    stream, env = journal
    log_config("INFO", environ=env, stream=stream)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("boom")
    stream.seek(0)
    lines = stream.read().splitlines()
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"


def test_an_inherited_journal_stream_is_ignored(journal):
    """JOURNAL_STREAM names another stream (stderr was redirected): plain text lines."""
    _, env = journal
    out = io.StringIO()
    log_config("INFO", environ=env, stream=out)
    log.info("hello")
    assert not out.getvalue().startswith("<") and out.getvalue().endswith("hello\n")


def test_json_lines_parse():
    out = io.StringIO()
    log_config("INFO", "json", environ={}, stream=out)
    log.info("plain %d", 1)
    token = run_id_var.set(7)
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    finally:
        run_id_var.reset(token)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert set(first) == {"time", "level", "logger", "message", "run_id", "trace_id", "exc_info"}
    assert first["message"] == "plain 1" and first["run_id"] is None
    assert first["level"] == "INFO" and first["logger"] == "daemon.test_logs"
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert first["exc_info"] is None
    assert second["run_id"] == 7 and second["level"] == "ERROR"
    assert second["exc_info"].endswith("ValueError: bad")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_hides_the_secrets_read_like_the_message(monkeypatch, fmt: str):
    """exc_info and stack text go through the same masking as the message (issue: a
    pipeline's or notifier's exception text holding a secret value)."""
    monkeypatch.setattr(revealed, "_values", set())
    monkeypatch.setenv("FLOWERD_TEST_LOG_SECRET", "s3cr3t-in-a-traceback")
    assert revealed.reveal("env:FLOWERD_TEST_LOG_SECRET") == "s3cr3t-in-a-traceback"
    out = io.StringIO()
    log_config("INFO", fmt, environ={}, stream=out)
    try:
        raise ValueError("the service refused s3cr3t-in-a-traceback")
    except ValueError:
        log.exception("refused %s", "s3cr3t-in-a-traceback")
    log.warning("where: s3cr3t-in-a-traceback", stack_info=True)  # the stack shows this line
    text = out.getvalue()
    assert "s3cr3t-in-a-traceback" not in text
    assert "ValueError: the service refused ***" in text.replace("\\n", "\n")
    assert "refused ***" in text and "Stack (most recent call last)" in text


def test_json_under_journald_gets_the_priority_prefix(journal):
    stream, env = journal
    log_config("INFO", "json", environ=env, stream=stream)
    log.warning("careful")
    stream.seek(0)
    line = stream.read()
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["message"] == "careful"


def test_log_config_twice_keeps_one_handler_and_the_hosts():
    root = logging.getLogger()
    host = logging.StreamHandler(io.StringIO())
    host.setLevel(logging.ERROR)
    host_formatter = logging.Formatter("HOST %(message)s")
    host.setFormatter(host_formatter)
    root.addHandler(host)
    first, second = io.StringIO(), io.StringIO()
    log_config("INFO", environ={}, stream=first)
    log_config("INFO", "json", environ={}, stream=second)
    log.info("once")
    assert len(ours()) == 1
    assert first.getvalue() == "" and json.loads(second.getvalue())["message"] == "once"
    assert host in root.handlers and host.level == logging.ERROR
    assert host.formatter is host_formatter and host.filters == []
    root.removeHandler(host)


def test_a_runs_own_level_can_go_below_the_global_level():
    """The handler has no level of its own, so a run with log_level=DEBUG is heard even
    when the daemon logs at WARNING (pipeline loggers are run-scoped)."""
    out = io.StringIO()
    log_config("WARNING", environ={}, stream=out)
    pipeline_log = logging.getLogger(logs.PIPELINE_LOGGER_ROOT + ".test_logs_module")
    logs.scope_pipeline_loggers()
    pipeline_log.debug("not in a run")
    token = run_level_var.set(logging.DEBUG)
    try:
        pipeline_log.debug("in a debug run")
    finally:
        run_level_var.reset(token)
    assert out.getvalue().count("\n") == 1 and "in a debug run" in out.getvalue()


@pytest.mark.parametrize(("level", "hamilton_heard"), [("INFO", False), ("DEBUG", True)])
def test_noisy_third_parties_are_quieted(level, hamilton_heard):
    out = io.StringIO()
    log_config(level, environ={}, stream=out)
    logging.getLogger("apscheduler.executors.default").info('Running job "x"')
    logging.getLogger("apscheduler.scheduler").warning("missed by 5s")
    logging.getLogger("hamilton.graph").info("built")
    logging.getLogger("hamilton.driver").error("Oh no an error! Need help? Join our slack")
    text = out.getvalue()
    assert "Running job" not in text and "missed by 5s" in text
    assert ("built" in text) is hamilton_heard
    assert "slack" not in text  # the runner logs the real error, with the run id


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'loud'"):
        log_config("loud", environ={})
    with pytest.raises(ValueError, match="'xml'"):
        log_config("INFO", "xml", environ={})
    assert ours() == []


LEAKY = """
import logging
import threading

log = logging.getLogger(__name__)


def refused(token: str) -> str:
    def call_the_service():  # a thread of the pipeline's own: no run context
        try:
            raise ConnectionError(f"the service refused token {token}")
        except ConnectionError:
            log.exception("a worker thread of the pipeline failed")
        raise RuntimeError(f"the worker gave up on token {token}")  # threading.excepthook

    worker = threading.Thread(target=call_the_service)
    worker.start()
    worker.join()
    raise ValueError(f"the service refused token {token}")
"""
TOKEN = "tok-9f3a-secret-value"


def test_a_pipelines_tracebacks_never_show_an_env_input(tmp_path):
    """A real `flowerd serve` whose pipeline raises (and whose own thread logs a traceback
    and dies) with an `env:` input's value in the exception text: the daemon's log, `runs
    logs`, `runs show --json` and the page show `***`, never the value."""
    from tests.http.test_server import fetch
    from tests.serve import Served, cli, make_project, rows_where, wait_for

    base = make_project(
        tmp_path / "p",
        """
        [leaky]
        pipeline = "leaky"
        interval = "1d"
        async_driver = false
        final_vars = ["refused"]
        inputs = { token = "env:FLOWERD_TEST_TOKEN" }
        """,
        leaky=LEAKY,
    )
    env = {"FLOWERD_HTTP": "127.0.0.1:0", "FLOWERD_TEST_TOKEN": TOKEN}
    with Served(base, env=env) as served:
        url = served.wait_ready()["http"]
        run_id = served.ask("trigger", schedule="leaky")["run_id"]
        wait_for(lambda: rows_where(base, id=run_id, status="failed"), what="the failed run")
        wait_for(lambda: "the worker gave up" in served.log, what="the thread's traceback")
        page = fetch(f"{url}/runs/{run_id}")[2].decode()
        assert served.stop() == 0
    daemon_log = served.log
    shown = json.loads(cli(base, "runs", "show", str(run_id), "--json").stdout)
    logs = cli(base, "runs", "logs", str(run_id)).stdout
    # the paths were taken: each traceback is there, with the value masked
    assert "ConnectionError: the service refused token ***" in daemon_log
    assert "RuntimeError: the worker gave up on token ***" in daemon_log
    assert shown["error"]["message"] == "the service refused token ***"
    assert "ValueError: the service refused token ***" in shown["error"]["traceback"]
    assert "the service refused token ***" in logs and "refused token ***" in page
    for where, text in {
        "the daemon's log": daemon_log,
        "runs show --json": json.dumps(shown),
        "runs logs": logs,
        "the page": page,
    }.items():
        assert TOKEN not in text, where
