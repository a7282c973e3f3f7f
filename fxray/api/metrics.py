"""``GET /metrics``: the API's Prometheus endpoint (no key needed, as Prometheus expects).

It serves, in Prometheus text format (or OpenMetrics if the scraper asks for it):

* the API's requests: ``fxray_api_requests_total`` and ``fxray_api_request_duration_seconds``
  by method, route template (``/api/v1/runs/{run_id}``, not the path) and status, counted by a
  small ASGI middleware (the duration is to the response's start, so a log stream counts as
  quick);
* the platform's figures, gathered on each scrape from the routers' ``stats()`` and the bus:
  runs in flight, queued and waiting to retry, consumer lag, executors, and every router
  counter as ``fxray_router_<name>_total``. Each router gets ``STATS_TIMEOUT_S`` to answer;
  a router that is stopping or gone is left out, so a scrape answers what is known.

Run counts and durations by service and version are Ray metrics (:mod:`fxray.ops.metrics`), in
Ray's own Prometheus export; see docs/metrics.md.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fxray.platform import Platform

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
STATS_TIMEOUT_S = 2.0
REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # requests no route matched: one label value, whatever the path


def install_metrics(app: FastAPI, platform: Platform) -> CollectorRegistry:
    """Count the app's requests and serve ``GET /metrics``; returns the app's registry."""
    registry = CollectorRegistry()
    requests = Counter(
        "fxray_api_requests",
        "API requests by method, route template and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    duration = Histogram(
        "fxray_api_request_duration_seconds",
        "API request time to the response's start, by method, route template and status.",
        ["method", "route", "status"],
        buckets=REQUEST_BUCKETS_S,
        registry=registry,
    )
    registry.register(PlatformCollector(platform))
    app.add_middleware(RequestMetrics, requests=requests, duration=duration)
    app.state.metrics_registry = registry

    @app.get(METRICS_PATH, include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus exposition of the API's and the platform's metrics (no key needed)."""
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return registry


