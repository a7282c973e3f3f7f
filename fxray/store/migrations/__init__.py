"""Alembic migrations of the state store, run programmatically at every start.

:func:`upgrade` checks the database's revision first and returns at once when it is at head.
Otherwise it takes a lock that serialises concurrent first starts (``pg_advisory_xact_lock`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), checks again, stamps a database made by the old
``create_all`` (tables but no ``alembic_version``) at the baseline, and upgrades to head, all in
one transaction (on SQLite with foreign keys off, as SQLite's way of altering tables needs).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

LOCATION = Path(__file__).resolve().parent
BASELINE = "0001"
# pg_advisory_xact_lock key: any constant bigint, the same in every fxray process.
_PG_LOCK_KEY = 0x66787261795F6462  # "fxray_db"
# Alembic's commands are not thread-safe (``alembic.context`` is a module-wide proxy): one at a
# time in this process, whatever the database.
_ALEMBIC = threading.RLock()


def all_tables() -> MetaData:
    """The models' metadata, with the tables of every ``fxray.store`` module registered."""
    from fxray.store.models import Base

    # found by their files, not by importing fxray.store (which imports this package)
    for module in pkgutil.iter_modules([str(Path(__file__).parents[1])], "fxray.store."):
        if module.name != __name__:
            importlib.import_module(module.name)
    return Base.metadata


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for the package's migrations, bound to ``connection`` if given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(LOCATION).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str:
    """The newest revision of the package's migrations."""
    with _ALEMBIC:
        revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    """The database's revision; None when it has no ``alembic_version`` table (or it is empty).

    Read directly rather than through Alembic's ``MigrationContext``, which logs at every start.
    """
    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(versions)) or None  # several: branches, never equal to head


def upgrade(engine: Engine) -> str:
    """Bring the database behind ``engine`` to head; returns the head revision."""
    target = head()
    with engine.connect() as connection:
        if current(connection) == target:
            return target
    with (
        _ALEMBIC,
        engine.connect() as connection,
        _foreign_keys_off(connection),
        connection.begin(),
    ):
        _lock(connection)
        revision = current(connection)
        if revision != target:
            cfg = config(connection)
            if revision is None and inspect(connection).has_table("services"):
                command.stamp(cfg, BASELINE)  # made by create_all before migrations existed
            command.upgrade(cfg, "head")
    return target


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while migrating (they cannot change inside a transaction).
    A migration recreates tables (batch mode), and dropping a table that others reference
    would otherwise delete, by cascade, the rows that reference it; the migration checks the
    keys itself (``PRAGMA foreign_key_check``). Other databases: nothing to do."""
    if connection.dialect.name != "sqlite":
        yield
        return
    was_on = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if was_on else 'OFF'}")
        connection.commit()


def _lock(connection: Connection) -> None:
    """Serialise migrations: held until the transaction ends."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite does not BEGIN before DDL by itself; take the write lock now (busy timeout
        # applies) so that a second process waits here and then sees the finished schema.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
