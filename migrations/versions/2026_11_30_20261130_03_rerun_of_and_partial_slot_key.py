"""runs.rerun_of, and the slot key unique only among slot rows

Why: `flowerd rerun ID` and `flowerd backfill --rerun` run a slot again. The new row
keeps the `schedule` and `scheduled_at` of the run it repeats and names it in
`rerun_of`, so the unique slot key (schedule, scheduled_at) can no longer cover every
row: it becomes a partial unique index over the rows whose trigger holds a slot
(`schedule`, `catchup`, `backfill`, `upstream`). A slot is still launched at most once
(restart, reload, DST fold, several daemons); reruns and manual runs of a schedule are
left out of it. SQLite and PostgreSQL both have partial indexes.

Downgrade: the plain unique constraint comes back, so a row outside the slot key that
shares its slot with another row (a `rerun`, a `manual` run of a schedule at the same
instant) loses its `scheduled_at`; everything else is kept.

Revision ID: 20261130_03
Revises: 20261130_04
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_03"
down_revision = "20261130_04"
branch_labels = None
depends_on = None

SLOT_WHERE = sa.text("\"trigger\" IN ('schedule', 'catchup', 'backfill', 'upstream')")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_schedule_scheduled_at", type_="unique")
        batch.add_column(sa.Column("rerun_of", sa.Integer, nullable=True))
    op.create_index(
        "uq_runs_slot",
        "runs",
        ["schedule", "scheduled_at"],
        unique=True,
        sqlite_where=SLOT_WHERE,
        postgresql_where=SLOT_WHERE,
    )
    op.create_index("ix_runs_rerun_of", "runs", ["rerun_of"])


def downgrade() -> None:
    op.drop_index("ix_runs_rerun_of", table_name="runs")
    op.drop_index("uq_runs_slot", table_name="runs")
    op.execute(  # rows outside the slot key that share a slot with another row
        "UPDATE runs SET scheduled_at = NULL WHERE NOT (" + SLOT_WHERE.text + ") AND EXISTS "
        "(SELECT 1 FROM runs AS other WHERE other.schedule = runs.schedule "
        "AND other.scheduled_at = runs.scheduled_at AND other.id != runs.id)"
    )
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("rerun_of")
        batch.create_unique_constraint(
            "uq_runs_schedule_scheduled_at", ["schedule", "scheduled_at"]
        )
