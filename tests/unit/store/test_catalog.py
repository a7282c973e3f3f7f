"""The event catalog's storage: counts, emitters, schema versions."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from fxray.events import catalog
from fxray.store import EventTypeObservation, NotFound, StateStore

Obs = EventTypeObservation


def test_counts_times_and_emitters_add_up(store: StateStore) -> None:
    store.record_event_types([])
    store.record_event_types([Obs("order.created", 3, 10.0, 20.0, emitter="shop")])
    store.record_event_types(
        [
            Obs("order.created", 2, 5.0, 15.0, emitter="shop"),
            Obs("order.created", 1, 30.0, 30.0, emitter="api"),
            Obs("user.joined", 1, 1.0, 1.0),
        ]
    )
    seen = store.get_event_type("order.created")
    assert (seen.count, seen.first_seen, seen.last_seen) == (6, 5.0, 30.0)
    assert seen.emitters == ["shop", "api"]
    assert (seen.schema, seen.schema_version) == (None, 0)
    assert store.get_event_type("user.joined").emitters == []
    assert store.schema_history("order.created") == []
    with pytest.raises(NotFound):
        store.get_event_type("nope")
    with pytest.raises(NotFound):
        store.schema_history("nope")


def test_schema_versions(store: StateStore) -> None:
    v1 = catalog.infer({"id": "x"})
    v2 = catalog.merge(v1, catalog.infer({"id": "y", "n": 1}))
    store.record_event_types([Obs("a.b", 1, 1.0, 1.0, schema=v1, changes=["first seen"])])
    store.record_event_types([Obs("a.b", 1, 2.0, 2.0, schema=v1, changes=["ignored"])])
    assert store.get_event_type("a.b").schema_version == 1
    store.record_event_types([Obs("a.b", 1, 3.0, 3.0, schema=v2, changes=["added n"])])
    seen = store.get_event_type("a.b")
    assert (seen.schema, seen.schema_version, seen.count) == (v2, 2, 3)
    history = store.schema_history("a.b")
    assert [(h.version, h.schema, h.changes) for h in history] == [
        (1, v1, ["first seen"]),
        (2, v2, ["added n"]),
    ]
    assert all(h.type == "a.b" and h.at > 0 for h in history)


def test_widenings_from_two_writers_are_both_kept(store: StateStore) -> None:
    base = catalog.infer({"id": "x"})
    store.record_event_types([Obs("a.c", 1, 1.0, 1.0, schema=base, changes=["first seen"])])
    # two routers, each with the stored schema in its cache, each seeing a new field
    with_n = catalog.merge(base, catalog.infer({"id": "x", "n": 1}))
    with_m = catalog.merge(base, catalog.infer({"id": "x", "m": True}))
    store.record_event_types([Obs("a.c", 1, 2.0, 2.0, schema=with_n, changes=["added n"])])
    store.record_event_types([Obs("a.c", 1, 3.0, 3.0, schema=with_m, changes=["added m"])])
    seen = store.get_event_type("a.c")
    assert set(seen.schema["properties"]) == {"id", "n", "m"}
    assert seen.schema_version == 3
    last = store.schema_history("a.c")[-1]
    assert last.changes == catalog.diff(with_n, seen.schema)  # against what was stored


def test_list_by_prefix(store: StateStore) -> None:
    for name in ("order.created", "order.paid", "orders_x.y", "user.joined", "order%x"):
        store.record_event_types([Obs(name, 1, 1.0, 1.0)])
    assert [t.type for t in store.list_event_types()] == [
        "order%x",
        "order.created",
        "order.paid",
        "orders_x.y",
        "user.joined",
    ]
    assert [t.type for t in store.list_event_types("order.")] == ["order.created", "order.paid"]
    assert [t.type for t in store.list_event_types("order%")] == ["order%x"]
    assert [t.type for t in store.list_event_types("orders_")] == ["orders_x.y"]


def test_concurrent_reports_of_a_new_type_add_up(make_store: Callable[[], StateStore]) -> None:
    stores = [make_store() for _ in range(3)]
    stores[0].list_event_types()  # migrate once
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def report(store: StateStore) -> None:
        try:
            for i in range(10):
                barrier.wait()
                store.record_event_types(
                    [Obs("x.new", 1, float(i), float(i), emitter=f"e{id(store)}")]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=report, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seen = stores[0].get_event_type("x.new")
    assert (seen.count, seen.first_seen, seen.last_seen) == (30, 0.0, 9.0)
    assert len(seen.emitters) == 3
