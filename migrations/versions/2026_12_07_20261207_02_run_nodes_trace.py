"""runs.nodes, nodes_omitted, trace_id, links: what was seen inside a run

Why: flowerd runs the Hamilton driver itself, so it sees every node; the run's row keeps
each executed node's start, duration and status (`nodes`: at most 1,000, past that the
slowest 1,000 and `nodes_omitted` the count left out), the run's OpenTelemetry trace id
(`trace_id`, 32 hex digits) and its links into tracking tools (`links`, e.g. the Hamilton
UI's page of the run). Existing rows get NULLs: nothing was recorded for them.

Downgrade: the four columns go; nothing else changes.

Revision ID: 20261207_02
Revises: 20261207_01
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261207_02"
down_revision = "20261207_01"
branch_labels = None
depends_on = None

COLUMNS = (
    ("nodes", sa.JSON),
    ("nodes_omitted", sa.Integer),
    ("trace_id", sa.String(32)),
    ("links", sa.JSON),
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
