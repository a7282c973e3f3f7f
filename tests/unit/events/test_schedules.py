"""Cron schedules as tick events: fire times, cron validation, tick events and their params."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxray.events import cloudevent as ev
from fxray.events.schedules import (
    MAX_TICKS_PER_CHECK,
    fire_times,
    iso_utc,
    next_fire_times,
    tick_event,
    tick_id,
    validate_cron,
)
from fxray.runtime.context import RunContext, RunInfo

# a whole minute (and a whole hour): 2023-11-14T22:00:00Z
BASE = 1_700_000_000 - 1_700_000_000 % 3600
assert BASE % 3600 == 0


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


@settings(database=None, deadline=None)
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


# --------------------------------------------------------------------------- tick events


def test_six_fields_have_seconds_last() -> None:
    assert next_fire_times("* * * * * */15", BASE, 3) == [BASE + 15, BASE + 30, BASE + 45]
    assert fire_times("* * * * * *", BASE, BASE + 3) == [BASE + 1, BASE + 2, BASE + 3]


# --------------------------------------------------------------------------- validate_cron


@pytest.mark.parametrize(
    "expression",
    ["* * * * *", " */5 * * * * ", "* * * * * */2", "0 9 * * 1-5", "@hourly", "0 0 L * *"],
)
def test_valid_cron_expressions(expression: str) -> None:
    assert validate_cron(expression) == expression.strip()


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("not a cron", "not a valid cron expression"),
        ("61 * * * *", "not a valid cron expression"),
        ("* * * *", "not a valid cron expression"),
        ("* * * * * 99", "not a valid cron expression"),
        ("\u0661 * * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("* " * 70, "at most 128"),
    ],
)
def test_invalid_cron_expressions(expression: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        validate_cron(expression)


def test_manifest_and_api_accept_the_same_expressions() -> None:
    from fxray.services.manifest import Manifest

    for expression in ("* * * * * */2", "@daily", "0 0 * * 5#3"):
        manifest = Manifest(name="s", entrypoint="a.py", schedule=expression)
        assert manifest.schedule == validate_cron(expression)


# --------------------------------------------------------------------------- tick events


def test_tick_event_shape() -> None:
    tick = tick_event("reports", BASE + 60, schedule_id="s1", params={"region": "ch"})
    assert tick["type"] == ev.SCHEDULE_TICK == "fxray.schedule.tick"
    assert tick[ev.TARGET] == "reports"
    assert tick["source"] == "fxray/scheduler"
    assert tick["id"] == f"tick:s1:{BASE + 60}" == tick_id("s1", BASE + 60)
    assert tick["specversion"] == "1.0"
    assert tick["data"] == {
        "service": "reports",
        "scheduled_for": "2023-11-14T22:01:00Z",
        "schedule_id": "s1",
        "params": {"region": "ch"},
    }
    assert ev.from_dict(tick)["id"] == tick["id"]  # a valid CloudEvent


def test_tick_id_is_deterministic_per_schedule_and_fire_time() -> None:
    first = tick_event("svc", BASE + 60.0, schedule_id="a")
    again = tick_event("svc", BASE + 60, schedule_id="a", params={"x": 1})
    assert first["id"] == again["id"]
    assert first["id"] != tick_event("svc", BASE + 60, schedule_id="b")["id"]
    assert first["id"] != tick_event("svc", BASE + 120, schedule_id="a")["id"]
    assert first["data"]["params"] == {}


def test_iso_utc() -> None:
    assert iso_utc(BASE) == "2023-11-14T22:00:00Z"


def _context(event: dict[str, object]) -> RunContext:
    info = RunInfo("r", "svc", "svc@1", "a.py", "c")
    return RunContext(event, info, {}, {}, None, None, None)  # type: ignore[arg-type]


def test_a_ticks_params_reach_the_script_like_a_manual_runs() -> None:
    tick = tick_event("svc", BASE + 60, schedule_id="s1", params={"region": "ch", "n": 2})
    params = _context(tick).params
    assert params["region"] == "ch" and params["n"] == 2
    assert params["scheduled_for"] == "2023-11-14T22:01:00Z"  # the tick's own fields stay
    assert "params" not in params
    manual = ev.new_event(ev.MANUAL_RUN, {"region": "ch", "n": 2})
    assert _context(manual).params.to_dict() == {"region": "ch", "n": 2}
