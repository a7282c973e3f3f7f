"""Schedules and the exactly-once claim of their ticks."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from fxray.store import Conflict, NotFound, ScheduleRecord, StateStore

BASE = 1_700_000_000 - 1_700_000_000 % 3600  # a whole hour
MINUTE = 60.0


@pytest.fixture
def svc(store: StateStore) -> str:
    store.upsert_service("svc")
    return "svc"


def test_schedules_crud(store: StateStore, svc: str) -> None:
    made = store.upsert_schedule(svc, "* * * * *", params={"a": 1}, now=BASE + 0.5)
    assert (made.service, made.cron, made.params, made.origin) == (
        svc,
        "* * * * *",
        {"a": 1},
        "api",
    )
    assert (made.active, made.next_fire_at, made.skip_next, made.last_fired_at) == (
        True, BASE + MINUTE, False, None
    )  # fmt: skip
    assert store.get_schedule(made.id) == made
    named = store.upsert_schedule(svc, "0 * * * *", schedule_id="nightly", now=BASE)
    assert named.id == "nightly" and named.next_fire_at == BASE + 3600
    again = store.upsert_schedule(svc, "*/5 * * * *", schedule_id="nightly", now=BASE)
    assert (again.next_fire_at, again.params, again.created_at) == (
        BASE + 300, {}, named.created_at
    )  # fmt: skip
    assert [s.id for s in store.list_schedules()] == [made.id, "nightly"]
    assert [s.id for s in store.list_schedules(svc)] == [made.id, "nightly"]
    assert store.list_schedules("other") == []

    changed = store.update_schedule(made.id, cron="*/10 * * * *", params={"b": 2}, now=BASE)
    assert (changed.next_fire_at, changed.params) == (BASE + 600, {"b": 2})
    kept = store.update_schedule(made.id, params={}, now=BASE + 7200)  # same cron: same time
    assert kept.next_fire_at == BASE + 600

    store.remove_schedule(made.id)
    with pytest.raises(NotFound):
        store.get_schedule(made.id)
    with pytest.raises(NotFound):
        store.remove_schedule(made.id)
    with pytest.raises(NotFound):
        store.update_schedule(made.id, active=False)
    with pytest.raises(NotFound):
        store.skip_next_tick(made.id)
    with pytest.raises(NotFound):
        store.upsert_schedule("nope", "* * * * *")
    with pytest.raises(ValueError):
        store.upsert_schedule(svc, "not a cron")
    with pytest.raises(ValueError):
        store.upsert_schedule(svc, "* * * * *", origin="elsewhere")
    with pytest.raises(ValueError):
        store.update_schedule("nightly", cron="61 * * * *")
    with pytest.raises(ValueError):
        store.update_schedule("nightly", service="other")
    store.upsert_service("other")
    with pytest.raises(Conflict):
        store.upsert_schedule("other", "* * * * *", schedule_id="nightly")


def test_claim_fires_each_tick_once(store: StateStore, svc: str) -> None:
    made = store.upsert_schedule(svc, "* * * * *", params={"x": 1}, now=BASE)
    assert store.claim_due_ticks(BASE + 59) == []
    ((claimed, fire_at),) = store.claim_due_ticks(BASE + MINUTE)
    assert (claimed.id, fire_at, claimed.params) == (made.id, BASE + MINUTE, {"x": 1})
    assert (claimed.next_fire_at, claimed.last_fired_at) == (BASE + 2 * MINUTE, BASE + MINUTE)
    assert store.get_schedule(made.id) == claimed
    assert store.claim_due_ticks(BASE + MINUTE + 30) == []
    assert [f for _, f in store.claim_due_ticks(BASE + 2 * MINUTE + 1)] == [BASE + 2 * MINUTE]


def test_missed_ticks_are_not_back_filled(store: StateStore, svc: str) -> None:
    store.upsert_schedule(svc, "* * * * *", now=BASE)
    owned = store.claim_due_ticks(BASE + 10 * MINUTE + 30)  # down for ten minutes
    assert [f for _, f in owned] == [BASE + 10 * MINUTE]  # only the latest due tick
    assert owned[0][0].next_fire_at == BASE + 11 * MINUTE
    assert store.claim_due_ticks(BASE + 10 * MINUTE + 59) == []


def test_skip_next_consumes_one_tick(store: StateStore, svc: str) -> None:
    made = store.upsert_schedule(svc, "* * * * *", now=BASE)
    assert store.skip_next_tick(made.id).skip_next
    assert store.claim_due_ticks(BASE + MINUTE) == []
    after = store.get_schedule(made.id)
    assert (after.skip_next, after.next_fire_at, after.last_fired_at) == (
        False, BASE + 2 * MINUTE, None
    )  # fmt: skip
    assert [f for _, f in store.claim_due_ticks(BASE + 2 * MINUTE)] == [BASE + 2 * MINUTE]


def test_inactive_schedules_do_not_fire_and_restart_from_now(store: StateStore, svc: str) -> None:
    made = store.upsert_schedule(svc, "* * * * *", now=BASE)
    store.update_schedule(made.id, active=False)
    assert store.claim_due_ticks(BASE + 5 * MINUTE) == []
    back = store.update_schedule(made.id, active=True, now=BASE + 30 * MINUTE)
    assert back.next_fire_at == BASE + 31 * MINUTE  # no stale tick on re-activation
    assert store.claim_due_ticks(BASE + 30 * MINUTE + 1) == []


def test_two_stores_claiming_at_once_own_each_tick_once(
    make_store: Callable[[], StateStore],
) -> None:
    stores = [make_store() for _ in range(3)]
    stores[0].upsert_service("svc")
    schedules = [stores[0].upsert_schedule("svc", "* * * * *", now=BASE) for _ in range(12)]
    owned: list[tuple[ScheduleRecord, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    rounds = 6
    barrier = threading.Barrier(len(stores))

    def claimer(store: StateStore) -> None:
        try:
            for minute in range(1, rounds + 1):
                barrier.wait()
                got = store.claim_due_ticks(BASE + minute * MINUTE)
                with lock:
                    owned.extend(got)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=claimer, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counts = Counter((schedule.id, fire_at) for schedule, fire_at in owned)
    expected = {
        (s.id, BASE + minute * MINUTE) for s in schedules for minute in range(1, rounds + 1)
    }
    assert set(counts) == expected
    assert set(counts.values()) == {1}


def test_manifest_schedule_follows_the_manifest(store: StateStore, svc: str) -> None:
    api = store.upsert_schedule(svc, "0 0 * * *", now=BASE)
    made = store.sync_manifest_schedule(svc, "* * * * *", now=BASE)
    assert made is not None and (made.origin, made.cron) == ("manifest", "* * * * *")
    store.claim_due_ticks(BASE + MINUTE)
    same = store.sync_manifest_schedule(svc, "* * * * *", now=BASE + 3600)
    assert same == store.get_schedule(made.id)  # unchanged: its next tick is kept
    assert same is not None and same.next_fire_at == BASE + 2 * MINUTE
    changed = store.sync_manifest_schedule(svc, "*/5 * * * *", now=BASE)
    assert changed is not None and (changed.id, changed.next_fire_at) == (made.id, BASE + 300)
    assert len(store.list_schedules(svc)) == 2
    assert store.sync_manifest_schedule(svc, None) is None
    assert [s.id for s in store.list_schedules(svc)] == [api.id]
    assert store.sync_manifest_schedule(svc, None) is None
    with pytest.raises(NotFound):
        store.sync_manifest_schedule("nope", "* * * * *")


def _store_raw(store: StateStore, schedule_id: str, **values: object) -> None:
    """Write schedule fields past every check (as an old version or a hand edit might)."""
    from sqlalchemy import update

    from fxray.store.models import ScheduleRow

    with store.session() as s:
        s.execute(update(ScheduleRow).where(ScheduleRow.id == schedule_id).values(**values))


@pytest.mark.parametrize(
    "cron", ["", "not a cron", "61 * * * *", "*/0 * * * *", "0 0 31 2 *", "x" * 128, "\x00"]
)
def test_an_unreadable_stored_cron_is_reported_and_the_others_are_claimed(
    store: StateStore, svc: str, cron: str
) -> None:
    bad = store.upsert_schedule(svc, "* * * * *", schedule_id="a-bad", now=BASE)
    good = store.upsert_schedule(svc, "* * * * *", schedule_id="b-good", now=BASE)
    _store_raw(store, bad.id, cron=cron)
    broken: list[tuple[ScheduleRecord, str]] = []
    owned = store.claim_due_ticks(BASE + MINUTE, broken)
    assert [(s.id, f) for s, f in owned] == [(good.id, BASE + MINUTE)]
    assert [s.id for s, _ in broken] == [bad.id]
    assert broken[0][1]  # the reason
    assert store.get_schedule(bad.id).next_fire_at == BASE + MINUTE  # left as it was


def test_a_cron_that_fires_no_more_fires_its_last_tick_and_rests(
    store: StateStore, svc: str
) -> None:
    new_year = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    made = store.upsert_schedule(svc, "0 0 1 1 * 0 2024", now=BASE)  # seconds, then the year
    assert made.next_fire_at == new_year
    ((claimed, fire_at),) = store.claim_due_ticks(new_year + 30)
    assert fire_at == new_year and claimed.active is False
    assert store.get_schedule(made.id).active is False
    assert store.claim_due_ticks(new_year + 400 * 86400) == []
