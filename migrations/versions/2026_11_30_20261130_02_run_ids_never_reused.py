"""runs.id AUTOINCREMENT: a run id is never given out again

Why: SQLite's rowid picks max(id) + 1, so after a prune (or any delete) of the newest
rows the next run got an id that already meant another run -- `[1]` in the journal and
"run 1" in a notification named two different runs. `AUTOINCREMENT` makes SQLite keep
the largest id ever given in `sqlite_sequence` and never go below it. SQLite cannot add
it to an existing table, so the table is rebuilt (batch mode, every index and the
unique slot key kept; the copied rows set the sequence to the largest id present).
PostgreSQL's serial sequence never reuses a value anyway: nothing to do there.

Also runs.attempt_errors (JSON, nullable): when a run succeeds after retries, the errors
of its earlier attempts were lost; `error` stays null for a success (the contract), and
this list keeps them ([{type, message}], one per failed attempt before the last).

Revision ID: 20261130_02
Revises: 20261130_03
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_02"
down_revision = "20261130_03"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "runs", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.add_column(sa.Column("attempt_errors", sa.JSON, nullable=True))
    else:
        op.add_column("runs", sa.Column("attempt_errors", sa.JSON, nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "runs", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ) as batch:
            batch.drop_column("attempt_errors")
    else:
        op.drop_column("runs", "attempt_errors")
