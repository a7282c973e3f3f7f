"""The record writer's event catalog: per-flush aggregation, sampling, schema merge, changes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from fxray.events import catalog
from fxray.events import cloudevent as ev
from fxray.router.writer import SAMPLES_PER_TYPE, CatalogTracker, RecordWriter
from fxray.store import EventTypeObservation, NotFound


@dataclass
class StoredType:
    schema: dict[str, Any] | None


@dataclass
class StoredRun:
    service: str


@dataclass
class FakeStore:
    """What the tracker uses of a StateStore, counting the reads."""

    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    recorded: list[list[EventTypeObservation]] = field(default_factory=list)
    type_reads: int = 0
    run_reads: int = 0

    def get_event_type(self, name: str) -> StoredType:
        self.type_reads += 1
        if name not in self.schemas:
            raise NotFound(name)
        return StoredType(self.schemas[name])

    def get_run(self, run_id: str) -> StoredRun:
        self.run_reads += 1
        if run_id not in self.runs:
            raise NotFound(run_id)
        return StoredRun(self.runs[run_id])

    def record_event_types(self, observations: list[EventTypeObservation]) -> None:
        self.recorded.append(observations)
        for o in observations:
            if o.schema is not None:
                self.schemas[o.type] = o.schema

    # what RecordWriter writes besides the catalog
    def write_batch(self, **rows: list[dict[str, Any]]) -> None:
        pass


def event(type: str, data: Any, time: str | None = None) -> dict[str, Any]:
    """An event as the router sees it (``time`` a string, as decoded from the bus)."""
    body = ev.new_event(type, data)
    if time is not None:
        body["time"] = time
    return body


def only(observations: list[EventTypeObservation], name: str) -> EventTypeObservation:
    (found,) = [o for o in observations if o.type == name and o.count]
    return found


def test_counts_and_first_last_seen_per_type() -> None:
    tracker = CatalogTracker(FakeStore())  # type: ignore[arg-type]
    events = [
        event("a.x", {"n": 1}, time="2024-01-01T00:00:00Z"),
        event("b.y", {"n": 1}, time="2024-01-01T00:00:05+00:00"),
        event("a.x", {"n": 2}, time="2024-01-01T00:00:10Z"),
        event("a.x", {"n": 3}, time="2024-01-01T00:00:20Z"),
    ]
    observations = tracker.observe(events)
    a, b = only(observations, "a.x"), only(observations, "b.y")
    assert (a.count, b.count) == (3, 1)
    assert a.first_seen == 1704067200.0 and a.last_seen == 1704067220.0
    assert b.first_seen == b.last_seen == 1704067205.0


def test_events_without_time_are_seen_now() -> None:
    tracker = CatalogTracker(FakeStore())  # type: ignore[arg-type]
    body = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {}}
    (seen,) = tracker.observe([body, dict(body, id="2", time="not a time")], now=123.0)
    assert (seen.count, seen.first_seen, seen.last_seen) == (2, 123.0, 123.0)


def test_first_observation_carries_the_schema_and_its_changes() -> None:
    store = FakeStore()
    tracker = CatalogTracker(store)  # type: ignore[arg-type]
    (seen,) = tracker.observe([event("order.created", {"id": 1, "total": 2.5})])
    assert seen.schema == catalog.infer({"id": 1, "total": 2.5})
    assert seen.changes == catalog.diff({}, seen.schema)
    assert store.type_reads == 1


def test_unchanged_schema_is_not_sent_and_not_read_again() -> None:
    store = FakeStore()
    tracker = CatalogTracker(store)  # type: ignore[arg-type]
    store.record_event_types(tracker.observe([event("t", {"a": 1})]))
    for _ in range(20):
        (seen,) = tracker.observe([event("t", {"a": i}) for i in range(50)])
        assert seen.schema is None and seen.changes == []
    assert store.type_reads == 1  # one read when the type was first met, none per flush


def test_optional_nullable_and_number_are_merged_with_changes() -> None:
    store = FakeStore()
    tracker = CatalogTracker(store)  # type: ignore[arg-type]
    store.record_event_types(tracker.observe([event("t", {"a": 1, "b": "x", "c": 1})]))
    (seen,) = tracker.observe([event("t", {"a": 2, "b": None, "c": 1.5})])
    assert seen.schema is not None
    assert seen.schema["properties"]["b"]["type"] == ["string", "null"]
    assert seen.schema["properties"]["c"]["type"] == "number"
    assert "field b became nullable" in seen.changes
    assert "field c type integer -> number" in seen.changes
    store.record_event_types([seen])
    (seen,) = tracker.observe([event("t", {"b": "y", "c": 3})])
    assert seen.schema is not None and seen.schema["required"] == ["b", "c"]
    assert seen.changes == ["field a became optional"]


def test_sample_is_bounded_per_type_and_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    inferred: list[Any] = []
    original = catalog.event_schema

    def counting(e: dict[str, Any]) -> dict[str, Any]:
        inferred.append(e["id"])
        return original(e)

    monkeypatch.setattr(catalog, "event_schema", counting)
    tracker = CatalogTracker(FakeStore())  # type: ignore[arg-type]
    events = [event("big", {"i": i}) for i in range(1000)] + [event("small", {"i": 0})] * 3
    observations = tracker.observe(events)
    assert len(inferred) == SAMPLES_PER_TYPE + 3
    assert only(observations, "big").count == 1000


def test_a_varied_batch_converges_over_flushes() -> None:
    """A field missing in 1 of 100 events may escape one sample, not every flush's."""
    store = FakeStore()
    tracker = CatalogTracker(store)  # type: ignore[arg-type]
    tracker.random.seed(7)
    batch = [event("t", {"a": 1, "b": 2}) for _ in range(99)] + [event("t", {"a": 1})]
    for _ in range(300):
        store.record_event_types(tracker.observe(batch))
    assert store.schemas["t"]["required"] == ["a"]


