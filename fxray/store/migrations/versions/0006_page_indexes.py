"""Indexes for the web UI's pages: ``runs(created_at, id)`` (the runs list and its keyset
paging over every service), ``events(received_at, id)`` (the events stream, which polls for rows
after a cursor) and ``events(received_at) WHERE run_id IS NOT NULL`` (the flow map: the events
runs emitted, in a time window).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

# (index, table, columns); models.py declares the same
INDEXES = (
    ("ix_runs_created_id", "runs", ["created_at", "id"]),
    ("ix_events_received_id", "events", ["received_at", "id"]),
)


EMITTED = "ix_events_emitted_received"
EMITTED_WHERE = "run_id IS NOT NULL"


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    where = sa.text(EMITTED_WHERE)
    op.create_index(EMITTED, "events", ["received_at"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index(EMITTED, table_name="events")
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
