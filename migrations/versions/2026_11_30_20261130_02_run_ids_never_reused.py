"""runs.id AUTOINCREMENT: a run id is never given out again

Why: SQLite's rowid picks max(id) + 1, so after a prune (or any delete) of the newest
rows the next run got an id that already meant another run -- `[1]` in the journal and
"run 1" in a notification named two different runs. `AUTOINCREMENT` makes SQLite keep
the largest id ever given in `sqlite_sequence` and never go below it. SQLite cannot add
it to an existing table, so the table is rebuilt (batch mode, every index and the
unique slot key kept; the copied rows set the sequence to the largest id present).
PostgreSQL's serial sequence never reuses a value anyway: nothing to do there.

Revision ID: 20261130_02
Revises: 20261130_01
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_02"
down_revision = "20261130_01"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "runs", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
