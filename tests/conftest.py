"""Shared fixtures: small and generic. Every test gets its own real files under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract import DEFAULT_WAIT_SCALE, WAIT_SCALE


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """An empty project directory (what `--base-dir` points at): no schedules, no
    pipelines, no history yet."""
    path = tmp_path / "project"
    (path / "schedules").mkdir(parents=True)
    (path / "pipelines").mkdir()
    return path


@pytest.fixture
def db_path(base_dir: Path) -> Path:
    """Where the default settings put the history database (not created yet)."""
    return base_dir / ".flowerd" / "history.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite+aiosqlite:///{db_path}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The hang guards (pyproject's `timeout`, each @pytest.mark.timeout) are sized for the
    default WAIT_SCALE like every wait bound; a busier machine's larger
    FLOWERD_TEST_WAIT_SCALE stretches them alike, so one knob sizes the whole suite."""
    factor = WAIT_SCALE / DEFAULT_WAIT_SCALE
    if factor <= 1:
        return
    default = float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        timeout = marker.args[0] if marker is not None and marker.args else default
        if timeout:
            item.add_marker(pytest.mark.timeout(timeout * factor), append=False)
