"""The Management API's state on a real PostgreSQL (and SQLite): migrations, concurrent first
starts, exactly-once schedule ticks, keys, webhooks, mappings and the event catalog."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from fxray.store import (
    Conflict,
    EventTypeObservation,
    NotFound,
    ScheduleRecord,
    StateStore,
    migrate,
    migrations,
)
from tests.revision_0004 import check_upgraded, make_0004_database
from tests.store_schema import schema_differences, state_stores

BASE = 1_700_000_000 - 1_700_000_000 % 3600
MINUTE = 60.0


def _postgres_url() -> str:
    base = os.environ.get("FXRAY_TEST_POSTGRES_URL")
    if base is None:
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail("FXRAY_TEST_POSTGRES_URL is not set (run through `make test`)")
        pytest.skip("no PostgreSQL: run through `make test`")
    return base


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    base = _postgres_url()
    schema = f"t{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def make_store(url: str) -> Iterator[Callable[[], StateStore]]:
    with state_stores(url) as make:
        yield make


@pytest.fixture
def store(make_store: Callable[[], StateStore]) -> StateStore:
    return make_store()


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` in ``count`` threads released together; their results, errors raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _migrate_in_child(url: str, barrier: Any, answers: Any) -> None:
    barrier.wait()
    try:
        answers.put(migrate(url))
    except BaseException as exc:  # reported by the parent
        answers.put(f"{type(exc).__name__}: {exc}")


# -- migrations -------------------------------------------------------------------------------


def test_migrations_make_exactly_the_models_schema(url: str) -> None:
    assert migrate(url) == migrations.head()
    assert schema_differences(url) == []
    assert migrate(url) == migrations.head()  # at head: nothing to do


def test_a_database_of_an_earlier_release_is_adopted(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrations.config(connection), migrations.BASELINE)
        connection.execute(sa.text("DROP TABLE alembic_version"))  # as create_all left it
        connection.execute(
            sa.text(
                "INSERT INTO services (name, description, tags, active, allow_manual_triggering,"
                " priority, created_at, updated_at)"
                " VALUES ('old', '', '[]', true, true, 5, 1, 2)"
            )
        )
    engine.dispose()
    store = StateStore(url)
    try:
        assert store.get_service("old").project == "default"
        assert store.list_projects()[0].name == "default"
    finally:
        store.close()
    assert schema_differences(url) == []


def test_a_database_at_0004_with_data_keeps_it_when_names_become_per_project(url: str) -> None:
    make_0004_database(url)
    check_upgraded(url)
    assert schema_differences(url) == []


def test_processes_starting_on_a_fresh_database_at_once_all_succeed(url: str) -> None:
    migrations.head()
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(4), context.Queue()
    children = [
        context.Process(target=_migrate_in_child, args=(url, barrier, answers)) for _ in range(4)
    ]
    for child in children:
        child.start()
    results = [answers.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert results == [migrations.head()] * 4
    assert schema_differences(url) == []


def test_stores_starting_in_threads_at_once_all_succeed(
    make_store: Callable[[], StateStore],
) -> None:
    stores = [make_store() for _ in range(4)]
    projects = run_in_threads(4, lambda i: stores[i].list_projects())
    assert all([p.name for p in found] == ["default"] for found in projects)


# -- schedules --------------------------------------------------------------------------------


def test_concurrent_claims_own_each_tick_once(make_store: Callable[[], StateStore]) -> None:
    stores = [make_store() for _ in range(3)]
    stores[0].upsert_service("svc")
    schedules = [stores[0].upsert_schedule("svc", "* * * * *", now=BASE) for _ in range(10)]
    skipped = stores[0].skip_next_tick(schedules[0].id)
    rounds = 5
    owned: list[tuple[ScheduleRecord, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores))

    def claim(i: int) -> None:
        for minute in range(1, rounds + 1):
            barrier.wait()
            got = stores[i].claim_due_ticks(BASE + minute * MINUTE + 1)
            with lock:
                owned.extend(got)

    run_in_threads(len(stores), claim)
    counts = Counter((schedule.id, fire_at) for schedule, fire_at in owned)
    expected = {
        (s.id, BASE + minute * MINUTE) for s in schedules for minute in range(1, rounds + 1)
    } - {(skipped.id, BASE + MINUTE)}
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    assert not stores[1].get_schedule(skipped.id).skip_next


def test_schedules_on_postgres_and_sqlite(store: StateStore) -> None:
    store.upsert_service("svc")
    made = store.upsert_schedule("svc", "* * * * *", params={"a": 1}, now=BASE)
    assert [f for _, f in store.claim_due_ticks(BASE + 10 * MINUTE + 5)] == [BASE + 10 * MINUTE]
    manifest = store.sync_manifest_schedule("svc", "0 * * * *", now=BASE)
    assert manifest is not None and manifest.origin == "manifest"
    assert {s.id for s in store.list_schedules("svc")} == {made.id, manifest.id}
    changed = store.update_schedule(made.id, cron="*/5 * * * *", now=BASE)
    assert changed.next_fire_at == BASE + 300
    store.sync_manifest_schedule("svc", None)
    store.remove_schedule(made.id)
    assert store.list_schedules() == []
    with pytest.raises(NotFound):
        store.remove_schedule(made.id)


# -- access, mappings, catalog ----------------------------------------------------------------


def test_projects_keys_and_webhooks(store: StateStore) -> None:
    store.create_project("shop", "the shop")
    with pytest.raises(Conflict):
        store.create_project("shop")
    store.upsert_service("svc", project="shop")
    assert [s.name for s in store.list_services(project="shop")] == ["svc"]
    with pytest.raises(Conflict):
        store.delete_project("shop")
    key, token = store.create_api_key("ci", "developer", "shop")
    seen = store.authenticate(token)
    assert seen is not None and seen.id == key.id and seen.last_used_at is not None
    store.revoke_api_key(key.id)
    assert store.authenticate(token) is None
    assert store.count_api_keys() == 1
    hook, secret = store.create_webhook("shop", "stripe", "payments.received")
    assert store.webhook_secret(hook.id) == secret
    assert [w.id for w in store.list_webhooks("shop")] == [hook.id]
    store.delete_webhook(hook.id)
    store.set_service_project("shop.svc", "default")
    store.delete_project("shop")
    assert [p.name for p in store.list_projects()] == ["default"]


def test_two_writers_closing_a_mapping_cycle_one_wins(
    make_store: Callable[[], StateStore],
) -> None:
    """A -> B and B -> A written at once, from two stores (two processes' worth of
    connections): each check reads the active mappings, and each is slow enough that without
    the write lock both would see none and both would be stored."""
    from fxray.events.mappings import FieldMap, MappingRule, find_cycle

    def rule(m: Any) -> MappingRule:
        fields = [FieldMap.model_validate(f) for f in m.fields]
        return MappingRule(
            id=m.id, source_type=m.source_type, target_type=m.target_type, fields=fields,
            map_all=m.map_all,
        )  # fmt: skip

    pairs = [("cyc.a", "cyc.b"), ("cyc.b", "cyc.a")]
    stores = [make_store(), make_store()]
    seen: list[int] = []

    def write(i: int) -> Any:
        source, target = pairs[i]
        new = MappingRule(id=f"new-{i}", source_type=source, target_type=target, map_all=True)

        def no_cycle(active: list[Any]) -> None:
            seen.append(len(active))
            time.sleep(0.5)  # hold the window open: the other writer starts meanwhile
            if find_cycle([rule(m) for m in active], new):
                raise Conflict("the mapping would form a cycle")

        try:
            return stores[i].add_mapping("default", source, target, [], True, check=no_cycle)
        except Conflict as exc:
            return exc

    results = run_in_threads(2, write)
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "MappingRecord"]
    assert sorted(seen) == [0, 1]  # the second check saw the first writer's rule
    assert (
        len(stores[0].list_mappings(source_type="cyc.a"))
        + len(stores[0].list_mappings(source_type="cyc.b"))
        == 1
    )


def test_mappings_reach_the_routing_snapshot(store: StateStore) -> None:
    fields = [{"from": "a.b", "to": "c", "op": "rename"}]
    start = store.revision()
    on = store.add_mapping("default", "a.x", "b.y", fields, False)
    off = store.add_mapping("default", "a.x", "c.z", [], True)
    store.update_mapping(off.id, active=False)
    snapshot = store.routing_snapshot()
    assert [m.id for m in snapshot.mappings] == [on.id]
    assert snapshot.mappings[0].fields == fields
    assert snapshot.revision == start + 3
    store.remove_mapping(on.id)
    assert [m.id for m in store.list_mappings(source_type="a.x")] == [off.id]


def test_catalog_reports_from_several_stores_add_up(
    make_store: Callable[[], StateStore],
) -> None:
    stores = [make_store() for _ in range(3)]
    stores[0].list_event_types()
    schema = {"type": "object"}

    def report(i: int) -> None:
        for n in range(8):
            stores[i].record_event_types(
                [
                    EventTypeObservation("x.a", 1, float(n), float(n), emitter=f"s{i}"),
                    EventTypeObservation("x.b", 2, 1.0, 1.0, schema=schema, changes=["new"]),
                ]
            )

    run_in_threads(len(stores), report)
    a, b = stores[0].get_event_type("x.a"), stores[0].get_event_type("x.b")
    assert (a.count, a.first_seen, a.last_seen, sorted(a.emitters)) == (
        24, 0.0, 7.0, ["s0", "s1", "s2"]
    )  # fmt: skip
    assert (b.count, b.schema, b.schema_version) == (48, schema, 1)
    assert [h.version for h in stores[0].schema_history("x.b")] == [1]
    assert [t.type for t in stores[0].list_event_types("x.")] == ["x.a", "x.b"]