class RequestMetrics:
    """ASGI middleware: count and time HTTP requests by method, route template and status."""

    def __init__(self, app: ASGIApp, *, requests: Counter, duration: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.duration = duration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts
        elapsed: float | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            labels = (scope["method"], route_template(scope), str(status))
            self.requests.labels(*labels).inc()
            taken = elapsed if elapsed is not None else time.perf_counter() - start
            self.duration.labels(*labels).observe(taken)


def route_template(scope: Scope) -> str:
    """The matched route's path template with its router's prefix, or ``UNMATCHED``.

    FastAPI 0.163+ keeps an included router's routes unprefixed (``scope["route"].path`` is
    ``/runs/{run_id}``) and notes the full template in its per-request context; older versions
    copy the routes with the prefix.
    """
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    route = scope.get("route")
    path = (
        getattr(context, "path_format", None)
        or getattr(route, "path_format", None)
        or getattr(route, "path", None)
    )
    return path if isinstance(path, str) and path else UNMATCHED


class PlatformCollector(Collector):
    """The platform's figures, gathered on each scrape; what cannot be had is left out."""

    def __init__(self, platform: Platform, timeout_s: float = STATS_TIMEOUT_S) -> None:
        self.platform = platform
        self.timeout_s = timeout_s
        self._lag_thread: threading.Thread | None = None
        self._lag: list[int | None] = [None]

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        routers = list(self.platform.routers)
        lag = self._start_lag()
        answers = self._router_stats(routers)
        lag_value = self._finish_lag(lag)
        yield _gauge("fxray_platform_routers", "Routers this API's platform runs.", len(routers))
        yield _gauge(
            "fxray_platform_routers_answering",
            f"Routers that answered this scrape within {self.timeout_s:g} s.",
            len(answers),
        )
        yield _gauge(
            "fxray_platform_active_runs",
            "Runs the answering routers hold (queued, running, waiting to retry).",
            sum(a.get("active_runs", 0) for a in answers),
        )
        yield _gauge(
            "fxray_platform_queued_runs",
            "Runs queued for an executor in the answering routers.",
            sum(a.get("queued", 0) for a in answers),
        )
        if lag_value is not None:
            yield _gauge(
                "fxray_platform_lag", "Events not yet committed by the routers.", lag_value
            )
        yield from _router_families(answers)
        yield _gauge(
            "fxray_platform_scrape_seconds",
            "Time taken to gather the platform's figures for this scrape.",
            time.perf_counter() - began,
        )

    def _router_stats(self, routers: list[Any]) -> list[dict[str, Any]]:
        """The stats of the routers that answer in time (none if Ray is gone)."""
        try:
            refs = [router.stats.remote() for router in routers]
            if not refs:
                return []
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        except Exception:  # the platform is stopping, or Ray is shut down
            return []
        answers = []
        for ref in ready:
            try:
                answers.append(ray.get(ref, timeout=self.timeout_s))
            except Exception:  # this router died or is being stopped
                continue
        return answers

    def _start_lag(self) -> threading.Thread | None:
        """Ask the bus for the consumer lag on a thread (a Kafka lag can take a while); while a
        previous ask still runs, none is started and the lag is left out."""
        if self._lag_thread is not None and self._lag_thread.is_alive():
            return None
        box: list[int | None] = [None]
        self._lag = box

        def ask() -> None:
            try:
                box[0] = self.platform._lag()
            except Exception:
                box[0] = None

        thread = threading.Thread(target=ask, name="fxray-metrics-lag", daemon=True)
        thread.start()
        self._lag_thread = thread
        return thread

    def _finish_lag(self, thread: threading.Thread | None) -> int | None:
        if thread is None:
            return None
        thread.join(self.timeout_s)
        return None if thread.is_alive() else self._lag[0]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


ROUTER_GAUGES = {
    "active_runs": ("fxray_router_active_runs", "Runs the router holds."),
    "queued": ("fxray_router_queued_runs", "Runs queued for an executor."),
    "waiting_retry": ("fxray_router_waiting_retry_runs", "Runs waiting for their retry."),
    "paused": ("fxray_router_paused", "1 while the router pauses its partitions (full)."),
}

RESERVED = {name for name, _ in ROUTER_GAUGES.values()} | {
    "fxray_router_executors",
    "fxray_router_executors_busy",
    "fxray_router_executors_desired",
}


def _router_families(answers: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per-router gauges, executor counts, and every router counter as a counter family."""
    gauges = {
        key: GaugeMetricFamily(name, text, labels=["router"])
        for key, (name, text) in ROUTER_GAUGES.items()
    }
    actors = GaugeMetricFamily(
        "fxray_router_executors", "Executor actors of the router, all versions.", labels=["router"]
    )
    busy = GaugeMetricFamily(
        "fxray_router_executors_busy", "Executor actors running a batch.", labels=["router"]
    )
    desired = GaugeMetricFamily(
        "fxray_router_executors_desired",
        "Executors the versions' scaling policies want for their backlogs, all versions.",
        labels=["router"],
    )
    counters: dict[str, CounterMetricFamily] = {}
    for answer in answers:
        router = str(answer.get("router", "?"))
        for key, family in gauges.items():
            family.add_metric([router], float(answer.get(key) or 0))
        executors = answer.get("executors") or []
        actors.add_metric([router], sum(e.get("actors", 0) for e in executors))
        busy.add_metric([router], sum(e.get("busy", 0) for e in executors))
        desired.add_metric([router], sum(e.get("desired", 0) for e in executors))
        for name, value in sorted((answer.get("counters") or {}).items()):
            metric = f"fxray_router_{_metric_name(name)}"
            if metric in RESERVED:
                metric = f"fxray_router_counter_{_metric_name(name)}"
            family = counters.get(metric)
            if family is None:
                family = counters[metric] = CounterMetricFamily(
                    metric,
                    f"Router counter {name!r} (since the router started).",
                    labels=["router"],
                )
            family.add_metric([router], value)
    yield from gauges.values()
    yield actors
    yield busy
    yield desired
    yield from counters.values()


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text).strip("_").lower() or "unnamed"
