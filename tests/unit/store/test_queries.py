"""Read-side queries of the Management API, on a SQLite state store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fxray.events import cloudevent as ev
from fxray.store import NotFound, StateStore
from fxray.store import queries as q
from tests.store_rows import run_row, two_project_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = two_project_store(tmp_path)
    yield state
    state.close()


def test_list_runs_filters_pages_and_counts(store: StateStore) -> None:
    rows = [
        run_row(created_at=100.0 + i, status="failed" if i % 3 == 0 else "succeeded")
        for i in range(10)
    ]
    rows += [run_row(service="beta.svc-b", version_id="beta.svc-b@cccccccccccc", created_at=200.0)]
    rows += [run_row(version_id="alpha.svc-a@bbbbbbbbbbbb", correlation_id="c2", created_at=150.0)]
    store.insert_runs(rows)

    page, total = q.list_runs(store, q.RunFilter(), limit=5)
    assert total == 12
    assert [v.run.created_at for v in page] == [200.0, 150.0, 109.0, 108.0, 107.0]
    assert page[0].project == "beta" and page[1].project == "alpha"
    assert page[1].version_label == "v2"

    _, total = q.list_runs(store, q.RunFilter(project="alpha"))
    assert total == 11
    page, total = q.list_runs(store, q.RunFilter(project="alpha"), limit=4, offset=8)
    assert total == 11 and len(page) == 3
    assert q.list_runs(store, q.RunFilter(project="gamma")) == ([], 0)

    assert q.list_runs(store, q.RunFilter(status="failed"))[1] == 4
    assert q.list_runs(store, q.RunFilter(service="beta.svc-b"))[1] == 1
    assert q.list_runs(store, q.RunFilter(service_name="svc-b"))[1] == 1
    assert q.list_runs(store, q.RunFilter(service_name="svc-b", project="alpha"))[1] == 0
    newest, _ = q.list_runs(store, q.RunFilter(), limit=2)
    assert [v.service_name for v in newest] == ["svc-b", "svc-a"]
    assert q.list_runs(store, q.RunFilter(version="v2"))[1] == 1
    assert q.list_runs(store, q.RunFilter(version="alpha.svc-a@aaaaaaaaaaaa"))[1] == 10
    assert q.list_runs(store, q.RunFilter(correlation_id="c2"))[1] == 1
    assert q.list_runs(store, q.RunFilter(event_id=rows[3]["event_id"]))[1] == 1
    window = q.RunFilter(since=103.0, until=106.0)
    assert [v.run.created_at for v in q.list_runs(store, window)[0]] == [105.0, 104.0, 103.0]
    both = q.RunFilter(project="alpha", version="v1", status="failed", since=101.0)
    assert q.list_runs(store, both)[1] == 3


def test_get_run_and_service_keys(store: StateStore) -> None:
    row = run_row(logs=[[1.0, "INFO", "a.py", "hello"]], status="running")
    store.insert_runs([row])
    view = q.get_run(store, row["id"])
    assert view.project == "alpha" and view.version_label == "v1"
    assert q.run_progress(store, row["id"]) == ("running", [[1.0, "INFO", "a.py", "hello"]])
    assert view.service_name == "svc-a" and view.run.service == "alpha.svc-a"
    assert q.service_keys(store, ["beta.svc-b", "nope"]) == {
        "beta.svc-b": q.ServiceKey("beta", "svc-b")
    }
    with pytest.raises(NotFound):
        q.get_run(store, "nope")
    with pytest.raises(NotFound):
        q.run_progress(store, "nope")


def test_trace_from_an_event_id_or_a_correlation_id(store: StateStore) -> None:
    root = ev.new_event("flow.a", {"n": 1}, source="test")
    first = run_row(event_id=root["id"], correlation_id=root["id"], created_at=10.0)
    child = ev.child_event(root, first["id"], "flow.b", {"n": 2}, source="svc-a")
    second = run_row(
        service="beta.svc-b",
        version_id="beta.svc-b@cccccccccccc",
        event_id=child["id"],
        correlation_id=root["id"],
        created_at=11.0,
    )
    store.record_events([root, child])
    store.insert_runs([first, second, run_row(correlation_id="other")])

    for key in (root["id"], child["id"]):
        trace = q.load_trace(store, key)
        assert trace is not None
        assert trace.correlation_id == root["id"]
        assert [e["body"]["id"] for e in trace.events] == [root["id"], child["id"]]
        assert trace.events[1]["run_id"] == first["id"]
        assert [r.id for r in trace.runs] == [first["id"], second["id"]]
        assert trace.services == {
            "alpha.svc-a": q.ServiceKey("alpha", "svc-a"),
            "beta.svc-b": q.ServiceKey("beta", "svc-b"),
        }
        assert trace.labels["alpha.svc-a@aaaaaaaaaaaa"] == "v1"
    assert q.load_trace(store, "unknown") is None
    assert q.correlation_of(store, "other") == "other"  # a correlation id known from runs only


def test_version_report_counts_and_percentiles(store: StateStore) -> None:
    rows = []
    for i in range(10):
        rows.append(
            run_row(
                created_at=1000.0 + i,
                started_at=1000.0 + i,
                finished_at=1000.0 + i + (i + 1) / 10,  # 100 .. 1000 ms
                status="failed" if i < 2 else "succeeded",
            )
        )
    rows.append(
        run_row(
            version_id="alpha.svc-a@bbbbbbbbbbbb",
            created_at=1001.0,
            status="timed_out",
            started_at=1001.0,
            finished_at=1002.0,
        )
    )
    rows.append(
        run_row(
            version_id="alpha.svc-a@bbbbbbbbbbbb",
            created_at=1002.0,
            status="running",
            started_at=1002.0,
            shadow=True,
        )
    )
    rows.append(
        run_row(version_id="alpha.svc-a@bbbbbbbbbbbb", created_at=1003.0, status="cancelled")
    )
    rows.append(run_row(created_at=5000.0, status="failed"))  # outside the window
    store.insert_runs(rows)

    v1, v2 = q.version_report(store, "alpha.svc-a", 1000.0, 2000.0)
    assert (v1.version_id, v1.runs, v1.succeeded, v1.failed) == (
        "alpha.svc-a@aaaaaaaaaaaa",
        10,
        8,
        2,
    )
    assert v1.error_rate == pytest.approx(0.2)
    assert v1.percentile(50) == pytest.approx(550.0)
    assert v1.percentile(95) == pytest.approx(955.0)
    assert (v2.runs, v2.failed, v2.timed_out, v2.active, v2.cancelled) == (3, 1, 1, 1, 1)
    assert v2.shadow_runs == 1 and v2.error_rate == 1.0
    assert v2.percentile(50) == pytest.approx(1000.0)
    assert q.version_report(store, "alpha.svc-a", 0.0, 10.0) == []


def test_percentile() -> None:
    assert q.percentile([], 50) is None
    assert q.percentile([3.0], 95) == 3.0
    assert q.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert q.percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
