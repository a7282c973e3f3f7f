"""The topology of deploy/kuberay on real Ray: the platform joins as a Ray Client (as the
platform Deployment does, ``ray://``) a head with no CPUs, and a worker offers what the
``executors`` group offers; with the rendered settings, the router and the executors must run
on the worker, never on the head. Two Ray nodes on this machine stand in for the two pods."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.cluster_utils import Cluster

from fxray.cluster.render import render
from tests.integration.conftest import stop_process

pytestmark = pytest.mark.slow

GREETER = Path(__file__).resolve().parents[3] / "examples" / "greeter"

CLIENT = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray._private import state
    from fxray import Platform, Settings

    address, home, resources = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    # cluster_mode=False: both nodes share this machine's folders, so the embedded defaults
    # (SQLite, local packages and KV) work here; a real cluster refuses them (cluster/mode.py)
    settings = Settings(home=home, ray_address=address, instance="topology",
                        platform_actor_resources=resources, cluster_mode=False)
    with Platform(settings) as platform:
        platform.deploy(sys.argv[4])
        event = platform.send("demo.greet", {"name": "Ada"})
        (run,) = platform.wait_for_runs(event_id=event["id"], timeout=120)

        @ray.remote(num_cpus=0)
        def actors():
            return [(a["ActorClassName"], a["Address"]["NodeID"], a["State"])
                    for a in state.actors().values()]

        placed = ray.get(actors.remote())
    print(json.dumps({"run": str(run.status), "actors": placed}))
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rendered_dev() -> tuple[dict[str, Any], dict[str, str]]:
    objects = render("dev", renderer="python")
    (raycluster,) = [o for o in objects if o["kind"] == "RayCluster"]
    (settings,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return raycluster, settings["data"]


def test_routers_and_executors_run_on_the_worker_not_the_head(tmp_path: Path) -> None:
    raycluster, settings = _rendered_dev()
    node_types = _derive_autoscaling_config_from_ray_cr(raycluster)["available_node_types"]
    head, executors = node_types["headgroup"]["resources"], node_types["executors"]["resources"]
    custom = {k: v for k, v in executors.items() if k not in ("CPU", "memory", "GPU")}
    address = settings["FXRAY_RAY_ADDRESS"]
    assert address.startswith("ray://") and address.endswith(":10001")
    client_port = _free_port()
    ray_cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head["CPU"],  # 0: the head runs no services
            "ray_client_server_port": client_port,
            "gcs_server_port": _free_port(),
            "include_dashboard": False,
            "object_store_memory": 80 * 1024 * 1024,
        },
    )
    try:
        worker = ray_cluster.add_node(
            num_cpus=executors["CPU"], resources=custom, object_store_memory=80 * 1024 * 1024
        )
        ray_cluster.wait_for_nodes()
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # both nodes are on this machine and share its folders (SQLite, local packages)
            "FXRAY_CLUSTER_MODE": "false",
        }
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                CLIENT,
                f"ray://127.0.0.1:{client_port}",
                str(tmp_path / "home"),
                settings["FXRAY_PLATFORM_ACTOR_RESOURCES"],
                str(GREETER),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        head_id, worker_id = ray_cluster.head_node.node_id, worker.node_id
    finally:
        ray_cluster.shutdown()
    assert report["run"] == "succeeded"
    placed = {(cls, node) for cls, node, state in report["actors"] if state == "ALIVE"}
    routers = {node for cls, node in placed if cls == "Router"}
    executors_on = {node for cls, node in placed if cls == "ExecutorActor"}
    assert routers == {worker_id}
    assert executors_on == {worker_id}
    assert head_id not in routers | executors_on


def test_the_health_endpoint_fails_once_the_ray_client_session_is_lost(tmp_path: Path) -> None:
    """``fxray up`` over Ray Client answers 200 on /api/v1/health while the head is there and
    503 once the session is gone for good (the head lost for longer than the client's grace
    period, 3 s here instead of 30 s), so Kubernetes' probes restart the platform pod."""
    client_port, api_port = _free_port(), _free_port()
    ray_cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "ray_client_server_port": client_port,
            "gcs_server_port": _free_port(),
            "include_dashboard": False,
            "object_store_memory": 80 * 1024 * 1024,
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FXRAY_")}
    env |= {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "3",
        "FXRAY_HOME": str(tmp_path / "home"),
        "FXRAY_CLUSTER_MODE": "false",
        "FXRAY_UI_ENABLED": "false",
    }
    command = [sys.executable, "-m", "fxray.cli", "up", "--port", str(api_port)]
    command += ["--ray-address", f"ray://127.0.0.1:{client_port}"]
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{api_port}/api/v1/health"

    def health() -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            return None

    def first(check: Any, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (found := check()):
            assert up.poll() is None, f"fxray up ended: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{what}: {log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        return found

    try:
        ok = first(lambda: (r := health()) and r.status_code == 200 and r, 120, "up")
        assert ok.json()["status"] == "ok"
        ray_cluster.shutdown()
        lost = first(lambda: (r := health()) and r.status_code != 200 and r, 90, "no 503")
    finally:
        stop_process(up, 30)
        ray_cluster.shutdown()
    assert lost.status_code == 503
    assert lost.json()["status"] == "ray session lost"
