"""Git repositories registered through the API (``fxray.store.repositories``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("last_commit", sa.String(64), nullable=True),
        sa.Column("last_synced_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_repositories_project", "repositories", ["project"])


def downgrade() -> None:
    op.drop_index("ix_repositories_project", table_name="repositories")
    op.drop_table("repositories")
