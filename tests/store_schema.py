"""Helpers of the state store tests: stores on one database, and what the migrated schema of a
database lacks or has beyond the models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fxray.store import StateStore, migrations


@contextmanager
def state_stores(url: str) -> Iterator[Callable[[], StateStore]]:
    """Makes stores on the database at ``url`` (as other processes would have); closes them."""
    stores: list[StateStore] = []

    def make() -> StateStore:
        stores.append(StateStore(url))
        return stores[-1]

    try:
        yield make
    finally:
        for store in stores:
            store.close()


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
