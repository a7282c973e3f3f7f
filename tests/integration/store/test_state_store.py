"""The state store contract, on SQLite and on a real PostgreSQL (a fresh database per run)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from fxray.events import cloudevent as ev
from fxray.store import Conflict, NotFound, StateStore


def _postgres_url() -> str | None:
    return os.environ.get("FXRAY_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        base = _postgres_url()
        if base is None:
            if os.environ.get("FXRAY_REQUIRE_SERVERS"):
                pytest.fail("FXRAY_TEST_POSTGRES_URL is not set (run through `make test`)")
            pytest.skip("no PostgreSQL: run through `make test`")
        schema = f"t{uuid.uuid4().hex[:10]}"
        admin = sqlalchemy.create_engine(base)
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        url = base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
    state = StateStore(url)
    yield state
    state.close()
    if request.param == "postgresql":
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _service(store: StateStore, name: str = "svc") -> str:
    store.upsert_service(name, description="d", tags=["a"], priority=3)
    return name


def test_services_versions_and_revision(store: StateStore) -> None:
    start = store.revision()
    _service(store)
    version, created = store.add_version("svc", "a" * 64, {"entrypoint": "m.py"}, label="v1")
    again, created_again = store.add_version("svc", "a" * 64, {"entrypoint": "m.py"})
    assert created and not created_again and again.id == version.id
    assert store.revision() > start
    assert store.get_service("svc").tags == ["a"]
    assert store.resolve_version("svc", "v1").id == version.id
    assert store.resolve_version("svc", "aaaa").id == version.id
    assert version.steps == ["m.py"]
    with pytest.raises(Conflict):
        store.add_version("svc", "b" * 64, {}, label="v1")
    with pytest.raises(NotFound):
        store.get_service("nope")
    with pytest.raises(NotFound):
        store.resolve_version("svc", "zzz")


def test_triggers_and_routing_snapshot(store: StateStore) -> None:
    _service(store)
    v1, _ = store.add_version("svc", "a" * 64, {})
    v2, _ = store.add_version("svc", "b" * 64, {})
    trigger = store.add_trigger("orders.*", "svc", filters={"source": "shop"}, weights={v1.id: 1})
    changed = store.update_trigger(trigger.id, weights={v1.id: 70, v2.id: 30})
    assert changed.weights == {v1.id: 70, v2.id: 30}
    snapshot = store.routing_snapshot()
    assert snapshot.latest["svc"] == v2.id
    assert [t.id for t in snapshot.triggers] == [trigger.id]
    with pytest.raises(ValueError):
        store.update_trigger(trigger.id, service="other")
    store.remove_trigger(trigger.id)
    assert store.list_triggers() == []
    with pytest.raises(NotFound):
        store.remove_trigger(trigger.id)
    with pytest.raises(NotFound):
        store.add_trigger("x", "missing-service")


def test_runs_insert_is_idempotent_and_updates_keep_order(store: StateStore) -> None:
    _service(store)
    row = {
        "id": str(uuid.uuid4()),
        "service": "svc",
        "version_id": "svc@x",
        "trigger_id": "t",
        "event_id": "e1",
        "event_type": "x.y",
        "correlation_id": "e1",
        "status": "pending",
        "priority": 5,
        "attempt": 1,
        "shadow": False,
        "created_at": 1.0,
        "steps": [],
        "logs": [],
    }
    store.insert_runs([row])
    store.insert_runs([{**row, "status": "failed"}])  # a redelivery: ignored
    store.update_runs(
        [
            {"id": row["id"], "status": "running", "started_at": 2.0},
            {
                "id": row["id"],
                "status": "succeeded",
                "finished_at": 3.0,
                "logs": [[1, "INFO", "s", "m"]],
            },
        ]
    )
    run = store.get_run(row["id"])
    assert (run.status, run.started_at, run.finished_at) == ("succeeded", 2.0, 3.0)
    assert run.logs == [[1, "INFO", "s", "m"]]
    assert store.finished_run_ids([row["id"], "other"]) == {row["id"]}
    assert [r.id for r in store.list_runs(correlation_id="e1")] == [row["id"]]
    assert store.count_runs(status="succeeded") == 1


def test_events_are_kept_once_and_grouped_by_correlation(store: StateStore) -> None:
    root = ev.new_event("a.b", {"x": 1})
    child = ev.child_event(root, "run-1", "a.c", {"y": 2}, source="svc")
    store.record_events([root, child, root])
    assert store.get_event(child["id"])["data"] == {"y": 2}
    assert [e["id"] for e in store.list_events(correlation_id=root["id"])] == [
        root["id"],
        child["id"],
    ]


_RUN = {
    "service": "svc",
    "version_id": "svc@x",
    "trigger_id": "t",
    "event_id": "e",
    "event_type": "x.y",
    "correlation_id": "e",
    "priority": 5,
    "attempt": 1,
    "shadow": False,
    "created_at": 1.0,
}
"""The fields of a run row that every test below shares."""


def test_upsert_runs_inserts_or_overwrites(store: StateStore) -> None:
    _service(store)
    base = {**_RUN, "steps": [], "logs": []}
    existing = {**base, "id": "r1", "status": "running"}
    store.insert_runs([existing])
    store.upsert_runs(
        [
            {**base, "id": "r1", "status": "succeeded", "created_at": 9.0, "finished_at": 2.0},
            {**base, "id": "r2", "status": "failed", "created_at": 3.0, "finished_at": 4.0},
        ]
    )
    first, second = store.get_run("r1"), store.get_run("r2")
    assert (first.status, first.finished_at, first.created_at) == ("succeeded", 2.0, 1.0)
    assert (second.status, second.created_at) == ("failed", 3.0)


def test_ranked_upserts_keep_the_newest_state_whatever_the_order(store: StateStore) -> None:
    _service(store)
    base = _RUN
    queued = {**base, "id": "r1", "status": "pending", "rank": 1_000_000}
    started = {**base, "id": "r1", "status": "running", "started_at": 2.0, "rank": 1_000_001}
    final = {
        **base,
        "id": "r1",
        "status": "succeeded",
        "started_at": 2.0,
        "finished_at": 3.0,
        "steps": [{"name": "a.py"}],
        "logs": [[2.5, "INFO", "a.py", "hi"]],
        "result": {"n": 1},
        "rank": 1_999_999,
    }
    store.upsert_runs([final], ranked=True)  # the final record first: the others come late
    store.upsert_runs([started], ranked=True)
    store.upsert_runs([queued], ranked=True)
    run = store.get_run("r1")
    assert (run.status, run.started_at, run.finished_at) == ("succeeded", 2.0, 3.0)
    assert run.logs == [[2.5, "INFO", "a.py", "hi"]] and run.result == {"n": 1}
    store.upsert_runs([{**final, "result": {"n": 2}}], ranked=True)  # a rerun: same rank
    assert store.get_run("r1").result == {"n": 2}
    assert store.finished_run_ids(["r1"]) == {"r1"}

    # in order, a new row is made by its queued record, with empty steps and logs
    store.upsert_runs([{**queued, "id": "r2"}], ranked=True)
    fresh = store.get_run("r2")
    assert (fresh.status, fresh.steps, fresh.logs) == ("pending", [], [])
    store.upsert_runs([{**started, "id": "r2"}], ranked=True)
    assert store.get_run("r2").status == "running"
    retry = {**base, "id": "r2", "status": "pending", "attempt": 2, "error": "x", "rank": 2_000_000}
    store.upsert_runs([retry], ranked=True)
    store.upsert_runs([{**started, "id": "r2"}], ranked=True)  # attempt 1's, redelivered
    again = store.get_run("r2")
    assert (again.status, again.attempt, again.error) == ("pending", 2, "x")


def test_write_batch_is_one_transaction_in_order(store: StateStore) -> None:
    _service(store)
    base = {**_RUN, "steps": [], "logs": []}
    event = ev.new_event("x.y", {"n": 1})
    store.write_batch(
        events=[event],
        inserts=[{**base, "id": "b1", "status": "pending"}],
        upserts=[{**base, "id": "b2", "status": "succeeded", "finished_at": 2.0}],
        updates=[{"id": "b1", "status": "running", "started_at": 1.5}],  # after the insert
    )
    assert store.get_run("b1").status == "running"
    assert store.get_run("b2").status == "succeeded"
    assert store.get_event(event["id"])["data"] == {"n": 1}

    later = ev.new_event("x.y", {"n": 2})
    with pytest.raises(sqlalchemy.exc.SQLAlchemyError):  # a row missing a required field
        store.write_batch(
            events=[later],
            inserts=[{**base, "id": "b3", "status": "pending"}],
            upserts=[{"id": "b4", "status": "failed"}],
        )
    with pytest.raises(NotFound):  # nothing of the failed batch was kept
        store.get_event(later["id"])
    with pytest.raises(NotFound):
        store.get_run("b3")
