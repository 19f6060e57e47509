"""audit_log: who did what to the daemon

Why: a daemon a team shares must say who paused the nightly load or triggered a backfill
at 3 a.m. Each act (trigger, pause, resume, rerun, backfill, reload, stop) through the
control socket (the Unix user) or HTTP (the token's name) is a row, written before the
act takes effect, and pruned with the runs.

Downgrade: the table goes.

Revision ID: 20261207_03
Revises: 20261207_02
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261207_03"
down_revision = "20261207_02"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("via", sa.String(8), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("schedule", sa.String(200)),
        sa.Column("run_id", sa.Integer),
        sa.Column("detail", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
