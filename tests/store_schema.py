"""What the migrated schema of a database lacks or has beyond the models (for the tests)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fxray.store import migrations


def schema_differences(url: str) -> list[object]:
    """Alembic's differences between the database at ``url`` and the models (none: in step)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, migrations.all_tables()))
    finally:
        engine.dispose()
