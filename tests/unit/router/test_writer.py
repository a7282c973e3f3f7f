"""The record writer's coalescing of run updates."""

from fxray.router.writer import coalesce


def test_coalesce_keeps_the_last_value_of_each_field_per_run() -> None:
    updates = [
        {"id": "a", "status": "running", "started_at": 1.0},
        {"id": "b", "status": "running", "started_at": 2.0},
        {"id": "a", "status": "succeeded", "finished_at": 3.0},
    ]
    assert coalesce(updates) == [
        {"id": "a", "status": "succeeded", "started_at": 1.0, "finished_at": 3.0},
        {"id": "b", "status": "running", "started_at": 2.0},
    ]


def test_coalesce_of_nothing_is_nothing() -> None:
    assert coalesce([]) == []


def test_merge_runs_folds_updates_into_inserts_of_the_same_flush() -> None:
    from fxray.router.writer import merge_runs

    inserts = [
        {"id": "a", "status": "pending", "created_at": 1.0},
        {"id": "b", "status": "pending"},
    ]
    updates = [{"id": "a", "status": "succeeded"}, {"id": "c", "status": "failed"}]
    plain, upserts, rest = merge_runs(inserts, updates)
    assert plain == [{"id": "b", "status": "pending"}]
    assert upserts == [{"id": "a", "status": "succeeded", "created_at": 1.0}]
    assert rest == [{"id": "c", "status": "failed"}]
