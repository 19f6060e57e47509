"""runs.result: a successful run's final vars, as JSON

Why: `flowerd runs --json` and the API promise `result` -- the final vars as a JSON
object, each value JSON where it can be and its repr string where it cannot, bounded per
value by `max_row_bytes` (a larger value is stored as a marker with its size and
sha256). Until now only a clipped Python repr (`result_summary`) was kept. A nullable
column: existing rows have no result, which reads as null.

Revision ID: 20261130_01
Revises: 20261124_01
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261130_01"
down_revision = "20261124_01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("result", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("result")
