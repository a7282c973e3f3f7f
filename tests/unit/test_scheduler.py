"""Cron schedules as tick events: fire times, no double fire, no back-fill."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxray import events as ev
from fxray.scheduler import (
    MAX_TICKS_PER_CHECK,
    Scheduler,
    fire_times,
    next_fire_times,
    tick_event,
)
from fxray.store import ServiceRecord

# a whole minute (and a whole hour): 2023-11-14T22:00:00Z
BASE = 1_700_000_000 - 1_700_000_000 % 3600
assert BASE % 3600 == 0


def svc(
    name: str = "svc", schedule: str | None = "* * * * *", active: bool = True
) -> ServiceRecord:
    return ServiceRecord(
        name=name,
        description="",
        tags=[],
        active=active,
        allow_manual_triggering=True,
        priority=5,
        schedule=schedule,
        max_concurrency=None,
        created_at=0.0,
        updated_at=0.0,
    )


def fired_at(ticks: list[dict[str, object]]) -> list[int]:
    return [int(str(t["id"]).rsplit(":", 1)[1]) - BASE for t in ticks]


# --------------------------------------------------------------------------- fire_times


def test_fire_times_excludes_after_includes_until() -> None:
    assert fire_times("* * * * *", BASE, BASE + 180) == [BASE + 60, BASE + 120, BASE + 180]


def test_fire_times_fractional_bounds() -> None:
    assert fire_times("* * * * *", BASE + 0.5, BASE + 179.9) == [BASE + 60, BASE + 120]
    assert fire_times("* * * * *", BASE - 0.1, BASE + 0.1) == [BASE]
    assert fire_times("* * * * *", BASE + 59.999, BASE + 60.0) == [BASE + 60]


def test_fire_times_empty_window() -> None:
    assert fire_times("* * * * *", BASE + 1, BASE + 59) == []
    assert fire_times("* * * * *", BASE + 60, BASE + 60) == []
    assert fire_times("0 * * * *", BASE, BASE + 3599) == []


def test_fire_times_every_five_minutes_over_an_hour() -> None:
    times = fire_times("*/5 * * * *", BASE, BASE + 3600)
    assert times == [BASE + 300 * i for i in range(1, 13)]


def test_fire_times_is_capped() -> None:
    times = fire_times("* * * * *", BASE, BASE + 86_400)
    assert len(times) == MAX_TICKS_PER_CHECK
    assert times[0] == BASE + 60


def test_fire_times_are_utc() -> None:
    (midnight,) = fire_times("0 0 * * *", BASE, BASE + 86_400)
    assert datetime.fromtimestamp(midnight, UTC).strftime("%H:%M") == "00:00"


@settings(database=None)
@given(
    after_ms=st.integers(min_value=0, max_value=86_400_000),
    span_ms=st.integers(min_value=0, max_value=5_000_000),
    step=st.sampled_from([1, 2, 5, 7, 15]),
)
def test_fire_times_window_property(after_ms: int, span_ms: int, step: int) -> None:
    # millisecond precision: sub-microsecond instants are covered by the test below
    after = BASE + after_ms / 1000
    until = after + span_ms / 1000
    times = fire_times(f"*/{step} * * * *", after, until)
    assert all(after < t <= until for t in times)
    assert times == sorted(set(times))
    assert all(t % 60 == 0 and (t // 60) % 60 % step == 0 for t in times)
    # none missing: every matching minute in the window is there (below the cap)
    expected = [
        m * 60.0
        for m in range(int(after // 60), int(until // 60) + 1)
        if after < m * 60 <= until and m % 60 % step == 0
    ]
    assert times == expected[:MAX_TICKS_PER_CHECK]


def test_tick_just_after_a_check_is_not_lost() -> None:
    just_before = BASE + 59.9999998  # what time.time() can return, 0.2 us before the minute
    assert fire_times("* * * * *", just_before, BASE + 61) == [BASE + 60]
    scheduler = Scheduler()
    scheduler.due([svc()], BASE + 1)
    assert scheduler.due([svc()], just_before) == []
    assert fired_at(scheduler.due([svc()], BASE + 61)) == [60]


def test_next_fire_times() -> None:
    assert next_fire_times("0 * * * *", BASE + 1800.7, 3) == [
        BASE + 3600,
        BASE + 7200,
        BASE + 10_800,
    ]
    assert next_fire_times("* * * * *", BASE) == [BASE + 60 * i for i in range(1, 6)]
    assert next_fire_times("* * * * *", BASE, 0) == []


def test_invalid_expression_raises() -> None:
    with pytest.raises(ValueError):
        fire_times("not a cron", BASE, BASE + 60)


# --------------------------------------------------------------------------- Scheduler


def test_no_backfill_on_first_sight() -> None:
    scheduler = Scheduler()
    assert scheduler.due([svc()], BASE + 10) == []


def test_each_tick_fires_once_across_repeated_calls() -> None:
    scheduler = Scheduler()
    service = svc()
    assert scheduler.due([service], BASE + 10) == []
    assert fired_at(scheduler.due([service], BASE + 70)) == [60]
    assert scheduler.due([service], BASE + 70) == []
    assert scheduler.due([service], BASE + 80) == []
    assert fired_at(scheduler.due([service], BASE + 120)) == [120]
    assert scheduler.due([service], BASE + 120) == []
    assert fired_at(scheduler.due([service], BASE + 250)) == [180, 240]


def test_frequent_calls_fire_every_tick_exactly_once() -> None:
    scheduler = Scheduler()
    service = svc(schedule="*/2 * * * *")
    seen: list[int] = []
    now = BASE + 0.25
    while now < BASE + 1200:
        seen.extend(fired_at(scheduler.due([service], now)))
        now += 7.3
    assert seen == list(range(120, 1200, 120))


def test_schedule_change_resets() -> None:
    scheduler = Scheduler()
    scheduler.due([svc(schedule="* * * * *")], BASE + 10)
    assert fired_at(scheduler.due([svc(schedule="* * * * *")], BASE + 70)) == [60]
    # changed at +250: the minutes since +70 are not fired under the new expression
    assert scheduler.due([svc(schedule="*/2 * * * *")], BASE + 250) == []
    assert fired_at(scheduler.due([svc(schedule="*/2 * * * *")], BASE + 370)) == [360]


def test_inactive_services_do_not_fire_and_are_not_backfilled() -> None:
    scheduler = Scheduler()
    scheduler.due([svc()], BASE + 10)
    assert scheduler.due([svc(active=False)], BASE + 200) == []
    assert scheduler.due([svc(active=False)], BASE + 400) == []
    # reactivated: seen anew, nothing fired for the inactive time
    assert scheduler.due([svc()], BASE + 410) == []
    assert fired_at(scheduler.due([svc()], BASE + 490)) == [420, 480]


def test_unscheduled_services_never_fire() -> None:
    scheduler = Scheduler()
    for now in (BASE, BASE + 600, BASE + 3600):
        assert scheduler.due([svc(schedule=None), svc("empty", schedule="")], now) == []


def test_services_are_independent() -> None:
    scheduler = Scheduler()
    scheduler.due([svc("a"), svc("b", schedule="*/5 * * * *")], BASE + 1)
    ticks = scheduler.due([svc("a"), svc("b", schedule="*/5 * * * *")], BASE + 300)
    targets = [(t[ev.TARGET], fired_at([t])[0]) for t in ticks]
    assert sorted(targets) == sorted([("a", 60 * i) for i in range(1, 6)] + [("b", 300)])


# --------------------------------------------------------------------------- tick events


def test_tick_event_shape() -> None:
    tick = tick_event("reports", BASE + 60)
    assert tick["type"] == ev.SCHEDULE_TICK == "fxray.schedule.tick"
    assert tick[ev.TARGET] == "reports"
    assert tick["source"] == "fxray/scheduler"
    assert tick["id"] == f"tick:reports:{BASE + 60}"
    assert tick["specversion"] == "1.0"
    assert tick["data"] == {"service": "reports", "scheduled_for": "2023-11-14T22:01:00Z"}
    assert ev.from_dict(tick)["id"] == tick["id"]  # a valid CloudEvent


def test_tick_id_is_deterministic_across_schedulers() -> None:
    first, second = Scheduler(), Scheduler()
    first.due([svc()], BASE + 5)
    second.due([svc()], BASE + 30)
    a = first.due([svc()], BASE + 65)
    b = second.due([svc()], BASE + 61)
    assert [t["id"] for t in a] == [t["id"] for t in b] == [f"tick:svc:{BASE + 60}"]
    assert tick_event("svc", BASE + 60.0)["id"] == tick_event("svc", BASE + 60)["id"]
