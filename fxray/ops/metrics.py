"""The platform's Ray metrics (``ray.util.metrics``) and the recorder the router calls.

Ray exports them with its own metrics through each node's metrics agent, prefixed ``ray_``
(``ray_fxray_runs_total``, ...): Ray's dashboard charts them and Prometheus scrapes them (see
docs/metrics.md). The metric objects are defined once per process, on first use, in the process
that records them (a router actor).

:class:`RunMetrics` is what a router calls. It aggregates per call (one counter increment per
(service, version, status) per completed batch), samples the histograms of large batches, and
keeps its own totals, so what it recorded can be read back without Ray; where Ray is not
connected it only keeps those totals.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fxray.runtime.runs import RunResult, RunSpec

log = logging.getLogger("fxray.metrics")

# 1 ms ... 10 min, roughly 1-2.5-5 per decade.
DURATION_BUCKETS_S = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
]  # fmt: skip

# Most histogram observations per (service, version) and histogram per call. A Ray
# ``Histogram.observe`` costs 4.5-6 µs in an actor on the 2-core machine (timeit, best of 3 x
# 20,000 calls) and 10-20 µs while the machine is loaded (the Cython ``record`` underneath costs
# the same), so observing every run twice would cost 10-40 µs per run at thousands of runs/s.
# Batches are sized to ~20 ms of work, so only batches of runs shorter than ~1 ms hold more than
# 16 runs: those are stride-sampled (quantiles and mean stay estimates; ``fxray_runs_total``
# stays exact). Recording a whole batch then costs ~2-3 µs per run for 256 runs, ~10-13 µs per
# run for 16 runs, ~35 µs for a batch of 1 (a run of 20 ms or more).
HISTOGRAM_SAMPLES = 16

DeadLetterReason = Literal["bad_record", "failed_run"]


@dataclass(frozen=True, slots=True)
class RayMetrics:
    """The platform's Ray metric objects (one set per process)."""

    runs: Any
    run_duration: Any
    queue_wait: Any
    events: Any
    dead_letters: Any
    in_flight: Any
    executors: Any
    executors_desired: Any = None


_defined: RayMetrics | None = None
_define_lock = threading.Lock()


def ray_metrics() -> RayMetrics:
    """The metric objects of this process, defined on first use."""
    global _defined
    with _define_lock:
        if _defined is None:
            from ray.util.metrics import Counter as RayCounter
            from ray.util.metrics import Gauge, Histogram

            _defined = RayMetrics(
                runs=RayCounter(
                    "fxray_runs_total",
                    "Runs that reached a final status.",
                    tag_keys=("service", "version", "status"),
                ),
                run_duration=Histogram(
                    "fxray_run_duration_seconds",
                    "Run duration, from start to end of its final attempt (sampled).",
                    boundaries=DURATION_BUCKETS_S,
                    tag_keys=("service", "version"),
                ),
                queue_wait=Histogram(
                    "fxray_queue_wait_seconds",
                    "From a run queued (created, or its retry due) to its attempt started "
                    "(sampled).",
                    boundaries=DURATION_BUCKETS_S,
                    tag_keys=("service", "version"),
                ),
                events=RayCounter(
                    "fxray_events_total", "Events a router consumed.", tag_keys=("router",)
                ),
                dead_letters=RayCounter(
                    "fxray_dead_letters_total",
                    "Records sent to the dead-letter topic, by reason.",
                    tag_keys=("reason",),
                ),
                in_flight=Gauge(
                    "fxray_runs_in_flight",
                    "Runs a router holds: queued, running or waiting to retry.",
                    tag_keys=("router",),
                ),
                executors=Gauge(
                    "fxray_executors",
                    "Executor actors per version.",
                    tag_keys=("service", "version"),
                ),
                executors_desired=Gauge(
                    "fxray_executors_desired",
                    "Executors the version's scaling policy wants for its backlog.",
                    tag_keys=("service", "version"),
                ),
            )
        return _defined


def ray_connected() -> bool:
    """Whether this process is connected to Ray (a driver after ``ray.init``, or a worker)."""
    try:
        import ray

        return ray.is_initialized()
    except Exception:
        return False


def ray_export_urls() -> list[str]:
    """The Prometheus endpoints of the Ray nodes' metrics agents (Ray's own export)."""
    import ray

    return [
        f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for node in ray.nodes()
        if node.get("Alive") and node.get("MetricsExportPort")
    ]


