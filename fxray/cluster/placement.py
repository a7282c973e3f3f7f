"""Where fxray's actors run on a Ray cluster, and whether a request can ever be placed.

* Routers and ops sinks ask for no CPU (they wait on I/O) but for the custom resources of
  ``platform_actor_resources``, which only the nodes meant for them offer (on KubeRay, the
  worker groups: the head stays free of work), and Ray restarts them on another node when
  theirs dies (:func:`platform_actor_options`).
* Executors ask for what their service's manifest says (``resources``: CPUs, memory, GPUs,
  custom resources; the platform's ``executor_cpus`` and ``executor_resources`` by default), so a
  heavy service runs only on the nodes that offer its resource, and are spread over the nodes
  that can take them (:func:`executor_options`).
* A request that no alive node and no node type an autoscaler can add could ever satisfy is
  refused with a message that says what was asked and what the nodes offer
  (:class:`NodeView`), at deploy and again before an executor is started, instead of an actor
  left pending for good. Node types come from the alive nodes, the settings'
  ``cluster_node_types`` and, when an autoscaler publishes it, Ray's cluster config.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fxray.settings import Settings

log = logging.getLogger("fxray.cluster")

RESOURCE_EPSILON = 1e-9
RESUME_WITHIN_S = 300.0
RESUME_CALL_TIMEOUT_S = 120.0
NODE_VIEW_TTL_S = 5.0
HIDDEN_PREFIXES = ("node:", "accelerator_type:", "object_store_memory", "bundle_group_")


class Unplaceable(RuntimeError):
    """No node of the cluster can ever offer what an executor asks for."""


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """What one actor asks Ray for."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory: int = 0  # bytes
    custom: Mapping[str, float] = field(default_factory=dict)

    def as_ray(self) -> dict[str, float]:
        """The request in Ray's resource names, without zero amounts."""
        wanted = {"CPU": self.cpus, "GPU": self.gpus, "memory": float(self.memory), **self.custom}
        return {name: amount for name, amount in wanted.items() if amount > 0}

    def describe(self) -> str:
        return describe_resources(self.as_ray()) or "no resources"


def executor_request(
    resources: Mapping[str, Any] | None, *, default_cpus: float, extra: Mapping[str, float]
) -> ResourceRequest:
    """An executor's request from its manifest's ``resources`` (already validated) and the
    platform's defaults: ``default_cpus`` unless the manifest says, plus ``extra`` resources."""
    resources = resources or {}
    cpus = resources.get("cpus")
    custom = {**extra, **(resources.get("custom") or {})}
    return ResourceRequest(
        cpus=float(default_cpus if cpus is None else cpus),
        gpus=float(resources.get("gpus") or 0.0),
        memory=int(resources.get("memory") or 0),
        custom=custom,
    )


def executor_options(request: ResourceRequest) -> dict[str, Any]:
    """Ray actor options for an executor: its resources, spread over the nodes that fit."""
    options: dict[str, Any] = {
        "num_cpus": request.cpus,
        "resources": dict(request.custom) or None,
        "scheduling_strategy": "SPREAD",
    }
    if request.gpus:
        options["num_gpus"] = request.gpus
    if request.memory:
        options["memory"] = request.memory
    return options


def platform_actor_options(settings: Settings) -> dict[str, Any]:
    """Ray actor options for a router or an ops sink: no CPU, the platform's resources, and
    restarted by Ray (on another node if its node died) for as long as it takes."""
    return {
        "num_cpus": 0,
        "resources": dict(settings.platform_actor_resources) or None,
        "max_restarts": -1,
    }


@dataclass(frozen=True, slots=True)
class NodeType:
    """Nodes that offer the same resources: alive ones, or a type an autoscaler can add."""

    name: str
    resources: Mapping[str, float]

    def fits(self, wanted: Mapping[str, float]) -> bool:
        return all(
            self.resources.get(name, 0.0) + RESOURCE_EPSILON >= amount
            for name, amount in wanted.items()
        )


def node_types(
    nodes: list[Mapping[str, Any]],
    declared: Mapping[str, Mapping[str, float]] | None = None,
    published: list[NodeType] | None = None,
) -> list[NodeType]:
    """The alive nodes (``ray.nodes()``), grouped by what they offer, then the declared and
    the published node types."""
    groups: dict[tuple[tuple[str, float], ...], int] = {}
    for node in nodes:
        if not node.get("Alive", True):
            continue
        offered = tuple(sorted(_visible(node.get("Resources") or {}).items()))
        groups[offered] = groups.get(offered, 0) + 1
    found = [
        NodeType(f"{count} alive node{'s' if count > 1 else ''}", dict(offered))
        for offered, count in groups.items()
    ]
    for name, resources in (declared or {}).items():
        found.append(NodeType(f"node type {name}", dict(resources)))
    found.extend(published or [])
    return found


