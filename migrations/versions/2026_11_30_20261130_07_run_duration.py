"""runs.duration_s, and the indexes `flowerd stats` reads

Why: `flowerd stats` took every row's started_at / finished_at into Python to sort the
durations (6.4 s and 397 MB on 1,000,000 rows). A stored duration, written with the
terminal row, lets p50 / p95 be read off an index (schedule, duration_s) /
(pipeline, duration_s) one row at a time, and (pipeline, status) counts per pipeline
without reading the table. Existing rows get their duration from their timestamps.

Downgrade: the column and the three indexes go; nothing else changes.

Revision ID: 20261130_07
Revises: 20261130_06
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_07"
down_revision = "20261130_06"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_runs_schedule_duration_s": ["schedule", "duration_s"],
    "ix_runs_pipeline_duration_s": ["pipeline", "duration_s"],
    "ix_runs_pipeline_status": ["pipeline", "status"],
}
ENDED = "('success', 'failed', 'cancelled', 'timed_out', 'crashed')"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("duration_s", sa.Float, nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # julianday() arithmetic is good to ~0.1 ms: kept to the millisecond
        seconds = "ROUND((julianday(finished_at) - julianday(started_at)) * 86400.0, 3)"
    else:
        seconds = "EXTRACT(EPOCH FROM finished_at - started_at)"
    op.execute(
        f"UPDATE runs SET duration_s = {seconds} WHERE started_at IS NOT NULL "
        f"AND finished_at IS NOT NULL AND status IN {ENDED}"
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "runs", columns)
    _restat_sqlite()


def _restat_sqlite() -> None:
    """A database ANALYZEd before (the bench's, or one a user tuned) has statistics for
    the old indexes only; SQLite's planner then takes the new ones for too cheap (a run
    list by pipeline went from 0.1 ms to 200 ms). Statistics for all, or none."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    analyzed = bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
    ).first()
    if analyzed:
        op.execute("ANALYZE runs")


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("duration_s")
