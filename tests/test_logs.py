"""log_config(): one handler, run ids on every line, journald priorities, JSON lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from datetime import datetime

import pytest

from daemon import logs
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