def unplaceable_reason(request: ResourceRequest, types: list[NodeType]) -> str | None:
    """Why no node could ever run ``request`` (None if one could)."""
    wanted = request.as_ray()
    if any(t.fits(wanted) for t in types):
        return None
    offers = "; ".join(f"{t.name}: {describe_resources(t.resources) or 'nothing'}" for t in types)
    return (
        f"no node can ever offer what it asks for ({request.describe()}); the cluster has "
        f"{offers or 'no nodes'}. Ask for less in the manifest's resources, or add nodes that "
        "offer it (an autoscaler's node types: FXRAY_CLUSTER_NODE_TYPES)"
    )


def describe_resources(resources: Mapping[str, float]) -> str:
    parts = []
    for name, amount in sorted(_visible(resources).items(), key=lambda item: _order(item[0])):
        if name == "memory":
            parts.append(f"{_bytes(amount)} memory")
        elif name in ("CPU", "GPU"):
            parts.append(f"{amount:g} {name}")
        else:
            parts.append(f"{name}: {amount:g}")
    return ", ".join(parts)


class NodeView:
    """The cluster's node types, read from Ray at most every ``ttl_s`` (thread-safe)."""

    def __init__(
        self,
        declared: Mapping[str, Mapping[str, float]] | None = None,
        *,
        ttl_s: float = NODE_VIEW_TTL_S,
        read_nodes: Callable[[], list[Mapping[str, Any]]] | None = None,
        read_published: Callable[[], list[NodeType]] | None = None,
    ) -> None:
        self.declared = dict(declared or {})
        self.ttl_s = ttl_s
        self._read_nodes = read_nodes or _ray_nodes
        self._read_published = read_published or published_node_types
        self._lock = threading.Lock()
        self._types: list[NodeType] = []
        self._read_at = float("-inf")

    def types(self) -> list[NodeType]:
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:
                self._types = node_types(self._read_nodes(), self.declared, self._read_published())
                self._read_at = time.monotonic()
            return list(self._types)

    def check(self, request: ResourceRequest, what: str = "the executor") -> None:
        """Raise :class:`Unplaceable` if no node could ever run ``request``."""
        reason = unplaceable_reason(request, self.types())
        if reason is not None:
            raise Unplaceable(f"{what} cannot be placed: {reason}")


def published_node_types() -> list[NodeType]:
    """The node groups an autoscaler published to Ray's GCS (none when it did not)."""
    try:
        from ray._private import state

        config = state.state.get_cluster_config()
    except Exception:  # a private API, absent over Ray Client or in other Ray versions
        return []
    if config is None:
        return []
    return [
        NodeType(f"node type {group.name}", {k: float(v) for k, v in group.resources.items()})
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def lost_with_its_node(exc: BaseException) -> bool:
    """Did an actor call fail because the actor's node (or the way to it) went away, rather
    than because its process died (a script that killed it)? Ray says "unavailable" while it
    cannot reach the actor, and names the node's death once it is known."""
    from ray.exceptions import ActorUnavailableError

    return isinstance(exc, ActorUnavailableError) or "because its node has died" in str(exc)


def resume_if_restarted(start_method: str = "start", within_s: float = RESUME_WITHIN_S) -> bool:
    """Called in an actor's ``__init__``: if Ray restarted the actor (after its node or process
    died), call its ``start_method`` once the constructor has returned, as the platform did
    when it first started it; True if so.

    The call is made from a thread of the actor's own, and made again until it is answered
    (``start_method`` must be idempotent): a call sent while Ray still counts the actor as
    restarting can be lost.
    """
    import ray

    try:
        context = ray.get_runtime_context()
        if context.get_actor_id() is None or not context.was_current_actor_reconstructed:
            return False
    except Exception:  # not in a Ray actor (a test calls the class directly)
        return False
    handle = context.current_actor

    def resume() -> None:
        deadline = time.monotonic() + within_s
        while True:
            try:
                ray.get(getattr(handle, start_method).remote(), timeout=RESUME_CALL_TIMEOUT_S)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("could not resume after a restart: %s", exc)
                    return
                time.sleep(1.0)

    threading.Thread(target=resume, name="fxray-resume", daemon=True).start()
    return True


def current_node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return None


def _ray_nodes() -> list[Mapping[str, Any]]:
    import ray

    return list(ray.nodes())


def _visible(resources: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items() if not k.startswith(HIDDEN_PREFIXES)}


def _order(name: str) -> tuple[int, str]:
    return ({"CPU": 0, "GPU": 1, "memory": 2}.get(name, 3), name)


def _bytes(amount: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if amount >= size:
            return f"{amount / size:.3g} {unit}"
    return f"{amount:g} B"
