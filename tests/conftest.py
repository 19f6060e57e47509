"""Shared fixtures: small and generic. Every test gets its own real files under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest


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
