"""Autoscaling with Ray's own autoscaler (v2, the one KubeRay runs) and the fake multi-node
provider (``ray.cluster_utils.AutoscalingCluster``): a backlog beyond what the running nodes
can take adds worker nodes, the backlog drains, and the idle nodes are removed again.

The head offers no CPU (only ``fxray-platform``: the router runs there); the ``executors``
node type (0 to 2 nodes, 1 CPU each, 6 s idle timeout) is the only place for executors, each of
which asks for a whole CPU. The test records, every half second, the worker nodes, the backlog
and the executors: that timeline is the one in docs/deploy.md ("Autoscaling timeline"); set
``FXRAY_AUTOSCALING_TIMELINE=<file>`` to keep it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from fxray import Platform, Settings
from fxray.events import cloudevent as ev
from tests.integration.cluster.ray_clusters import PrivateAutoscalingCluster, session_ray_paused
from tests.integration.cluster.servers import shared_backends
from tests.integration.conftest import write_service

pytestmark = pytest.mark.slow

WORKER = {"CPU": 1.0, "fxray-executors": 1000.0}
MAX_WORKERS = 2
RUNS = 24
RUN_S = 0.5


@pytest.fixture(scope="module")
def autoscaling() -> Iterator[PrivateAutoscalingCluster]:
    cluster = PrivateAutoscalingCluster(
        head_resources={"CPU": 0, "fxray-platform": 1000.0},
        worker_node_types={
            "executors": {
                "resources": WORKER,
                "node_config": {},
                "min_workers": 0,
                "max_workers": MAX_WORKERS,
            }
        },
        autoscaler_v2=True,
        idle_timeout_minutes=0.1,
    )
    with session_ray_paused():
        try:
            cluster.start()
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()


def worker_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("fxray-executors"))


@pytest.mark.timeout(600)
def test_a_backlog_adds_worker_nodes_and_idle_nodes_go_again(
    autoscaling: PrivateAutoscalingCluster, tmp_path: Path
) -> None:
    with shared_backends("as") as backends:
        settings = Settings(
            home=tmp_path / "platform",
            instance=f"as{uuid.uuid4().hex[:6]}",
            ray_address=autoscaling.address,
            platform_actor_resources={"fxray-platform": 0.001},
            executor_resources={"fxray-executors": 0.001},
            # what the autoscaler can add, so a request no alive node fits is not refused
            cluster_node_types={"executors": WORKER},
            executor_idle_s=3.0,
            router_static_membership=True,
            **backends,
        )
        with Platform(settings) as platform:
            timeline, runs = _burst(platform, tmp_path)
    text = _table(timeline)
    print(f"\nautoscaling timeline\n{text}")
    if os.environ.get("FXRAY_AUTOSCALING_TIMELINE"):
        Path(os.environ["FXRAY_AUTOSCALING_TIMELINE"]).write_text(text)
    assert {r.status for r in runs} == {"succeeded"} and len(runs) == RUNS
    nodes = [row["worker nodes"] for row in timeline]
    first_up = next(i for i, n in enumerate(nodes) if n > 0)
    peak = max(nodes)
    assert nodes[0] == 0 and peak == MAX_WORKERS  # from none to the node type's maximum
    assert timeline[first_up]["backlog"] > 0  # added for the backlog
    drained = next(i for i, row in enumerate(timeline) if i > first_up and row["backlog"] == 0)
    assert nodes[-1] == 0 and drained < len(nodes) - 1  # and removed once it drained
    assert max(row["executors"] for row in timeline) == MAX_WORKERS  # one per node's CPU


def _burst(platform: Platform, tmp: Path) -> tuple[list[dict[str, Any]], list[Any]]:
    """Send the burst; sample nodes, backlog and executors until the nodes are gone again."""
    code = f"import time\nfrom fxray import context\ntime.sleep({RUN_S})\n"
    folder = write_service(
        tmp,
        "burst",
        {"main.py": code},
        resources={"cpus": 1},
        max_executors=MAX_WORKERS,
        trigger_events=["autoscale.burst"],
    )
    version = platform.deploy(folder).version
    assert worker_nodes() == 0
    started = time.monotonic()
    platform.publish([ev.new_event("autoscale.burst", {"i": i}, source="t") for i in range(RUNS)])
    timeline: list[dict[str, Any]] = []
    done_at: float | None = None
    while True:
        status = platform.status()
        pools = [p for p in status["executors"] if p["version_id"] == version.id]
        finished = len(
            [r for r in platform.runs(service=version.service, limit=None) if r.finished_at]
        )
        row = {
            "t": round(time.monotonic() - started, 1),
            "worker nodes": worker_nodes(),
            "backlog": sum(p["backlog"] for p in pools),
            "executors": sum(p["actors"] for p in pools),
            "runs done": finished,
        }
        if not timeline or any(row[k] != timeline[-1][k] for k in row if k != "t"):
            timeline.append(row)
        if finished == RUNS and done_at is None:
            done_at = time.monotonic()
        if done_at is not None and row["worker nodes"] == 0:
            break
        if time.monotonic() - started > 400:
            raise TimeoutError(f"no scale-up and down within 400 s: {json.dumps(timeline)}")
        time.sleep(0.5)
    return timeline, platform.runs(service=version.service, limit=None)


def _table(timeline: list[dict[str, Any]]) -> str:
    """The timeline as a Markdown table (one row per change)."""
    columns = list(timeline[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in timeline:
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)