def sample(values: list[float], k: int) -> list[float]:
    """``values`` if there are at most ``k``, else ``k`` of them at even strides."""
    n = len(values)
    if n <= k:
        return values
    return [values[i * n // k] for i in range(k)]


def aggregate_finished(
    finished: Iterable[tuple[RunSpec, RunResult, bool]],
) -> tuple[Counter[tuple[str, str, str]], dict[tuple[str, str], list[float]]]:
    """Counts by (service, version, status), and durations by (service, version) of the runs
    that ran (the flag: ``False`` for a run cancelled before it started)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    durations: dict[tuple[str, str], list[float]] = {}
    for spec, result, ran in finished:
        counts[(spec.service, spec.version_id, result.status.value)] += 1
        if ran:
            key = (spec.service, spec.version_id)
            durations.setdefault(key, []).append(max(0.0, result.finished_at - result.started_at))
    return counts, durations


class RunMetrics:
    """One router's recorder: Ray metrics when Ray is connected, local totals always.

    A failing Ray metric call is logged once and turns exporting off: metrics never stop runs.
    """

    def __init__(
        self, router: str, *, export: bool | None = None, samples: int = HISTOGRAM_SAMPLES
    ) -> None:
        self.router = router
        self.export = ray_connected() if export is None else export
        self.samples = samples
        self.runs: Counter[tuple[str, str, str]] = Counter()  # (service, version, status)
        self.events = 0
        self.dead_letters: Counter[str] = Counter()
        self.observations: Counter[str] = Counter()  # histogram observations made, by metric
        self.in_flight = 0
        self.executors: dict[tuple[str, str], int] = {}
        self.executors_desired: dict[tuple[str, str], int] = {}
        self._router_tags = {"router": router}

    def _send(self, action: Callable[[RayMetrics], None]) -> None:
        if not self.export:
            return
        try:
            action(ray_metrics())
        except Exception:
            log.exception("recording Ray metrics failed; router %s stops exporting", self.router)
            self.export = False

    def observe_finished(self, finished: Iterable[tuple[RunSpec, RunResult, bool]]) -> None:
        """Count final runs by service, version and status; time those that ran."""
        counts, durations = aggregate_finished(finished)
        if not counts:
            return
        self.runs.update(counts)
        sampled = self._sample("fxray_run_duration_seconds", durations)

        def send(metrics: RayMetrics) -> None:
            for (service, version, status), n in counts.items():
                metrics.runs.inc(n, {"service": service, "version": version, "status": status})
            _observe(metrics.run_duration, sampled)

        self._send(send)

    def observe_queue_waits(self, waits: Iterable[tuple[RunSpec, float]]) -> None:
        """Record how long runs waited from queued to started (seconds)."""
        grouped: dict[tuple[str, str], list[float]] = {}
        for spec, wait in waits:
            grouped.setdefault((spec.service, spec.version_id), []).append(max(0.0, wait))
        if grouped:
            sampled = self._sample("fxray_queue_wait_seconds", grouped)
            self._send(lambda metrics: _observe(metrics.queue_wait, sampled))

    def _sample(
        self, name: str, grouped: dict[tuple[str, str], list[float]]
    ) -> dict[tuple[str, str], list[float]]:
        chosen = {key: sample(values, self.samples) for key, values in grouped.items()}
        self.observations[name] += sum(len(values) for values in chosen.values())
        return chosen

    def observe_events(self, n: int) -> None:
        """Count ``n`` consumed events."""
        if n > 0:
            self.events += n
            self._send(lambda metrics: metrics.events.inc(n, self._router_tags))

    def observe_dead_letters(self, reason: DeadLetterReason, n: int) -> None:
        """Count ``n`` records sent to the dead-letter topic."""
        if n > 0:
            self.dead_letters[reason] += n
            self._send(lambda metrics: metrics.dead_letters.inc(n, {"reason": reason}))

    def set_in_flight(self, n: int) -> None:
        """Set the runs the router holds (called from its periodic loop)."""
        self.in_flight = n
        self._send(lambda metrics: metrics.in_flight.set(n, self._router_tags))

    def set_executors(
        self,
        counts: Mapping[tuple[str, str], int],
        desired: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """Set executor actors per (service, version), and what the scaling policy wants;
        versions no longer listed go to 0."""
        current = dict(counts)
        wanted = dict(desired or {})
        for key in self.executors.keys() - current.keys():
            current[key] = 0
        for key in self.executors_desired.keys() - wanted.keys():
            wanted[key] = 0

        def send(metrics: RayMetrics) -> None:
            for (service, version), n in current.items():
                metrics.executors.set(n, {"service": service, "version": version})
            for (service, version), n in wanted.items():
                if metrics.executors_desired is not None:
                    metrics.executors_desired.set(n, {"service": service, "version": version})

        self._send(send)
        self.executors = {key: n for key, n in current.items() if key in counts}
        self.executors_desired = {key: n for key, n in wanted.items() if desired and key in desired}

    def snapshot(self) -> dict[str, Any]:
        """What this recorder recorded (JSON-able)."""
        return {
            "router": self.router,
            "export": self.export,
            "runs": [
                {"service": s, "version": v, "status": st, "count": n}
                for (s, v, st), n in sorted(self.runs.items())
            ],
            "events": self.events,
            "dead_letters": dict(self.dead_letters),
            "observations": dict(self.observations),
            "in_flight": self.in_flight,
            "executors": [
                {"service": s, "version": v, "actors": n}
                | (
                    {"desired": self.executors_desired[s, v]}
                    if (s, v) in self.executors_desired
                    else {}
                )
                for (s, v), n in sorted(self.executors.items())
            ],
        }


def _observe(histogram: Any, grouped: dict[tuple[str, str], list[float]]) -> None:
    for (service, version), values in grouped.items():
        tags = {"service": service, "version": version}
        for value in values:
            histogram.observe(value, tags)
