"""paused_schedules.reason: why a schedule paused itself

Why: `pause_after_failures = N` pauses a schedule after N runs in a row ended failed,
timed_out or crashed; `flowerd schedules --json` and `flowerd status` say why
(`paused_reason`). A pause by `flowerd pause` leaves it null. Nullable, so existing rows
(paused by hand) need no value.

Revision ID: 20261130_06
Revises: 20261130_05
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_06"
down_revision = "20261130_05"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("paused_schedules") as batch:
        batch.add_column(sa.Column("reason", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paused_schedules") as batch:
        batch.drop_column("reason")
