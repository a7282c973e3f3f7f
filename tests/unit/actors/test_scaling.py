"""The executor scaling policy: desired executors for a backlog, what to start and retire, and
where a version's policy comes from (settings, manifest, operator override)."""

from __future__ import annotations

import pytest

from fxray.actors.scaling import (
    SCALING_KEY,
    ScalingPolicy,
    check_override,
    decide,
    policy_for,
)

POLICY = ScalingPolicy(min_executors=1, max_executors=4, target_backlog=10, idle_timeout_s=30.0)


@pytest.mark.parametrize(
    ("backlog", "desired"),
    [(0, 1), (1, 1), (10, 1), (11, 2), (30, 3), (31, 4), (1000, 4), (-5, 1)],
)
def test_desired_is_the_backlog_over_the_target_within_the_bounds(
    backlog: int, desired: int
) -> None:
    assert POLICY.desired(backlog) == desired


def test_a_growing_backlog_starts_what_is_missing() -> None:
    decision = decide(POLICY, size=1, backlog=35, idle_for=[])
    assert (decision.desired, decision.start, decision.retire) == (4, 3, ())
    assert "start 3" in decision.reason


def test_executors_idle_past_the_timeout_retire_longest_idle_first_down_to_desired() -> None:
    # four executors, the backlog wants one: three idle past the timeout go, oldest first
    decision = decide(POLICY, size=4, backlog=0, idle_for=[31.0, 120.0, 45.0, 5.0])
    assert decision.start == 0
    assert decision.retire == (1, 2, 0)
    assert "retire 3 idle" in decision.reason


def test_idle_executors_within_the_timeout_stay() -> None:
    decision = decide(POLICY, size=3, backlog=0, idle_for=[29.0, 10.0, 0.5])
    assert decision.retire == ()


def test_busy_executors_keep_the_pool_at_least_as_big_as_desired() -> None:
    # three busy and one idle long: the backlog of 35 wants four, so none retires
    decision = decide(POLICY, size=4, backlog=35, idle_for=[500.0])
    assert decision.retire == ()
    # with a backlog of 25 (three wanted), the idle one may go
    assert decide(POLICY, size=4, backlog=25, idle_for=[500.0]).retire == (0,)


def test_never_below_min_executors() -> None:
    decision = decide(POLICY, size=2, backlog=0, idle_for=[100.0, 200.0])
    assert decision.retire == (1,)
    assert decide(POLICY, size=1, backlog=0, idle_for=[1e9]).retire == ()


def test_a_lowered_maximum_retires_idle_executors_at_once() -> None:
    lowered = ScalingPolicy(min_executors=0, max_executors=2, target_backlog=1, idle_timeout_s=60)
    decision = decide(lowered, size=5, backlog=50, idle_for=[1.0, 2.0, 3.0])
    assert sorted(decision.retire) == [0, 1, 2]  # 5 - 3 = the maximum; no timeout needed


def test_the_default_target_grows_one_executor_per_waiting_run() -> None:
    default = ScalingPolicy()
    assert [default.desired(n) for n in (0, 1, 2, 3)] == [0, 1, 2, 2]


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="more than"):
        ScalingPolicy(min_executors=3, max_executors=2)
    with pytest.raises(ValueError):
        ScalingPolicy(target_backlog=0)


DEFAULTS = {"min_executors": 0, "max_executors": 2, "target_backlog": 1, "idle_timeout_s": 60.0}


def test_policy_defaults_come_from_the_settings() -> None:
    assert policy_for({}, **DEFAULTS) == ScalingPolicy(0, 2, 1, 60.0)


def test_the_manifest_overrides_the_settings_and_the_operator_the_manifest() -> None:
    manifest = {"min_executors": 1, "max_executors": 6, "target_backlog": 5}
    assert policy_for(manifest, **DEFAULTS) == ScalingPolicy(1, 6, 5, 60.0)
    overridden = {**manifest, SCALING_KEY: {"max_executors": 3}}
    assert policy_for(overridden, **DEFAULTS) == ScalingPolicy(1, 3, 5, 60.0)


def test_max_concurrency_caps_the_maximum_and_the_minimum_follows() -> None:
    manifest = {"min_executors": 4, "max_executors": 6}
    assert policy_for(manifest, **DEFAULTS, max_concurrency=2) == ScalingPolicy(2, 2, 1, 60.0)


def test_an_override_is_checked() -> None:
    assert check_override({"min_executors": 2, "max_executors": None}) == {
        "min_executors": 2,
        "max_executors": None,
    }
    with pytest.raises(ValueError, match="unknown scaling field"):
        check_override({"replicas": 3})
    with pytest.raises(ValueError, match="at least 1"):
        check_override({"max_executors": 0})
    with pytest.raises(ValueError, match="whole number"):
        check_override({"target_backlog": True})
    with pytest.raises(ValueError, match="more than"):
        check_override({"min_executors": 5, "max_executors": 2})
