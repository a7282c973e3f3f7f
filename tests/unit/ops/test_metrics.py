"""The router's metrics recorder without Ray: aggregation, sampling, gauges, and what it sends
to Ray's metric objects (replaced by fakes here); and the API's platform collector."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fxray.api.metrics import PlatformCollector
from fxray.ops import metrics
from fxray.ops.metrics import RayMetrics, RunMetrics, aggregate_finished, sample
from fxray.runtime.runs import RunResult, RunSpec, RunStatus


def spec(service: str = "svc", version: str = "svc@aaa", run_id: str = "r") -> RunSpec:
    return RunSpec(run_id, service, version, "hash", ["main.py"], {"id": "e"}, "c")


def result(status: RunStatus = RunStatus.SUCCEEDED, took: float = 0.5) -> RunResult:
    return RunResult("r", status, 100.0, 100.0 + took)


@dataclass
class FakeMetric:
    calls: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("inc", value, dict(tags)))

    def observe(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("observe", value, dict(tags)))

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("set", value, dict(tags)))


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> RayMetrics:
    made = RayMetrics(*(FakeMetric() for _ in range(7)))
    monkeypatch.setattr(metrics, "ray_metrics", lambda: made)
    return made


def test_sample_keeps_small_groups_and_strides_large_ones() -> None:
    assert sample([1.0, 2.0], 16) == [1.0, 2.0]
    values = [float(i) for i in range(100)]
    chosen = sample(values, 10)
    assert chosen == [float(i) for i in range(0, 100, 10)]


def test_aggregate_counts_by_service_version_status_and_times_runs_that_ran() -> None:
    finished = [
        (spec(), result(took=0.1), True),
        (spec(), result(took=0.3), True),
        (spec(), result(RunStatus.FAILED, took=0.2), True),
        (spec(version="svc@bbb"), result(RunStatus.CANCELLED, took=0.0), False),
        (spec("other", "other@ccc"), result(took=-0.01), True),  # clock skew: clamped to 0
    ]
    counts, durations = aggregate_finished(finished)
    assert counts == {
        ("svc", "svc@aaa", "succeeded"): 2,
        ("svc", "svc@aaa", "failed"): 1,
        ("svc", "svc@bbb", "cancelled"): 1,
        ("other", "other@ccc", "succeeded"): 1,
    }
    assert durations[("svc", "svc@aaa")] == pytest.approx([0.1, 0.3, 0.2])
    assert ("svc", "svc@bbb") not in durations  # never started: no duration
    assert durations[("other", "other@ccc")] == [0.0]


def test_recorder_without_ray_keeps_totals_only() -> None:
    recorder = RunMetrics("router-0")  # Ray is not initialised in unit tests
    assert recorder.export is False
    recorder.observe_finished([(spec(), result(), True)] * 3)
    recorder.observe_finished([(spec(), result(RunStatus.TIMED_OUT), True)])
    recorder.observe_finished([])
    recorder.observe_queue_waits([(spec(), 0.01), (spec(), -1.0)])
    recorder.observe_events(5)
    recorder.observe_events(0)
    recorder.observe_dead_letters("bad_record", 2)
    recorder.observe_dead_letters("failed_run", 1)
    recorder.set_in_flight(7)
    snap = recorder.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["runs"] == [
        {"service": "svc", "version": "svc@aaa", "status": "succeeded", "count": 3},
        {"service": "svc", "version": "svc@aaa", "status": "timed_out", "count": 1},
    ]
    assert snap["events"] == 5
    assert snap["dead_letters"] == {"bad_record": 2, "failed_run": 1}
    assert snap["observations"] == {"fxray_run_duration_seconds": 4, "fxray_queue_wait_seconds": 2}
    assert snap["in_flight"] == 7


def test_one_increment_per_key_per_batch_and_sampled_histograms(fakes: RayMetrics) -> None:
    recorder = RunMetrics("router-1", export=True, samples=16)
    batch = [(spec(), result(took=i / 1000), True) for i in range(200)]
    batch += [(spec(), result(RunStatus.FAILED), True)] * 3
    recorder.observe_finished(batch)
    assert fakes.runs.calls == [
        ("inc", 200, {"service": "svc", "version": "svc@aaa", "status": "succeeded"}),
        ("inc", 3, {"service": "svc", "version": "svc@aaa", "status": "failed"}),
    ]
    observed = fakes.run_duration.calls
    assert len(observed) == 16  # 203 runs of one version in one batch: sampled
    assert {c[2]["version"] for c in observed} == {"svc@aaa"}
    assert recorder.snapshot()["runs"][1]["count"] == 200  # the counts stay exact
    recorder.observe_queue_waits([(spec(), 0.002), (spec("b", "b@1"), 0.5)])
    assert [(c[1], c[2]["service"]) for c in fakes.queue_wait.calls] == [(0.002, "svc"), (0.5, "b")]
    recorder.observe_events(3)
    recorder.observe_dead_letters("failed_run", 2)
    recorder.set_in_flight(4)
    assert fakes.events.calls == [("inc", 3, {"router": "router-1"})]
    assert fakes.dead_letters.calls == [("inc", 2, {"reason": "failed_run"})]
    assert fakes.in_flight.calls == [("set", 4, {"router": "router-1"})]


def test_executor_gauge_drops_versions_to_zero(fakes: RayMetrics) -> None:
    recorder = RunMetrics("router-0", export=True)
    recorder.set_executors({("a", "a@1"): 2, ("b", "b@1"): 1})
    recorder.set_executors({("a", "a@1"): 1})
    recorder.set_executors({("a", "a@1"): 1})
    sets = [(c[2]["version"], c[1]) for c in fakes.executors.calls]
    assert sets == [("a@1", 2), ("b@1", 1), ("a@1", 1), ("b@1", 0), ("a@1", 1)]
    assert recorder.snapshot()["executors"] == [{"service": "a", "version": "a@1", "actors": 1}]


def test_a_failing_ray_metric_turns_exporting_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> RayMetrics:
        raise RuntimeError("no metrics agent")

    monkeypatch.setattr(metrics, "ray_metrics", broken)
    recorder = RunMetrics("router-0", export=True)
    recorder.observe_finished([(spec(), result(), True)])  # does not raise
    assert recorder.export is False
    recorder.observe_events(1)
    assert recorder.snapshot()["runs"][0]["count"] == 1 and recorder.events == 1


class StoppedPlatform:
    """A platform whose routers are gone and whose bus cannot tell its lag."""

    routers: list[Any] = []

    def _lag(self) -> int | None:
        raise RuntimeError("bus is gone")


def test_platform_collector_answers_what_is_known_when_stopped() -> None:
    registry = CollectorRegistry()
    registry.register(PlatformCollector(StoppedPlatform(), timeout_s=0.5))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "fxray_platform_routers 0.0" in text
    assert "fxray_platform_active_runs 0.0" in text
    assert "fxray_platform_lag" not in text  # unknown, so left out


def test_the_desired_executors_gauge_follows_the_scaling_policy(fakes: RayMetrics) -> None:
    desired = FakeMetric()
    made = RayMetrics(*(FakeMetric() for _ in range(7)), executors_desired=desired)
    recorder = RunMetrics("router-0", export=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "ray_metrics", lambda: made)
        recorder.set_executors({("a", "a@1"): 1}, {("a", "a@1"): 3})
        recorder.set_executors({("a", "a@1"): 2}, {})
    assert [(c[2]["version"], c[1]) for c in desired.calls] == [("a@1", 3), ("a@1", 0)]
    recorder.set_executors({("a", "a@1"): 2}, {("a", "a@1"): 2})
    assert recorder.snapshot()["executors"] == [
        {"service": "a", "version": "a@1", "actors": 2, "desired": 2}
    ]
