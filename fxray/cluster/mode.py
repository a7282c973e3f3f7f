"""Cluster mode: fxray on many Ray nodes, where nothing may live on one node's disk or memory.

On one machine the embedded defaults (SQLite, the local package folder, the local KV, the
embedded bus) are what make fxray need no servers. On a cluster each of them breaks: a router
or executor on another node opens *its own node's* SQLite file or folder, and the embedded
bus's events die with the node that holds its actor. So in cluster mode they are refused,
all at once, with what to set instead, before anything starts.

Cluster mode is on when the settings say so (``cluster_mode = true``), or, unless they say
``false``, when Ray has more than one alive node or the settings declare node types an
autoscaler can add (``cluster_node_types``: a cluster that starts with its head alone).
``cluster_mode = false`` is for nodes that share this machine's folders (one-machine tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fxray.settings import Settings


class ClusterModeError(ValueError):
    """Settings that cannot work on a multi-node cluster; the message lists each, with a fix."""


def cluster_mode_on(settings: Settings, nodes: list[Mapping[str, Any]]) -> bool:
    """Whether the platform runs in cluster mode on a Ray cluster with these ``nodes``."""
    if settings.cluster_mode is not None:
        return settings.cluster_mode
    alive = sum(1 for node in nodes if node.get("Alive", True))
    return alive > 1 or bool(settings.cluster_node_types)


def node_local_problems(settings: Settings) -> list[str]:
    """Each setting that keeps state on one node, with what to set instead."""
    problems = []
    if settings.database_url.startswith("sqlite"):
        problems.append(
            "the management database is SQLite, a file on one node: set FXRAY_DATABASE_URL "
            "to a PostgreSQL URL"
        )
    if settings.event_bus == "embedded":
        problems.append(
            "the embedded event bus keeps its events in one actor's memory, lost with its "
            "node: set FXRAY_EVENT_BUS=kafka and FXRAY_KAFKA_BOOTSTRAP"
        )
    if settings.package_store == "local":
        problems.append(
            "service packages are in a local folder, which other nodes cannot read: set "
            "FXRAY_PACKAGE_STORE=s3 (and the FXRAY_S3_* settings)"
        )
    if settings.kv_store == "local":
        problems.append(
            "config, secrets and service state are in a local SQLite file: set "
            "FXRAY_KV_STORE=consul and FXRAY_CONSUL_URL"
        )
    return problems


def check_cluster_mode(settings: Settings, nodes: list[Mapping[str, Any]]) -> bool:
    """Whether cluster mode is on; :class:`ClusterModeError` if it is and a setting keeps state
    on one node."""
    if not cluster_mode_on(settings, nodes):
        return False
    problems = node_local_problems(settings)
    if problems:
        alive = sum(1 for node in nodes if node.get("Alive", True))
        why = (
            "cluster_mode is set"
            if settings.cluster_mode
            else f"Ray has {alive} nodes"
            if alive > 1
            else "cluster_node_types is set"
        )
        raise ClusterModeError(
            f"fxray runs in cluster mode ({why}), where nothing may live on one node:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
            + "\n(FXRAY_CLUSTER_MODE=false if every node shares this machine's folders)"
        )
    return True
