"""runs.event_key, event, payload, traceparent: runs the world starts (file, webhook)

Why: an event (a file that landed, a webhook delivery) is a history row before its run
starts, so a kill -9 between "seen" and "started" loses and doubles nothing. Its slot key
is (schedule, event_key) -- the file's identity (path, size, mtime) or the delivery's key --
unique among the rows that have one (a partial unique index: clock slots keep theirs).
`event` is the run JSON's `event` object; `payload` a webhook's JSON body (the `payload`
input, also after a restart); `traceparent` the caller's W3C trace context.

Downgrade: the index and the four columns go; event rows stay as plain rows.

Revision ID: 20261207_01
Revises: 20261130_07
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261207_01"
down_revision = "20261130_07"
branch_labels = None
depends_on = None

INDEX = "uq_runs_event"
WHERE = sa.text('"event_key" IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("event_key", sa.Text, nullable=True))
        batch.add_column(sa.Column("event", sa.JSON, nullable=True))
        batch.add_column(sa.Column("payload", sa.JSON, nullable=True))
        batch.add_column(sa.Column("traceparent", sa.String(64), nullable=True))
    op.create_index(
        INDEX,
        "runs",
        ["schedule", "event_key"],
        unique=True,
        sqlite_where=WHERE,
        postgresql_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in ("traceparent", "payload", "event", "event_key"):
            batch.drop_column(column)