def test_a_stale_cache_is_reread_before_a_change_is_sent() -> None:
    store = FakeStore()
    tracker = CatalogTracker(store)  # type: ignore[arg-type]
    store.record_event_types(tracker.observe([event("t", {"a": 1})]))
    # another router widened the schema meanwhile
    store.schemas["t"] = catalog.merge(store.schemas["t"], catalog.infer({"a": None}))
    (seen,) = tracker.observe([event("t", {"a": None})])
    assert seen.schema is None  # nothing new against what is stored
    assert store.type_reads == 2
    (seen,) = tracker.observe([event("t", {"a": "text"})])
    assert seen.schema is not None
    assert seen.changes == ["field a type integer -> integer|string"]


def test_emitters_from_runs_sources_and_lookups() -> None:
    store = FakeStore(runs={"r-other": "billing"})
    tracker = CatalogTracker(store)  # type: ignore[arg-type]
    tracker.note_runs([{"id": "r-1", "service": "intake"}])
    parent = event("order.placed", {})
    events = [
        parent,  # from outside: no emitter
        ev.child_event(parent, "r-1", "order.checked", {}, source="custom/source"),
        ev.child_event(parent, "r-2", "order.checked", {}, source="fxray/services/scoring"),
        ev.child_event(parent, "r-other", "order.checked", {}, source="custom"),
        ev.child_event(parent, "r-other", "order.checked", {}, source="custom"),
        ev.child_event(parent, "r-gone", "order.billed", {}, source="custom"),
    ]
    observations = tracker.observe(events)
    placed = only(observations, "order.placed")
    assert placed.emitter is None
    checked = [o for o in observations if o.type == "order.checked"]
    assert sum(o.count for o in checked) == 4
    assert sorted(o.emitter for o in checked) == ["billing", "intake", "scoring"]
    assert only(observations, "order.billed").emitter is None
    assert store.run_reads == 2  # r-other once (then cached), r-gone once
    tracker.observe(events)
    assert store.run_reads == 2


def test_the_writer_records_the_catalog_with_the_events() -> None:
    store = FakeStore()
    writer = RecordWriter(store)  # type: ignore[arg-type]
    try:
        writer.submit("events", [event("w.t", {"k": 1}), event("w.t", {"k": 2})])
        deadline = time.monotonic() + 5
        while not store.recorded:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        writer.close()
    (seen,) = store.recorded[0]
    assert seen.type == "w.t" and seen.count == 2 and seen.schema == catalog.infer({"k": 1})
