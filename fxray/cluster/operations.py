"""``fxray cluster status``, ``scale`` and ``delete``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fxray.cluster import progress
from fxray.cluster.errors import ClusterError
from fxray.cluster.kube import KINDS, RAY_GROUP, RAY_VERSION, Kube, describe, kind_of

RAYCLUSTER = KINDS[(f"{RAY_GROUP}/{RAY_VERSION}", "RayCluster")]
DEPLOYMENT = KINDS[("apps/v1", "Deployment")]
CONFIG_MAP = KINDS[("v1", "ConfigMap")]
PART_OF = "app.kubernetes.io/part-of=fxray"


class UsageError(ClusterError):
    """Bad arguments (an unknown group, min above max...)."""


def target(objects: list[dict[str, Any]]) -> tuple[str, str]:
    """The RayCluster's name and namespace in rendered ``objects``."""
    for obj in objects:
        if obj.get("kind") == "RayCluster":
            return obj["metadata"]["name"], obj["metadata"].get("namespace") or "default"
    raise ClusterError("the rendered manifests hold no RayCluster")


def get_raycluster(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    """The live RayCluster; :class:`ClusterError` saying how to create it if there is none."""
    kube.require_kuberay()
    live = kube.get(RAYCLUSTER, name, namespace)
    if live is None:
        raise ClusterError(
            f"no RayCluster {name} in namespace {namespace}: create it with fxray cluster apply"
        )
    return live


# -- status --------------------------------------------------------------------------------


@dataclass
class GroupStatus:
    name: str
    replicas: int | None
    min_replicas: int | None
    max_replicas: int | None
    ready_pods: int
    pods: int


@dataclass
class PodStatus:
    name: str
    role: str
    state: str
    restarts: int
    node: str
    age: str


@dataclass
class Status:
    name: str
    namespace: str
    state: str
    reason: str
    groups: list[GroupStatus]
    deployments: list[tuple[str, int, int]]  # name, available, wanted
    pods: list[PodStatus]

    def to_dict(self) -> dict[str, Any]:
        return {
            "raycluster": {
                "name": self.name,
                "namespace": self.namespace,
                "state": self.state,
                "reason": self.reason,
            },
            "groups": [vars(g) for g in self.groups],
            "deployments": [
                {"name": n, "available": a, "replicas": w} for n, a, w in self.deployments
            ],
            "pods": [vars(p) for p in self.pods],
        }


def _age(pod: dict[str, Any], now: dt.datetime) -> str:
    created = pod.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "?"
    try:
        seconds = (now - dt.datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def status(kube: Kube, objects: list[dict[str, Any]]) -> Status:
    """The RayCluster's state and groups, the platform's Deployments, and every pod."""
    name, namespace = target(objects)
    live = get_raycluster(kube, name, namespace)
    pods = kube.pods(namespace, progress.POD_SELECTOR)
    now = dt.datetime.now(dt.UTC)
    pod_rows = [
        PodStatus(
            name=p["metadata"]["name"],
            role=progress.role(p),
            state=progress.pod_state(p),
            restarts=sum(
                c.get("restartCount", 0)
                for c in (p.get("status") or {}).get("containerStatuses") or []
            ),
            node=(p.get("spec") or {}).get("nodeName") or "-",
            age=_age(p, now),
        )
        for p in sorted(pods, key=lambda p: (progress.role(p), p["metadata"]["name"]))
    ]

    def in_group(group: str) -> list[dict[str, Any]]:
        return [p for p in pods if (p["metadata"].get("labels") or {}).get("ray.io/group") == group]

    head = in_group("headgroup")
    groups = [GroupStatus("head", 1, None, None, sum(map(progress.pod_ready, head)), len(head))]
    for group in (live.get("spec") or {}).get("workerGroupSpecs") or []:
        members = in_group(group["groupName"])
        groups.append(
            GroupStatus(
                group["groupName"],
                group.get("replicas"),
                group.get("minReplicas"),
                group.get("maxReplicas"),
                sum(map(progress.pod_ready, members)),
                len(members),
            )
        )
    deployments = []
    for obj in objects:
        if obj.get("kind") == "Deployment":
            found = kube.get(DEPLOYMENT, obj["metadata"]["name"], namespace)
            wanted = ((found or {}).get("spec") or {}).get("replicas", 0)
            available = ((found or {}).get("status") or {}).get("availableReplicas", 0)
            deployments.append((obj["metadata"]["name"], available, wanted if found else 0))
    cluster_status = live.get("status") or {}
    return Status(
        name=name,
        namespace=namespace,
        state=str(cluster_status.get("state") or "unknown"),
        reason=str(cluster_status.get("reason") or ""),
        groups=groups,
        deployments=deployments,
        pods=pod_rows,
    )


# -- scale -----------------------------------------------------------------------------------


@dataclass
class ScaleResult:
    group: str
    before: tuple[int | None, int | None, int | None]  # min, max, replicas
    after: tuple[int, int, int]


def scale(
    kube: Kube,
    name: str,
    namespace: str,
    group: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    replicas: int | None = None,
) -> ScaleResult:
    """Set one worker group's min, max and/or replicas with a JSON patch on that group only
    (a ``test`` of its name first, so a reordered list fails instead of scaling another)."""
    if minimum is None and maximum is None and replicas is None:
        raise UsageError("give --min, --max and/or --replicas")
    for label, value in (("--min", minimum), ("--max", maximum), ("--replicas", replicas)):
        if value is not None and value < 0:
            raise UsageError(f"{label} must be 0 or more")
    live = get_raycluster(kube, name, namespace)
    groups = (live.get("spec") or {}).get("workerGroupSpecs") or []
    names = [g.get("groupName") for g in groups]
    if group not in names:
        raise UsageError(
            f"RayCluster {name} has no worker group {group!r}; it has {', '.join(names)}"
        )
    index = names.index(group)
    current = groups[index]
    before = (current.get("minReplicas"), current.get("maxReplicas"), current.get("replicas"))
    new_min = minimum if minimum is not None else int(current.get("minReplicas") or 0)
    new_max = maximum if maximum is not None else int(current.get("maxReplicas") or new_min)
    if new_min > new_max:
        raise UsageError(f"min ({new_min}) is above max ({new_max}) for group {group}")
    if replicas is not None:
        if not new_min <= replicas <= new_max:
            raise UsageError(f"--replicas {replicas} is outside min {new_min} .. max {new_max}")
        new_replicas = replicas
    else:
        new_replicas = min(max(int(current.get("replicas") or 0), new_min), new_max)
    prefix = f"/spec/workerGroupSpecs/{index}"
    operations = [
        {"op": "test", "path": f"{prefix}/groupName", "value": group},
        {
            "op": "replace" if "minReplicas" in current else "add",
            "path": f"{prefix}/minReplicas",
            "value": new_min,
        },
        {
            "op": "replace" if "maxReplicas" in current else "add",
            "path": f"{prefix}/maxReplicas",
            "value": new_max,
        },
        {
            "op": "replace" if "replicas" in current else "add",
            "path": f"{prefix}/replicas",
            "value": new_replicas,
        },
    ]
    kube.patch(RAYCLUSTER, name, namespace, operations, "application/json-patch+json")
    return ScaleResult(group, before, (new_min, new_max, new_replicas))


def group_pending(
    kube: Kube, name: str, namespace: str, group: str, minimum: int
) -> progress.Pending:
    """Awaits at least ``minimum`` ready pods in the group, and the RayCluster ready."""
    cluster_ready = progress.raycluster_pending(kube, name, namespace)

    def check() -> str | None:
        selector = f"ray.io/cluster={name},ray.io/group={group}"
        ready = sum(map(progress.pod_ready, kube.pods(namespace, selector)))
        if ready < minimum:
            return f"{minimum} ready pods in group {group} ({ready} now)"
        return cluster_ready()

    return check


# -- delete --------------------------------------------------------------------------------


def delete(
    kube: Kube,
    objects: list[dict[str, Any]],
    *,
    say: Callable[[str], None],
    with_namespace: bool = False,
    wait: bool = True,
    timeout_s: float = 300.0,
) -> list[str]:
    """Delete the rendered objects (in reverse order), and the generated ConfigMaps earlier
    applies left (same name before the hash); the Namespace only ``with_namespace``. Returns
    what was deleted."""
    for obj in objects:
        kind_of(obj)
    if any(o["kind"] == "RayCluster" for o in objects):
        kube.require_kuberay()
    deleted: list[str] = []
    namespaces = sorted(
        {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    )
    for obj in reversed(objects):
        if obj["kind"] == "Namespace" and not with_namespace:
            say(f"{describe(obj)} kept (--with-namespace deletes it, and its Secrets)")
            continue
        kind = kind_of(obj)
        gone = kube.delete(kind, obj["metadata"]["name"], obj["metadata"].get("namespace"))
        say(f"{describe(obj)} {'deleted' if gone else 'not found'}")
        if gone:
            deleted.append(describe(obj))
    generated = tuple(
        o["metadata"]["name"].rsplit("-", 1)[0] + "-" for o in objects if o["kind"] == "ConfigMap"
    )
    for namespace in namespaces:
        if with_namespace or not generated:
            continue
        for leftover in kube.list(CONFIG_MAP, namespace, PART_OF):
            name = leftover["metadata"]["name"]
            if name.startswith(generated) and kube.delete(CONFIG_MAP, name, namespace):
                say(f"configmap/{name} deleted (settings of an earlier apply)")
                deleted.append(f"configmap/{name}")
    if wait:
        for namespace in namespaces:

            def pods_left(ns: str = namespace) -> str | None:
                left = kube.pods(ns, progress.POD_SELECTOR)
                return f"{len(left)} pods to end" if left else None

            try:
                progress.wait(kube, namespace, pods_left, timeout_s, say)
            except ClusterError as exc:
                if exc.status == 404:  # the namespace went with its pods
                    continue
                raise
        say("deleted")
    return deleted
