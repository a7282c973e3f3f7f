"""What ``fxray cluster apply`` counts as a difference, what it leaves to the autoscaler, and
when a change recreates the Ray pods (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from fxray.cluster.apply import (
    LAST_APPLIED,
    comparable,
    differences,
    keep_autoscaler_fields,
    last_applied,
    recreates_ray_pods,
    removals,
    removed_paths,
    secret_references,
    with_last_applied,
    with_removals,
)
from fxray.cluster.progress import deployment_ready, pod_state, raycluster_ready, role


def test_the_servers_defaults_and_status_are_no_difference() -> None:
    desired = {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"ports": [{"port": 80, "targetPort": "http"}], "type": "ClusterIP"},
    }
    live = {
        "metadata": {"labels": {"a": "b", "added": "by someone"}, "uid": "1", "name": "x"},
        "spec": {
            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}],
            "type": "ClusterIP",
            "clusterIP": "10.0.0.1",
        },
        "status": {"loadBalancer": {}},
    }
    assert differences(desired, live) == []


def test_quantities_compare_by_value() -> None:
    desired = {"resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}, "requests": {"cpu": 2}}}
    live = {
        "resources": {"limits": {"cpu": "500m", "memory": "1073741824"}, "requests": {"cpu": "2"}}
    }
    assert differences(desired, live) == []
    live["resources"]["limits"]["cpu"] = "600m"
    assert differences(desired, live) == ["resources.limits.cpu"]


@pytest.mark.parametrize(
    ("desired", "live", "found"),
    [
        ({"a": {"b": 1}}, {"a": {"b": 2}}, ["a.b"]),
        ({"a": [1, 2]}, {"a": [1]}, ["a"]),
        ({"a": [{"n": 1}, {"n": 2}]}, {"a": [{"n": 1}, {"n": 3, "x": 0}]}, ["a[1].n"]),
        ({"a": "x"}, {}, ["a"]),
        ({"a": True}, {"a": "true"}, ["a"]),
        ({"a": {}}, {}, []),  # an empty map the server dropped
        ({"a": "0.1.0"}, {"a": "0.1.1"}, ["a"]),  # not quantities
    ],
)
def test_differences(desired: Any, live: Any, found: list[str]) -> None:
    assert differences(desired, live) == found


def test_only_labels_and_annotations_of_the_metadata_are_compared() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "n", "labels": {"a": "b"}},
        "data": {"k": "v"},
    }
    assert comparable(obj) == {"metadata": {"labels": {"a": "b"}}, "data": {"k": "v"}}


def raycluster(replicas: int, low: int, high: int, autoscaling: bool = True) -> dict[str, Any]:
    return {
        "spec": {
            "enableInTreeAutoscaling": autoscaling,
            "workerGroupSpecs": [
                {
                    "groupName": "executors",
                    "replicas": replicas,
                    "minReplicas": low,
                    "maxReplicas": high,
                },
                {"groupName": "new", "replicas": 0, "minReplicas": 0, "maxReplicas": 1},
            ],
        }
    }


def test_what_an_earlier_apply_set_and_the_manifests_no_longer_do_is_removed() -> None:
    before = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "labels": {"app": "fxray", "team": "data"}},
        "spec": {"ports": [{"port": 80}, {"port": 81}], "selector": {"app": "fxray"}, "x": 1},
    }
    now = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "labels": {"app": "fxray"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "fxray"}},
    }
    live = with_last_applied(before)
    live["metadata"]["labels"]["by-hand"] = "kept"  # set by someone else: not ours to remove
    live["spec"]["clusterIP"] = "10.0.0.1"  # the server's
    gone = removals(last_applied(live), with_last_applied(now))
    assert gone == {"metadata": {"labels": {"team": None}}, "spec": {"x": None}}
    assert removed_paths(gone) == ["metadata.labels.team (removed)", "spec.x (removed)"]
    patch = with_removals(now, gone)
    assert patch["metadata"]["labels"] == {"app": "fxray", "team": None}
    assert patch["spec"] == {"ports": [{"port": 80}], "selector": {"app": "fxray"}, "x": None}
    # the record itself is not part of what it records, and a broken one counts as none
    recorded = with_last_applied(now)["metadata"]["annotations"][LAST_APPLIED]
    assert LAST_APPLIED not in recorded
    assert last_applied({"metadata": {"annotations": {LAST_APPLIED: "{not json"}}}) == {}


def test_the_autoscalers_replicas_are_kept_within_the_new_bounds() -> None:
    live = raycluster(5, 2, 10)
    live["spec"]["workerGroupSpecs"][0]["scaleStrategy"] = {"workersToDelete": ["pod-1"]}
    live["spec"]["workerGroupSpecs"].pop()  # "new" is not there yet
    kept = keep_autoscaler_fields(raycluster(2, 2, 10), live)
    assert kept["spec"]["workerGroupSpecs"][0]["replicas"] == 5
    assert kept["spec"]["workerGroupSpecs"][0]["scaleStrategy"] == {"workersToDelete": ["pod-1"]}
    assert kept["spec"]["workerGroupSpecs"][1]["replicas"] == 0
    assert (
        keep_autoscaler_fields(raycluster(2, 2, 4), live)["spec"]["workerGroupSpecs"][0]["replicas"]
        == 4
    )
    without = keep_autoscaler_fields(raycluster(2, 2, 10, autoscaling=False), live)
    assert without["spec"]["workerGroupSpecs"][0]["replicas"] == 2


@pytest.mark.parametrize(
    ("paths", "recreates"),
    [
        (["spec.workerGroupSpecs[0].minReplicas", "spec.workerGroupSpecs[1].replicas"], False),
        (["metadata.labels.team"], False),
        (["spec.headGroupSpec.template.spec.containers[0].image"], True),
        (["spec.workerGroupSpecs[0].template.spec.containers[0].resources.limits.cpu"], True),
        (["spec.workerGroupSpecs"], True),  # a group added or removed
    ],
)
def test_which_changes_recreate_the_ray_pods(paths: list[str], recreates: bool) -> None:
    assert recreates_ray_pods(paths) is recreates


def test_secret_references_leave_out_optional_ones() -> None:
    deployment = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "env": [
                                {
                                    "name": "A",
                                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "a"}},
                                },
                                {
                                    "name": "B",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "s", "key": "b", "optional": True}
                                    },
                                },
                                {"name": "C", "value": "plain"},
                            ],
                            "envFrom": [{"secretRef": {"name": "all"}}],
                        }
                    ]
                }
            }
        }
    }
    assert secret_references(deployment) == [("s", "a"), ("all", None)]


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "labels": {}}, "status": {"phase": phase, **status}}


@pytest.mark.parametrize(
    ("obj", "state"),
    [
        (pod("Pending"), "Pending"),
        (
            pod(
                "Pending",
                containerStatuses=[{"state": {"waiting": {"reason": "ContainerCreating"}}}],
            ),
            "ContainerCreating",
        ),
        (
            pod("Pending", initContainerStatuses=[{"ready": False, "state": {"running": {}}}]),
            "Init 0/1",
        ),
        (
            pod("Running", containerStatuses=[{"ready": True}, {"ready": False}]),
            "Running 1/2 ready",
        ),
        (pod("Running", containerStatuses=[{"ready": True}]), "Ready"),
        (
            pod(
                "Running",
                containerStatuses=[
                    {"ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ],
            ),
            "CrashLoopBackOff",
        ),
        ({"metadata": {"deletionTimestamp": "now"}, "status": {"phase": "Running"}}, "Terminating"),
    ],
)
def test_pod_states(obj: dict[str, Any], state: str) -> None:
    assert pod_state(obj) == state


def test_pod_roles() -> None:
    def labelled(**labels: str) -> dict[str, Any]:
        return {"metadata": {"labels": labels}}

    assert role(labelled(**{"ray.io/node-type": "head"})) == "ray head"
    assert role(labelled(**{"ray.io/node-type": "worker", "ray.io/group": "heavy"})) == (
        "ray worker (heavy)"
    )
    assert role(labelled(**{"app.kubernetes.io/component": "platform"})) == "platform"


def test_readiness_waits_for_the_newest_generation() -> None:
    ready = {"metadata": {"generation": 2}, "status": {"state": "ready", "observedGeneration": 2}}
    assert raycluster_ready(ready)
    stale = {"metadata": {"generation": 3}, "status": {"state": "ready", "observedGeneration": 2}}
    assert not raycluster_ready(stale)
    by_conditions = {
        "metadata": {},
        "status": {
            "conditions": [
                {"type": "RayClusterProvisioned", "status": "True"},
                {"type": "HeadPodReady", "status": "True"},
            ]
        },
    }
    assert raycluster_ready(by_conditions)
    deployment = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
            "replicas": 3,
        },
    }
    assert not deployment_ready(deployment)  # an old pod of the rollout is still there
    deployment["status"]["replicas"] = 2
    assert deployment_ready(deployment)
