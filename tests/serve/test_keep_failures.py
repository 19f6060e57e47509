"""`retention_keep_failures = N`: each schedule's last N failed / timed-out runs outlive
`retention` and `flowerd db prune` (issue 26, item 4)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from daemon.history import History
from daemon.serve.retention import prune_once
from daemon.settings import load_settings
from tests.serve import cli, make_project, runs
from tests.serve.test_retention import OLD, YEARLY, seed


def test_db_prune_keeps_exactly_the_two_newest_failures(tmp_path: Path):
    base = make_project(tmp_path / "p", YEARLY)
    (base / "flowerd.toml").write_text("retention_keep_failures = 2\n")
    seed(base, 8)  # slots 0..7; the odd ones failed: 1, 3, 5, 7
    seed(base, 4, schedule="other")  # its failures (1, 3) are its own two
    done = cli(base, "db", "prune", "--older-than", "1d", "--yes")
    assert done.returncode == 0, done.stderr
    left = sorted((r.schedule, r.status, r.scheduled_at) for r in runs(base))
    minute = lambda n: OLD + timedelta(minutes=n)  # noqa: E731
    assert left == [
        ("other", "failed", minute(1)),
        ("other", "failed", minute(3)),  # also its newest slot
        ("tick", "failed", minute(5)),
        ("tick", "failed", minute(7)),  # also its newest slot
    ]


def test_the_daemons_retention_keeps_them_too(tmp_path: Path):
    base = make_project(tmp_path / "p", YEARLY)
    seed(base, 8)

    async def prune() -> int:
        async with History.open(load_settings(base).db_url) as history:
            return await prune_once(history, 86400.0, "1d", keep_failures=2)

    assert asyncio.run(prune()) == 6
    assert sorted(r.scheduled_at for r in runs(base)) == [
        OLD + timedelta(minutes=5),
        OLD + timedelta(minutes=7),
    ]
