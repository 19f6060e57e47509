"""Settings: flags > FLOWERD_* environment > flowerd.toml > defaults; bad input is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import SettingsError
from daemon.schedule.table import check_defaults
from daemon.settings import load_settings
from tests.contract import flowerd_here


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("FLOWERD_")]:
        monkeypatch.delenv(name)


def test_defaults(tmp_path: Path):
    s = load_settings(tmp_path)
    assert (s.timezone, s.max_concurrent_runs, s.threads, s.shutdown_grace) == ("UTC", 16, 4, 30)
    assert s.db_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/.flowerd/history.db"
    assert s.control_socket == tmp_path.resolve() / ".flowerd" / "flowerd.sock"


def test_flag_beats_env_beats_file(tmp_path: Path, monkeypatch):
    (tmp_path / "flowerd.toml").write_text(
        'threads = 2\ntimezone = "Europe/Berlin"\nlog_level = "debug"\n'
    )
    assert load_settings(tmp_path).threads == 2
    assert load_settings(tmp_path).log_level == "DEBUG"
    monkeypatch.setenv("FLOWERD_THREADS", "6")
    assert load_settings(tmp_path).threads == 6
    assert load_settings(tmp_path).timezone == "Europe/Berlin"  # the file still counts
    assert load_settings(tmp_path, log_level="ERROR").log_level == "ERROR"


def test_db_takes_a_path_or_a_url_from_any_source(tmp_path: Path, monkeypatch):
    assert load_settings(tmp_path, database_url="h.db").db_url.startswith("sqlite+aiosqlite:///")
    monkeypatch.setenv("FLOWERD_DATABASE_URL", str(tmp_path / "env.db"))
    settings = load_settings(tmp_path)
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/env.db"
    assert settings.state_dir == tmp_path.resolve()  # the socket and lock live next to it
    pg = "postgresql+asyncpg://flowerd@db/flowerd"
    assert load_settings(tmp_path, database_url=pg).db_url == pg


def test_unknown_key_in_the_file_is_an_error_with_did_you_mean(tmp_path: Path):
    (tmp_path / "flowerd.toml").write_text("thread = 3\n")
    with pytest.raises(SettingsError, match=r"flowerd.toml: unknown setting 'thread'.*'threads'"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "field"),
    [("threads = 0\n", "threads"), ('timezone = "Mars/Base"\n', "timezone"),
     ('log_format = "xml"\n', "log_format"), ("shutdown_grace = -1\n", "shutdown_grace"),
     ("threads = [\n", "flowerd.toml")],
)  # fmt: skip
def test_bad_values_name_the_setting(tmp_path: Path, text: str, field: str):
    (tmp_path / "flowerd.toml").write_text(text)
    with pytest.raises(SettingsError, match=field):
        load_settings(tmp_path)


def test_cli_reports_bad_settings_as_a_usage_error(tmp_path: Path):
    (tmp_path / "flowerd.toml").write_text("thread = 3\n")
    done = flowerd_here(tmp_path, "runs")
    assert done.returncode == 2 and "unknown setting 'thread'" in done.stderr
    assert "Traceback" not in done.stderr


def test_env_lists_and_tables_are_json_and_tables_merge_with_the_file(tmp_path: Path, monkeypatch):
    (tmp_path / "flowerd.toml").write_text("pools = { warehouse = 2, api = 5 }\n")
    monkeypatch.setenv("FLOWERD_POOLS", '{"warehouse": 3}')
    monkeypatch.setenv("flowerd_notify", '["json://localhost"]')  # any case
    monkeypatch.setenv("FLOWERD_NOT_A_SETTING", "x")  # someone else's: not ours to refuse
    settings = load_settings(tmp_path)
    assert settings.pools == {"warehouse": 3, "api": 5}
    assert settings.notify == ["json://localhost"]
    assert load_settings(tmp_path, pools={"api": 1}).pools == {"warehouse": 3, "api": 1}


def test_env_that_is_not_json_names_the_variable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FLOWERD_POOLS", "warehouse=2")
    with pytest.raises(SettingsError, match="FLOWERD_POOLS: not valid JSON"):
        load_settings(tmp_path)
    monkeypatch.setenv("FLOWERD_POOLS", '{"warehouse": 0}')
    with pytest.raises(SettingsError, match="pools.*FLOWERD_POOLS"):
        load_settings(tmp_path)


def test_project_defaults_for_schedules(tmp_path: Path, monkeypatch):
    (tmp_path / "flowerd.toml").write_text("[defaults]\nasync_driver = false\nmax_retries = 2\n")
    assert load_settings(tmp_path).defaults == {"async_driver": False, "max_retries": 2}
    monkeypatch.setenv("FLOWERD_DEFAULTS", '{"max_retries": 3, "notify": ["json://h/x"]}')
    found = load_settings(tmp_path).defaults  # the variable's keys over the file's
    assert found == {"async_driver": False, "max_retries": 3, "notify": ["json://h/x"]}


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("async_drivr = false", "unknown field 'async_drivr' (did you mean 'async_driver'?)"),
        ('cron = "* * * * *"', "[defaults] field 'cron' is what makes a schedule"),
        ('max_retries = "two"', "field 'max_retries': expected an integer, got \"two\""),
    ],
)
def test_project_defaults_name_the_bad_key(tmp_path: Path, table: str, says: str):
    (tmp_path / "flowerd.toml").write_text(f"[defaults]\n{table}\n")
    with pytest.raises(SettingsError) as caught:
        check_defaults(load_settings(tmp_path))  # the schedule package checks [defaults]
    assert says in str(caught.value) and str(tmp_path / "flowerd.toml") in str(caught.value)
