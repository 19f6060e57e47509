"""daemons: one lease row per running daemon, for several daemons on one PostgreSQL

Why: daemons sharing one history must tell a dead daemon's `queued`/`running` rows from a
live one's. Each daemon holds a row here (id = its instance_id, host, pid, started,
last_seen), renewed every `lease_s / 3` with the database's clock; rows of a daemon whose
lease expired are reaped `crashed` by another. `reload_requested` carries a reload to the
other daemons. A new table: existing rows are untouched.

Revision ID: 20261130_05
Revises: 20261130_02
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_05"
down_revision = "20261130_02"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reload_requested", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_daemons"),
    )


def downgrade() -> None:
    op.drop_table("daemons")
