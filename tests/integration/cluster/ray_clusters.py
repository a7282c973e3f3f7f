"""Real multi-node Ray clusters on this machine, private to one test module.

* :func:`multi_node_cluster`: ``ray.cluster_utils.Cluster``, a head and worker nodes (real
  raylets: cross-node scheduling, node death), each worker with its own environment.
* :class:`PrivateAutoscalingCluster`: ``ray.cluster_utils.AutoscalingCluster`` (Ray's real
  autoscaler with the fake multi-node provider, the autoscaler KubeRay runs), started and
  stopped without ``ray stop --force``: Ray's own ``start()``/``shutdown()`` stop *every* Ray
  process on the host (other test sessions' too) and start the head on the default port 6379,
  which Redis holds here. Its processes carry a marker in their environment, and
  :meth:`~PrivateAutoscalingCluster.shutdown` ends exactly those, by pid.

Both use a private ``RAY_TMPDIR`` (short, removed afterwards), so ``ray.init`` never joins
another session's cluster, and fast node-death detection (4 s instead of Ray's ~30 s), so the
node-loss tests do not wait on heartbeats.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import AutoscalingCluster, Cluster

FAST_NODE_DEATH = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
OBJECT_STORE_BYTES = 80 * 1024 * 1024
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def private_ray_tmpdir() -> Iterator[str]:
    """A short private RAY_TMPDIR for the block (Unix socket paths must stay short)."""
    previous = os.environ.get("RAY_TMPDIR")
    tmp = tempfile.mkdtemp(prefix="fxc", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    try:
        yield tmp
    finally:
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def session_ray_paused() -> Iterator[None]:
    """The other tests' local Ray (if this process runs one) is shut down for the block, in
    which this process connects to a cluster of its own, and started again afterwards."""
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)
    session_ray = ray.is_initialized()
    if session_ray:
        ray.shutdown()
    try:
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if session_ray:
            from tests.integration.conftest import start_session_ray

            start_session_ray()


@contextlib.contextmanager
def multi_node_cluster(head_cpus: float = 0, **head_args: Any) -> Iterator[Cluster]:
    """A head (no CPUs by default: it runs no services) with fast node-death detection; add
    workers with ``cluster.add_node(num_cpus=..., resources=..., env_vars=...)``."""
    with session_ray_paused(), private_ray_tmpdir():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": head_cpus,
                "include_dashboard": False,
                "object_store_memory": OBJECT_STORE_BYTES,
                "gcs_server_port": free_port(),
                "ray_client_server_port": free_port(),
                "_system_config": FAST_NODE_DEATH,
                **head_args,
            },
        )
        try:
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()


def add_worker(cluster: Cluster, cpus: float, resources: dict[str, float], **env: str) -> Any:
    """A worker node; ``env`` becomes its processes' environment (e.g. a node-local home)."""
    return cluster.add_node(
        num_cpus=cpus,
        resources=resources,
        object_store_memory=OBJECT_STORE_BYTES,
        env_vars=env or None,
    )


class PrivateAutoscalingCluster(AutoscalingCluster):
    """``AutoscalingCluster`` on private ports and a private temp dir, stopped by pid."""

    MARKER = "FXRAY_TEST_CLUSTER"

    def __init__(
        self,
        head_resources: dict[str, float],
        worker_node_types: dict[str, Any],
        *,
        autoscaler_v2: bool = True,
        idle_timeout_minutes: float = 0.1,
    ) -> None:
        from ray._private import ray_constants, services

        # the head advertises the address this process will resolve 127.0.0.1 to (Ray reads
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported)
        self.host = services.get_node_ip_address()
        self.cluster_flag = "1" if ray_constants.ENABLE_RAY_CLUSTER else "0"
        self.port = free_port()
        self.marker = uuid.uuid4().hex
        self.tmp = tempfile.mkdtemp(prefix="fxa", dir="/tmp")
        self.log = Path(self.tmp) / "ray-start.log"
        super().__init__(
            head_resources,
            worker_node_types,
            autoscaler_v2=autoscaler_v2,
            idle_timeout_minutes=idle_timeout_minutes,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _generate_config(
        self,
        head_resources: dict[str, float],
        worker_node_types: dict[str, Any],
        autoscaler_v2: bool = False,
        **config_kwargs: Any,
    ) -> dict[str, Any]:
        # Ray's wheel lacks the fake provider's example.yaml, which both the base class and the
        # autoscaler read for the "fake_multinode" type's defaults. The same provider class as
        # an "external" provider needs no file; the rest is that example's content.
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        provider: dict[str, Any] = {
            "type": "external",
            "module": FAKE_PROVIDER,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": self.address,
        }
        if autoscaler_v2:
            provider |= {"launch_multiple": True, "head_node_id": FAKE_HEAD_NODE_ID}
        node_types = dict(worker_node_types)
        node_types["ray.head.default"] = {
            "resources": dict(head_resources),
            "node_config": {},
            "max_workers": 0,
        }
        config: dict[str, Any] = {
            "cluster_name": f"fxray-{self.marker[:8]}",
            "max_workers": sum(t.get("max_workers", 0) for t in worker_node_types.values()),
            "provider": provider,
            "available_node_types": node_types,
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config: dict[str, Any] | None = None, override_env: Any = None) -> None:
        config_path = Path(self.tmp) / "autoscaling.json"
        config_path.write_text(json.dumps(self._config))
        head = dict(self._head_resources)
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            f"--node-ip-address={self.host}",
            f"--autoscaling-config={config_path}",
            f"--port={self.port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--num-cpus={head.pop('CPU', 0)}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--system-config={json.dumps(_system_config or FAST_NODE_DEATH)}",
        ]
        if head:
            command.append(f"--resources={json.dumps(head)}")
        env = {
            **os.environ,
            **RAY_ENV,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": self.cluster_flag,
            "RAY_TMPDIR": self.tmp,
            self.MARKER: self.marker,
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_FAKE_CLUSTER": "1",
        }
        if self._autoscaler_v2:
            from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

            env |= {
                "RAY_enable_autoscaler_v2": "1",
                "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
            }
        env |= dict(override_env or {})
        with open(self.log, "w") as log:
            subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        deadline = time.monotonic() + 60
        while True:  # the GCS answers on its port (a port taken meanwhile would show here)
            with socket.socket() as probe:
                if probe.connect_ex((self.host, self.port)) == 0 and self.pids():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the autoscaling cluster did not start: {self.log.read_text()}")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """The processes of this cluster: those whose environment carries its marker."""
        needle = f"{self.MARKER}={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def shutdown(self) -> None:
        """End this cluster's processes (TERM, then KILL), and remove its temp dir."""
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.tmp, ignore_errors=True)
