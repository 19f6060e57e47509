"""runs and paused_schedules: the first history schema

Why: flowerd records one row per run (a slot of a schedule, or a manual run) so a slot
is never run twice -- the unique slot key (schedule, scheduled_at) -- and so `flowerd
runs` / `stats` can answer from it; the indexes serve the CLI filters, newest first.
`paused_schedules` makes `flowerd pause` survive a restart.

The schema is written out here, not imported from daemon.history: a migration is a
snapshot of the schema at its time and must not change when the models do. (Times are
DateTime(timezone=True): text in UTC on SQLite, timestamptz on PostgreSQL.)

Revision ID: 20261124_01
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261124_01"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("schedule", sa.String(200)),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("async_driver", sa.Boolean, nullable=False),
        sa.Column("final_vars", sa.JSON, nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("result_summary", sa.Text),
        sa.Column("error_type", sa.String(200)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_traceback", sa.Text),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("instance_id", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("schedule", "scheduled_at", name="uq_runs_schedule_scheduled_at"),
    )
    op.create_index("ix_runs_run_at", "runs", ["run_at"])
    op.create_index("ix_runs_schedule_run_at", "runs", ["schedule", "run_at"])
    op.create_index("ix_runs_schedule_status_run_at", "runs", ["schedule", "status", "run_at"])
    op.create_index("ix_runs_pipeline_run_at", "runs", ["pipeline", "run_at"])
    op.create_index("ix_runs_status_run_at", "runs", ["status", "run_at"])
    op.create_table(
        "paused_schedules",
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("schedule", name="pk_paused_schedules"),
    )


def downgrade() -> None:
    op.drop_table("paused_schedules")
    op.drop_table("runs")  # its indexes go with it
