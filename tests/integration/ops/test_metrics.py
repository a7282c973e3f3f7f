"""The router's Ray metrics: what its recorder counted, and the same figures read back from
Ray's own Prometheus export (the node's metrics agent runs with the dashboard off too)."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import ray
from prometheus_client.parser import text_string_to_metric_families

from fxray import Platform
from fxray.bus import OutgoingRecord
from fxray.ops.metrics import ray_export_urls

SCRIPT = """\
from fxray import context

if context.params.get("fail"):
    raise RuntimeError("asked to fail")
print("ok")
"""


def ray_samples(service: str) -> dict[tuple[str, str], float]:
    """Ray's exported ``ray_fxray_*`` samples of ``service``: (name, status or le) -> value,
    summed over workers."""
    out: dict[tuple[str, str], float] = {}
    for url in ray_export_urls():
        try:
            text = urllib.request.urlopen(url, timeout=10).read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("ray_fxray_"):
                continue
            for s in family.samples:
                if s.labels.get("service") != service:
                    continue
                key = (s.name, s.labels.get("status") or s.labels.get("le") or "")
                out[key] = out.get(key, 0.0) + s.value
    return out


def test_router_records_run_counts_durations_and_dead_letters(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    name = f"metered-{uuid.uuid4().hex[:6]}"
    platform.deploy(service_dir(name, {"main.py": SCRIPT}, trigger_events=[f"{name}.go"]))
    for i in range(5):
        platform.send(f"{name}.go", {"fail": i < 2})
    assert platform.bus is not None
    platform.bus.produce(platform.settings.events_topic, [OutgoingRecord(b"{not a cloudevent")])
    runs = platform.wait_for_runs(service=name, count=5)
    assert sorted(r.status for r in runs) == ["failed"] * 2 + ["succeeded"] * 3
    platform.wait_idle()
    (router,) = platform.routers

    snap = ray.get(router.run_metrics.remote())
    assert snap["export"] is True  # a router actor is connected to Ray: it exports
    mine = {(r["status"], r["count"]) for r in snap["runs"] if r["service"] == name}
    assert mine == {("succeeded", 3), ("failed", 2)}
    assert {r["version"] for r in snap["runs"]} == {runs[0].version_id}
    assert snap["events"] == 5
    assert snap["dead_letters"] == {"bad_record": 1, "failed_run": 2}
    assert snap["observations"] == {
        "fxray_run_duration_seconds": 5,
        "fxray_queue_wait_seconds": 5,
    }

    # Ray exports what the recorder recorded (the metrics agent reports every ~10 s).
    want = {
        ("ray_fxray_runs_total", "succeeded"): 3.0,
        ("ray_fxray_runs_total", "failed"): 2.0,
        ("ray_fxray_run_duration_seconds_count", ""): 5.0,
        ("ray_fxray_queue_wait_seconds_count", ""): 5.0,
    }
    deadline = time.monotonic() + 90
    seen: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        seen = ray_samples(name)
        if all(seen.get(key) == value for key, value in want.items()):
            break
        time.sleep(2)
    assert {key: seen.get(key) for key in want} == want
    assert seen[("ray_fxray_run_duration_seconds_bucket", "600.0")] == 5.0
    assert seen[("ray_fxray_executors", "")] >= 1
