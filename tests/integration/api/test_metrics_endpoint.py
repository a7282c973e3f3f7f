"""``GET /metrics``: Prometheus text, no key needed, request counters by route template and
status, and the platform's gauges."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.api.conftest import ApiHarness


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests_of(found: dict, route: str, status: str) -> float:
    key = ("fxray_api_requests_total", (("method", "GET"), ("route", route), ("status", status)))
    return found.get(key, 0.0)


def test_metrics_answers_prometheus_text_without_a_key(sqlite_api: ApiHarness) -> None:
    client = sqlite_api.client
    for _ in range(3):
        assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/runs/no-such-run", headers=sqlite_api.admin).status_code == 404
    assert client.get("/api/v1/info").status_code == 401  # no key
    assert client.get("/no/such/path").status_code == 404
    sqlite_api.platform.send("metrics.probe", {"n": 1})
    sqlite_api.platform.wait_idle()

    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    found = samples(answer.text)

    assert requests_of(found, "/api/v1/health", "200") >= 3
    assert requests_of(found, "/api/v1/runs/{run_id}", "404") >= 1  # the template, not the path
    assert requests_of(found, "/api/v1/info", "401") >= 1
    assert requests_of(found, "unmatched", "404") >= 1
    timed = ("method", "GET"), ("route", "/api/v1/health"), ("status", "200")
    assert found[("fxray_api_request_duration_seconds_count", timed)] >= 3

    assert found[("fxray_platform_routers", ())] == 1
    assert found[("fxray_platform_routers_answering", ())] == 1
    assert found[("fxray_platform_active_runs", ())] == 0
    assert found[("fxray_platform_lag", ())] == 0
    router = (("router", "router-0"),)
    assert found[("fxray_router_active_runs", router)] == 0
    assert found[("fxray_router_paused", router)] == 0
    assert found[("fxray_router_events_total", router)] >= 1

    again = samples(client.get("/metrics").text)  # the first scrape is counted too
    assert requests_of(again, "/metrics", "200") >= 1


def test_metrics_speaks_openmetrics_when_asked_and_stays_out_of_the_schema(
    sqlite_api: ApiHarness,
) -> None:
    answer = sqlite_api.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")
    assert "/metrics" not in sqlite_api.client.get("/openapi.json").json()["paths"]
