"""Migrations: the schema they make is the models', old databases are adopted, starts are fast."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from fxray.store import StateStore, migrate, migrations
from tests.revision_0004 import check_upgraded, make_0004_database
from tests.store_schema import schema_differences


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_make_exactly_the_models_schema(db_url: str) -> None:
    assert migrate(db_url) == migrations.head()
    assert schema_differences(db_url) == []


def test_the_baseline_is_the_schema_of_earlier_releases(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), migrations.BASELINE)
    engine.dispose()
    assert tables(db_url) == {
        "services", "versions", "triggers", "runs", "events", "meta", "alembic_version"
    }  # fmt: skip


def test_downgrade_to_nothing_and_up_again(db_url: str) -> None:
    migrate(db_url)
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(migrations.config(connection), "base")
    assert tables(db_url) == {"alembic_version"}
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), "head")
    engine.dispose()
    assert schema_differences(db_url) == []


def make_legacy_database(url: str) -> None:
    """A database as ``create_all`` made it before migrations: baseline tables, no version."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), migrations.BASELINE)
        connection.execute(sa.text("DROP TABLE alembic_version"))
        connection.execute(
            sa.text(
                "INSERT INTO services (name, description, tags, active, allow_manual_triggering,"
                " priority, created_at, updated_at) VALUES ('old', 'd', '[]', 1, 1, 5, 1, 2)"
            )
        )
        connection.execute(sa.text("INSERT INTO meta (key, value) VALUES ('routing_revision', 7)"))
    engine.dispose()


def test_a_database_of_an_earlier_release_is_stamped_and_upgraded(db_url: str) -> None:
    make_legacy_database(db_url)
    store = StateStore(db_url)
    try:
        old = store.get_service("old")
        assert (old.description, old.project, old.updated_at) == ("d", "default", 2.0)
        assert store.revision() == 7
        assert [p.name for p in store.list_projects()] == ["default"]
        assert [s.name for s in store.list_services(project="default")] == ["old"]
    finally:
        store.close()
    assert schema_differences(db_url) == []


def test_a_database_at_head_is_not_migrated_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(db_url)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("upgrade ran on a database at head")

    monkeypatch.setattr(command, "upgrade", fail)
    monkeypatch.setattr(command, "stamp", fail)
    store = StateStore(db_url)
    assert store.list_projects()[0].name == "default"
    store.close()
    assert migrate(db_url) == migrations.head()


def _migrate_in_child(url: str, barrier: Any, answers: Any) -> None:
    barrier.wait()
    try:
        answers.put(migrate(url))
    except BaseException as exc:  # reported by the parent
        answers.put(f"{type(exc).__name__}: {exc}")


def migrate_in_processes(url: str, count: int) -> list[str]:
    """``migrate(url)`` from ``count`` processes released at once: their answers."""
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(count), context.Queue()
    children = [
        context.Process(target=_migrate_in_child, args=(url, barrier, answers))
        for _ in range(count)
    ]
    for child in children:
        child.start()
    results = [answers.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    return results


def test_concurrent_first_starts_on_one_file_all_succeed(tmp_path: Path) -> None:
    migrations.head()
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race-{attempt}.db'}"
        assert migrate_in_processes(url, 4) == [migrations.head()] * 4
        assert schema_differences(url) == []


def test_threads_migrating_different_databases_at_once(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / f'db-{i}.db'}" for i in range(6)]
    barrier = threading.Barrier(len(urls))
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def start(url: str) -> None:
        barrier.wait()
        try:
            results[url] = migrate(url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == dict.fromkeys(urls, migrations.head())


def test_an_in_memory_database_works() -> None:
    store = StateStore("sqlite://")
    try:
        store.upsert_service("svc")
        assert [s.project for s in store.list_services()] == ["default"]
    finally:
        store.close()


def test_the_migrations_ship_with_the_package() -> None:
    location = migrations.LOCATION
    assert (location / "env.py").is_file() and (location / "script.py.mako").is_file()
    assert {p.name for p in (location / "versions").glob("000[12]_*.py")} == {
        "0001_baseline.py",
        "0002_management.py",
    }


def test_a_database_at_0004_with_data_keeps_it_when_names_become_per_project(
    db_url: str,
) -> None:
    make_0004_database(db_url)
    check_upgraded(db_url)
    assert schema_differences(db_url) == []
