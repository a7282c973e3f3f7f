"""The UI's read queries on a SQLite state store: keyset paging, service summaries and the
overview, each a fixed number of statements however many rows a page shows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from fxray.store import StateStore
from fxray.store import queries as q
from fxray.ui import queries as uq
from tests.store_rows import run_row, two_project_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = two_project_store(tmp_path)
    yield state
    state.close()


@contextmanager
def statements(store: StateStore) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def test_keyset_pages_walk_every_run_once_newest_first(store: StateStore) -> None:
    # ties on created_at are broken by id, so no run is skipped or repeated across pages
    rows = [run_row(created_at=100.0 + i // 3) for i in range(25)]
    store.insert_runs(rows)
    selection = uq.RunSelection(q.RunFilter())
    seen: list[tuple[float, str]] = []
    cursor = None
    pages = 0
    while True:
        views, cursor = uq.runs_page(store, selection, before=cursor, limit=7)
        seen += [(v.run.created_at, v.run.id) for v in views]
        pages += 1
        if cursor is None:
            break
        assert uq.RunCursor.parse(cursor.token()) == cursor
    assert pages == 4
    assert seen == sorted(((r["created_at"], r["id"]) for r in rows), reverse=True)


def test_filters_statuses_event_type_and_project(store: StateStore) -> None:
    store.insert_runs(
        [
            run_row(status="failed", event_type="a.b", created_at=1.0),
            run_row(status="timed_out", created_at=2.0),
            run_row(status="succeeded", created_at=3.0),
            run_row(service="beta.svc-b", version_id="beta.svc-b@cccccccccccc", status="failed"),
        ]
    )
    failed = uq.RunSelection(q.RunFilter(project="alpha"), statuses=uq.FAILED)
    views, cursor = uq.runs_page(store, failed)
    assert [v.run.status for v in views] == ["timed_out", "failed"] and cursor is None
    assert {v.project for v in views} == {"alpha"} and views[0].service_name == "svc-a"
    typed = uq.RunSelection(q.RunFilter(), event_type="a.b")
    assert [v.run.event_type for v in uq.runs_page(store, typed)[0]] == ["a.b"]
    assert uq.runs_page(store, uq.RunSelection(q.RunFilter(project="gamma")))[0] == []


@pytest.mark.parametrize("token", ["", "x", "12_", "_abc", "1e9_abc", "1.5_a b", "1.5_" + "a" * 65])
def test_a_cursor_that_is_not_one_is_refused(token: str) -> None:
    with pytest.raises(ValueError):
        uq.RunCursor.parse(token)


def test_a_page_of_runs_takes_two_statements_however_long(store: StateStore) -> None:
    store.insert_runs([run_row(created_at=float(i)) for i in range(120)])
    with statements(store) as seen:
        views, _ = uq.runs_page(store, uq.RunSelection(q.RunFilter(project="alpha")), limit=100)
    assert len(views) == 100
    assert len(seen) == 2


def test_service_summaries_take_three_statements_for_any_number(store: StateStore) -> None:
    for i in range(30):
        store.upsert_service(f"extra-{i}", project="alpha")
    store.add_trigger("demo.*", "alpha.svc-a")
    store.insert_runs(
        [
            run_row(created_at=5.0, status="failed"),
            run_row(created_at=9.0, status="succeeded"),
            run_row(service="beta.svc-b", version_id="beta.svc-b@cccccccccccc", created_at=7.0),
        ]
    )
    services = store.list_services()
    with statements(store) as seen:
        summaries = uq.service_summaries(store, services)
    assert len(seen) == 3
    by_id = {s.service.id: s for s in summaries}
    first = by_id["alpha.svc-a"]
    assert (first.versions, first.latest_label) == (2, "v2")
    assert (first.last_run_at, first.last_run_status) == (9.0, "succeeded")
    assert [t.pattern for t in first.triggers] == ["demo.*"]
    assert by_id["beta.svc-b"].last_run_at == 7.0
    assert by_id["alpha.extra-0"].versions == 0 and by_id["alpha.extra-0"].last_run_at is None


def test_the_overview_counts_per_minute_failures_and_backlog(store: StateStore) -> None:
    now = 10_000 * 60.0 + 30  # half a minute into minute 10000
    store.insert_runs(
        [
            run_row(created_at=now - 5, status="succeeded"),
            run_row(created_at=now - 10, status="failed"),
            run_row(created_at=now - 70, status="timed_out"),
            run_row(created_at=now - 80, status="pending"),
            run_row(created_at=now - 20, status="running"),
            run_row(created_at=now - 4000, status="failed"),  # before the window
            run_row(service="beta.svc-b", version_id="beta.svc-b@cccccccccccc", created_at=now - 1),
        ]
    )
    alpha = uq.overview(store, "alpha", now)
    assert alpha.runs == 5 and alpha.failed == 2 and alpha.finished == 3
    assert alpha.failure_rate == pytest.approx(2 / 3)
    assert len(alpha.per_minute) == 60
    assert alpha.per_minute[-1] == (10_000 * 60.0, 3, 1)
    assert alpha.per_minute[-2] == (9_999 * 60.0, 2, 1)
    assert alpha.backlog == [("alpha.svc-a", 1, 1)]
    everything = uq.overview(store, None, now)
    assert everything.runs == 6 and everything.peak == 4
    assert uq.overview(store, "gamma", now).runs == 0


def test_versions_by_service_in_one_statement(store: StateStore) -> None:
    with statements(store) as seen:
        found = uq.versions_by_service(store, ["alpha.svc-a", "beta.svc-b", "alpha.none"])
    assert len(seen) == 1
    assert [v.label for v in found["alpha.svc-a"]] == ["v1", "v2"]
    assert len(found["beta.svc-b"]) == 1 and "alpha.none" not in found


def test_outputs_side_by_side_pairs_the_versions_of_one_event(store: StateStore) -> None:
    v1, v2 = (v.id for v in store.list_versions("alpha.svc-a"))
    store.insert_runs(
        [
            run_row(event_id="e1", version_id=v1, created_at=10.0, result={"v": 1}),
            run_row(event_id="e1", version_id=v2, created_at=10.5, result={"v": 2}, shadow=True),
            run_row(event_id="e2", version_id=v1, created_at=20.0),  # one version only: left out
            run_row(event_id="e3", version_id=v1, created_at=30.0, status="failed"),
            run_row(event_id="e3", version_id=v2, created_at=31.0, shadow=True),
            run_row(event_id="e4", version_id=v1, created_at=500.0),  # after the window
            run_row(event_id="e4", version_id=v2, created_at=500.0, shadow=True),
        ]
    )
    with statements(store) as seen:
        found = uq.outputs_side_by_side(store, "alpha.svc-a", 0.0, 100.0)
    assert len(seen) == 2
    assert [e.event_id for e in found] == ["e3", "e1"]
    assert found[1].outputs[v1][:2] == ("succeeded", {"v": 1})
    assert found[1].outputs[v2][1:] == ({"v": 2}, found[1].outputs[v2][2], True)
    assert found[0].outputs[v1][0] == "failed"
    assert uq.outputs_side_by_side(store, "alpha.svc-a", 0.0, 100.0, limit=1)[0].event_id == "e3"


def test_flow_edges_follow_events_from_the_run_that_emitted_them(store: StateStore) -> None:
    store.upsert_service("svc-c", project="alpha")
    # the router records events as it routes them, when it writes their runs: around now
    at = time.time() - 50.0
    first = run_row(event_id="e-in", event_type="shop.order", created_at=at + 10.0)
    store.insert_runs([first])
    store.record_events(
        [
            {
                "id": f"e-out-{i}",
                "type": "shop.checked",
                "source": "x",
                "specversion": "1.0",
                "fxrunid": first["id"],
            }
            for i in range(3)
        ]
    )
    downstream = [
        run_row(
            service="alpha.svc-c",
            event_id="e-out-0",
            event_type="shop.checked",
            created_at=at + 11.0,
            status="failed",
        ),
        run_row(
            service="alpha.svc-c",
            event_id="e-out-1",
            event_type="shop.checked",
            created_at=at + 12.0,
            status="pending",
        ),
        run_row(
            service="alpha.svc-c",
            event_id="e-out-2",
            event_type="shop.checked",
            created_at=at + 13.0,
            shadow=True,
        ),
        run_row(
            service="beta.svc-b",
            event_id="e-out-2",
            event_type="shop.checked",
            created_at=at + 13.0,
        ),
    ]
    store.insert_runs(downstream)
    with statements(store) as seen:
        edges = uq.flow_edges(store, ["alpha.svc-a", "alpha.svc-c"], at, at + 100.0)
    assert len(seen) == 2  # the runs with their emitted events, the emitting runs
    assert [(e.producer, e.event_type, e.consumer, e.runs, e.errors, e.backlog) for e in edges] == [
        (None, "shop.order", "alpha.svc-a", 1, 0, 0),
        ("alpha.svc-a", "shop.checked", "alpha.svc-c", 2, 1, 1),
    ]
    # a reader of beta alone sees the event come from outside its project
    (beta,) = uq.flow_edges(store, ["beta.svc-b"], at, at + 100.0)
    assert (beta.producer, beta.consumer, beta.runs) == (None, "beta.svc-b", 1)


def test_flow_edges_of_a_window_long_ago_count_every_run(store: StateStore) -> None:
    """Runs of a window far from when their events were recorded (synthetic: a router records
    both together) are all counted, as from outside."""
    store.upsert_service("svc-c", project="alpha")
    first = run_row(event_id="e-in", event_type="shop.order", created_at=10.0)
    store.insert_runs([first])
    event = {"id": "e-out", "type": "shop.checked", "source": "x", "specversion": "1.0"}
    store.record_events([{**event, "fxrunid": first["id"]}])
    late = run_row(
        service="alpha.svc-c", event_id="e-out", event_type="shop.checked", created_at=11.0
    )
    store.insert_runs([late])
    edges = uq.flow_edges(store, ["alpha.svc-a", "alpha.svc-c"], 0.0, 100.0)
    assert [(e.producer, e.consumer, e.runs) for e in edges] == [
        (None, "alpha.svc-c", 1),  # shop.checked
        (None, "alpha.svc-a", 1),  # shop.order
    ]
