"""Waiting for pods, saying what changes: one line per pod state change, from a watch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from fxray.cluster.errors import ClusterError
from fxray.cluster.kube import Kube

POD_SELECTOR = "app.kubernetes.io/name=fxray"  # every pod of fxray's manifests carries it
WATCH_SLICE_S = 5  # a watch is renewed this often, so the end condition is checked at least then
CHECK_EVERY_S = 1.0

Say = Callable[[str], None]
Pending = Callable[[], str | None]  # what is still awaited, or None when done


def role(pod: dict[str, Any]) -> str:
    """What the pod is: ``ray head``, ``ray worker (executors)``, ``platform``..."""
    labels = pod.get("metadata", {}).get("labels") or {}
    node_type = labels.get("ray.io/node-type")
    if node_type == "head":
        return "ray head"
    if node_type == "worker":
        return f"ray worker ({labels.get('ray.io/group', '?')})"
    return labels.get("app.kubernetes.io/component") or "pod"


def pod_state(pod: dict[str, Any]) -> str:
    """A short state: ``Pending``, ``Init 0/1``, ``ContainerCreating``, ``Running 1/2 ready``,
    ``Ready``, ``CrashLoopBackOff``, ``Terminating``..."""
    metadata, status = pod.get("metadata", {}), pod.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    phase = status.get("phase") or "Pending"
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason and reason not in ("PodInitializing",):
                return reason
    inits = status.get("initContainerStatuses") or []
    if inits and not all(c.get("ready") or _terminated_ok(c) for c in inits):
        done = sum(1 for c in inits if c.get("ready") or _terminated_ok(c))
        return f"Init {done}/{len(inits)}"
    containers = status.get("containerStatuses") or []
    if phase == "Running" and containers:
        ready = sum(1 for c in containers if c.get("ready"))
        return "Ready" if ready == len(containers) else f"Running {ready}/{len(containers)} ready"
    return str(phase)


def _terminated_ok(container: dict[str, Any]) -> bool:
    terminated = (container.get("state") or {}).get("terminated") or {}
    return terminated.get("exitCode") == 0


def pod_ready(pod: dict[str, Any]) -> bool:
    return pod_state(pod) == "Ready"


def wait(
    kube: Kube,
    namespace: str,
    pending: Pending,
    timeout_s: float,
    say: Say,
    selector: str = POD_SELECTOR,
) -> None:
    """Watch the pods matching ``selector``, saying each change of state, until ``pending()``
    returns None; :class:`ClusterError` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    shown: dict[str, str] = {}
    awaited = pending()
    last_check = time.monotonic()
    while awaited is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClusterError(
                f"timed out after {timeout_s:g} s waiting for {awaited}; see `fxray cluster status`"
            )
        window = max(1, min(WATCH_SLICE_S, math.ceil(remaining)))
        for event, pod in kube.watch_pods(namespace, selector, window):
            name = pod.get("metadata", {}).get("name", "?")
            state = "Deleted" if event == "DELETED" else pod_state(pod)
            if shown.get(name) != state:
                shown[name] = state
                say(f"  {role(pod):<24} {name:<44} {state}")
            if time.monotonic() - last_check >= CHECK_EVERY_S:
                last_check = time.monotonic()
                awaited = pending()
                if awaited is None:
                    return
            if time.monotonic() >= deadline:
                break
        last_check = time.monotonic()
        awaited = pending()


def raycluster_pending(kube: Kube, name: str, namespace: str) -> Pending:
    """Awaits the RayCluster's head and workers, at the RayCluster's newest generation."""
    from fxray.cluster.kube import KINDS, RAY_GROUP, RAY_VERSION

    kind = KINDS[(f"{RAY_GROUP}/{RAY_VERSION}", "RayCluster")]

    def check() -> str | None:
        live = kube.get(kind, name, namespace)
        if live is None:
            return f"RayCluster {name} (it does not exist)"
        return None if raycluster_ready(live) else f"RayCluster {name} to be ready"

    return check


def raycluster_ready(live: dict[str, Any]) -> bool:
    """Ready at its newest generation: KubeRay's state ``ready``, or its conditions
    RayClusterProvisioned and HeadPodReady."""
    status = live.get("status") or {}
    generation = live.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    provisioned = conditions.get("RayClusterProvisioned") == "True"
    head_ready = conditions.get("HeadPodReady") == "True"
    return status.get("state") == "ready" or (provisioned and head_ready)


def deployment_pending(kube: Kube, name: str, namespace: str) -> Pending:
    """Awaits every replica of a Deployment's newest template, available."""
    from fxray.cluster.kube import KINDS

    kind = KINDS[("apps/v1", "Deployment")]

    def check() -> str | None:
        live = kube.get(kind, name, namespace)
        if live is None:
            return f"Deployment {name} (it does not exist)"
        return None if deployment_ready(live) else f"Deployment {name} to be available"

    return check


def deployment_ready(live: dict[str, Any]) -> bool:
    spec, status = live.get("spec") or {}, live.get("status") or {}
    wanted = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < live.get("metadata", {}).get("generation", 0):
        return False
    return (
        status.get("updatedReplicas", 0) >= wanted
        and status.get("availableReplicas", 0) >= wanted
        and status.get("replicas", 0) <= wanted  # old pods of a rollout are gone
    )


def all_of(*checks: Pending) -> Pending:
    def check() -> str | None:
        for one in checks:
            awaited = one()
            if awaited is not None:
                return awaited
        return None

    return check
