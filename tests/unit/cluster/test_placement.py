"""Placement: the options fxray's actors are created with, and refusing a request no node
could ever satisfy (from ``ray.nodes()``-shaped data: no Ray needed)."""

from __future__ import annotations

from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from fxray.cluster.placement import (
    NodeType,
    NodeView,
    ResourceRequest,
    Unplaceable,
    describe_resources,
    executor_options,
    executor_request,
    lost_with_its_node,
    node_types,
    platform_actor_options,
    unplaceable_reason,
)
from fxray.services.manifest import Manifest
from fxray.settings import Settings

GIB = 1024**3


def node(resources: dict[str, float], alive: bool = True) -> dict[str, Any]:
    return {
        "NodeID": "n" * 56,
        "Alive": alive,
        "Resources": {"node:127.0.0.1": 1.0, "object_store_memory": 1e8, **resources},
    }


HEAD = node({"memory": 4 * GIB, "node:__internal_head__": 1.0})  # no CPU: runs no services
EXECUTORS = node({"CPU": 2.0, "memory": 8 * GIB, "fxray-platform": 1000.0})
HEAVY = node({"CPU": 8.0, "memory": 32 * GIB, "fxray-heavy": 1.0})


def test_an_executor_asks_for_what_its_manifest_says_over_the_platform_defaults() -> None:
    manifest = Manifest.model_validate(
        {
            "name": "heavy",
            "entrypoint": "main.py",
            "resources": {"cpus": 2, "memory": "4Gi", "gpus": 1, "custom": {"fxray-heavy": 1}},
        }
    )
    request = executor_request(
        manifest.resources.model_dump(), default_cpus=0.1, extra={"fxray-executor": 0.01}
    )
    assert request.as_ray() == {
        "CPU": 2.0,
        "GPU": 1.0,
        "memory": 4.0 * GIB,
        "fxray-executor": 0.01,
        "fxray-heavy": 1.0,
    }
    options = executor_options(request)
    assert options == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": 4 * GIB,
        "resources": {"fxray-executor": 0.01, "fxray-heavy": 1.0},
        "scheduling_strategy": "SPREAD",
    }


def test_without_resources_an_executor_asks_for_the_platform_default_cpus() -> None:
    request = executor_request(None, default_cpus=0.1, extra={})
    assert request.as_ray() == {"CPU": 0.1}
    assert executor_options(request) == {
        "num_cpus": 0.1,
        "resources": None,
        "scheduling_strategy": "SPREAD",
    }


def test_routers_and_sinks_ask_for_no_cpu_the_platform_resources_and_restart() -> None:
    settings = Settings(platform_actor_resources={"fxray-platform": 0.001})
    assert platform_actor_options(settings) == {
        "num_cpus": 0,
        "resources": {"fxray-platform": 0.001},
        "max_restarts": -1,
    }
    assert platform_actor_options(Settings())["resources"] is None


def test_alive_nodes_are_grouped_and_dead_ones_left_out() -> None:
    types = node_types([HEAD, EXECUTORS, EXECUTORS, node({"GPU": 4.0}, alive=False)])
    assert [t.name for t in types] == ["1 alive node", "2 alive nodes"]
    assert types[1].resources == {"CPU": 2.0, "memory": 8.0 * GIB, "fxray-platform": 1000.0}


def test_a_request_one_node_type_fits_is_placeable() -> None:
    types = node_types([HEAD, EXECUTORS])
    assert unplaceable_reason(ResourceRequest(cpus=2.0, memory=GIB), types) is None
    assert unplaceable_reason(ResourceRequest(), types) is None


def test_what_no_node_offers_is_refused_with_what_the_nodes_offer() -> None:
    types = node_types([HEAD, EXECUTORS])
    reason = unplaceable_reason(ResourceRequest(cpus=1.0, custom={"fxray-heavy": 1.0}), types)
    assert reason is not None
    assert "1 CPU, fxray-heavy: 1" in reason
    assert "2 CPU, 8 GiB memory, fxray-platform: 1000" in reason
    assert "1 alive node: 4 GiB memory" in reason  # the head
    # more than any one node has, although the cluster has it in all: refused too
    assert unplaceable_reason(ResourceRequest(cpus=3.0), types) is not None


def test_a_node_type_an_autoscaler_can_add_makes_a_request_placeable() -> None:
    request = ResourceRequest(cpus=4.0, custom={"fxray-heavy": 1.0})
    alive_only = node_types([HEAD, EXECUTORS])
    assert unplaceable_reason(request, alive_only) is not None
    declared = {"heavy": {"CPU": 8.0, "memory": 32.0 * GIB, "fxray-heavy": 1.0}}
    assert unplaceable_reason(request, node_types([HEAD, EXECUTORS], declared)) is None
    published = [NodeType("node type heavy", {"CPU": 8.0, "fxray-heavy": 1.0})]
    assert unplaceable_reason(request, node_types([HEAD], None, published)) is None


def test_the_node_view_reads_ray_at_most_once_per_ttl_and_raises_unplaceable() -> None:
    reads: list[int] = []

    def read_nodes() -> list[dict[str, Any]]:
        reads.append(1)
        return [HEAD, EXECUTORS]

    view = NodeView(ttl_s=60.0, read_nodes=read_nodes, read_published=list)
    view.check(ResourceRequest(cpus=1.0))
    with pytest.raises(Unplaceable, match="the heavy service cannot be placed: no node can ever"):
        view.check(ResourceRequest(gpus=1.0), "the heavy service")
    assert len(reads) == 1


def test_resources_are_described_for_people() -> None:
    assert describe_resources(HEAVY["Resources"]) == "8 CPU, 32 GiB memory, fxray-heavy: 1"
    assert describe_resources({"memory": 512 * 1024**2}) == "512 MiB memory"


def test_an_actor_lost_with_its_node_is_told_from_one_whose_process_died() -> None:
    # while Ray cannot reach the actor's node, and once the node is known dead
    assert lost_with_its_node(ActorUnavailableError("socket closed", b"a" * 16))
    assert lost_with_its_node(RuntimeError("The actor died because its node has died. Node"))
    # a process that died on a live node (a script that killed it)
    assert not lost_with_its_node(ActorDiedError())
