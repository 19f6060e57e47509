"""run_logs: each run's log lines, kept with the run

Why: a run's own log lines and prints went to the daemon's stderr, interleaved with every
other run, and were not kept; `flowerd runs logs ID` and the notifications need them per
run. One row per line (run id, its order in the run, time, level, logger, message), the
primary key (run_id, seq) serving "this run's lines in order". No foreign key: rebuilding
`runs` in a batch migration must not cascade into the logs; prune deletes them itself.

Revision ID: 20261130_04
Revises: 20261130_01
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_04"
down_revision = "20261130_01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_logs",
        sa.Column("run_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("logger", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_run_logs"),
    )


def downgrade() -> None:
    op.drop_table("run_logs")
