"""Service names unique within a project: ``services.id`` (unique on the platform) and
``services.name`` (unique with ``services.project``).

The primary key column ``services.name`` becomes ``services.id`` with its values: every
existing service keeps the key its versions, triggers, schedules, runs, KV keys and ops data
use. ``services.name`` is added as a copy of it. New services outside the default project get
ids of the form ``<project>.<name>`` (:func:`fxray.store.records.qualified_service_id`), so the
columns that hold service ids widen to 128 characters and those that hold version ids
(``<service id>@<hash>``) to 160.

PostgreSQL renames and widens in place (its foreign keys follow the renamed column). SQLite
recreates the tables (batch mode) and points the foreign keys at ``services.id``; it must run
with foreign keys off (:func:`fxray.store.migrations.upgrade` does), or dropping the old
``services`` table would cascade to the rows that reference it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

SERVICE_ID = sa.String(128)
VERSION_ID = sa.String(160)
OLD_SERVICE = sa.String(64)
OLD_VERSION = sa.String(96)
UNIQUE_NAME = "uq_services_project_name"
# names for the unnamed foreign keys SQLite reflects, so that batch mode can drop them
_FK_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_REFERENCING = ("versions", "triggers", "schedules")
# (table, column, old type, new type) of the columns that hold service or version ids
_WIDENED = (
    ("versions", "service", OLD_SERVICE, SERVICE_ID),
    ("versions", "id", OLD_VERSION, VERSION_ID),
    ("triggers", "service", OLD_SERVICE, SERVICE_ID),
    ("triggers", "shadow_version", OLD_VERSION, VERSION_ID),
    ("schedules", "service", OLD_SERVICE, SERVICE_ID),
    ("runs", "service", OLD_SERVICE, SERVICE_ID),
    ("runs", "version_id", OLD_VERSION, VERSION_ID),
)


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _nullable(table: str, column: str) -> bool:
    return (table, column) == ("triggers", "shadow_version")


def _retype(widen: bool) -> None:
    """Widen (or narrow back) the columns holding ids; on SQLite also point each foreign key
    at the services table's key column as it is named after this step."""
    key = "id" if widen else "name"
    for table in ("versions", "triggers", "schedules", "runs"):
        with op.batch_alter_table(table, naming_convention=_FK_NAMES) as batch:
            for name, column, old, new in _WIDENED:
                if name == table:
                    batch.alter_column(
                        column,
                        type_=new if widen else old,
                        existing_type=old if widen else new,
                        existing_nullable=_nullable(table, column),
                    )
            if _sqlite() and table in _REFERENCING:
                fk = f"fk_{table}_service_services"
                batch.drop_constraint(fk, type_="foreignkey")
                batch.create_foreign_key(fk, "services", ["service"], [key], ondelete="CASCADE")


def _check_foreign_keys() -> None:
    if _sqlite():
        broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the migration: {broken[:5]}")


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.alter_column(
            "name",
            new_column_name="id",
            type_=SERVICE_ID,
            existing_type=OLD_SERVICE,
            existing_nullable=False,
        )
    with op.batch_alter_table("services") as batch:  # apart: a rename and a new column of the
        batch.add_column(sa.Column("name", sa.String(64), nullable=True))  # old name clash
    op.execute("UPDATE services SET name = id")
    with op.batch_alter_table("services") as batch:
        batch.alter_column("name", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint(UNIQUE_NAME, ["project", "name"])
    _retype(widen=True)
    _check_foreign_keys()


def downgrade() -> None:
    """Back to names unique on the platform: the key column (the ids) becomes ``name`` again,
    so a service outside the default project is then named by its id. On PostgreSQL it fails
    while an id is longer than the old columns allow."""
    with op.batch_alter_table("services") as batch:
        batch.drop_constraint(UNIQUE_NAME, type_="unique")
        batch.drop_column("name")
    with op.batch_alter_table("services") as batch:
        batch.alter_column(
            "id",
            new_column_name="name",
            type_=OLD_SERVICE,
            existing_type=SERVICE_ID,
            existing_nullable=False,
        )
    _retype(widen=False)
    _check_foreign_keys()
