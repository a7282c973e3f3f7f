"""``fxray cluster apply``: make the cluster hold the rendered objects, changing only what
differs, then wait for the pods.

Each object is read first: a missing one is created; an existing one is compared with what was
rendered (only the fields the manifests set, so the server's defaults and status do not count)
and patched (merge patch) only if something differs. A second apply therefore sends no write
at all. The worker groups' ``replicas`` belong to the Ray autoscaler and are never set back.

Like ``kubectl apply``, each object carries what was last applied (the annotation
``fxray.io/last-applied``), so a field the manifests no longer set is removed from the live
object (a ``null`` in the merge patch) rather than left behind; fields others set (the server,
the autoscaler, ``kubectl edit``) are left alone.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.utils import parse_quantity

from fxray.cluster import progress
from fxray.cluster.errors import ClusterError, Forbidden
from fxray.cluster.kube import KINDS, Kube, describe, kind_of

Action = Literal["created", "configured", "unchanged", "restarted"]
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets
LAST_APPLIED = "fxray.io/last-applied"
MAX_SHOWN_DIFFERENCES = 3
# RayCluster fields a change of which does not recreate the Ray pods (KubeRay's Recreate
# strategy hashes the spec without them)
_SCALING_FIELDS = ("replicas", "minReplicas", "maxReplicas", "scaleStrategy")


@dataclass
class Change:
    """What apply did to one object."""

    obj: dict[str, Any]
    action: Action
    differences: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return describe(self.obj)

    def line(self) -> str:
        shown = ", ".join(self.differences[:MAX_SHOWN_DIFFERENCES])
        more = len(self.differences) - MAX_SHOWN_DIFFERENCES
        if more > 0:
            shown += f" and {more} more"
        return f"{self.name} {self.action}" + (f" ({shown})" if shown else "")


# -- comparing ---------------------------------------------------------------------------------


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    if isinstance(desired, str | int | float) and isinstance(live, str | int | float):
        try:  # the server writes quantities its own way: "0.5" -> "500m", "1000m" -> "1"
            return parse_quantity(desired) == parse_quantity(live)
        except ValueError:
            return False
    return False


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """The paths where ``live`` does not hold what ``desired`` says (fields ``desired`` does not
    set are not compared: the server's defaults, status and metadata)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [] if _empty(desired) and _empty(live) else [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else key
            if key not in live:
                if not _empty(value):
                    found.append(sub)
                continue
            found.extend(differences(value, live[key], sub))
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return [] if _empty(desired) and _empty(live) else [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found.extend(differences(want, have, f"{path}[{index}]"))
        return found
    return [] if _same_scalar(desired, live) else [path]


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """What of a manifest object the live one must hold: everything but the identity."""
    compared = {
        k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")
    }
    metadata = obj.get("metadata", {})
    compared["metadata"] = {k: metadata[k] for k in ("labels", "annotations") if k in metadata}
    return compared


def with_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` carrying what it sets, as JSON in its ``LAST_APPLIED`` annotation."""
    obj = copy.deepcopy(obj)
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(LAST_APPLIED, None)
    annotations[LAST_APPLIED] = json.dumps(comparable(obj), sort_keys=True, separators=(",", ":"))
    return obj


def last_applied(live: dict[str, Any]) -> dict[str, Any]:
    """What the live object says was last applied ({} if nothing, or not readable)."""
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    (found.get("metadata") or {}).get("annotations", {}).pop(LAST_APPLIED, None)
    return found


def removals(last: Any, desired: Any) -> dict[str, Any]:
    """A merge patch's nulls for the keys ``last`` set and ``desired`` no longer does, at any
    depth of nested objects (lists are replaced whole by a merge patch, so need none)."""
    if not isinstance(last, dict) or not isinstance(desired, dict):
        return {}
    found: dict[str, Any] = {}
    for key, value in last.items():
        if key not in desired:
            found[key] = None
        elif nested := removals(value, desired[key]):
            found[key] = nested
    return found


def removed_paths(removed: dict[str, Any], path: str = "") -> list[str]:
    """The dotted paths of :func:`removals`' nulls."""
    found = []
    for key, value in removed.items():
        sub = f"{path}.{key}" if path else key
        found.extend([f"{sub} (removed)"] if value is None else removed_paths(value, sub))
    return found


def with_removals(patch: dict[str, Any], removed: dict[str, Any]) -> dict[str, Any]:
    """``patch`` with :func:`removals`' nulls merged in."""
    merged = copy.deepcopy(patch)
    for key, value in removed.items():
        if value is None or not isinstance(merged.get(key), dict):
            merged[key] = None if value is None else value
        else:
            merged[key] = with_removals(merged[key], value)
    return merged


def keep_autoscaler_fields(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """``desired`` with each worker group's ``replicas`` (and ``workersToDelete``) as the
    autoscaler left them (within the new min and max), when the RayCluster autoscales."""
    desired = copy.deepcopy(desired)
    spec = desired.get("spec") or {}
    if not spec.get("enableInTreeAutoscaling"):
        return desired
    live_groups = {
        g.get("groupName"): g for g in (live.get("spec") or {}).get("workerGroupSpecs") or []
    }
    for group in spec.get("workerGroupSpecs") or []:
        current = live_groups.get(group.get("groupName"))
        if current is None or current.get("replicas") is None:
            continue
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", current["replicas"])
        group["replicas"] = min(max(current["replicas"], low), high)
        if "scaleStrategy" in current and "scaleStrategy" not in group:
            group["scaleStrategy"] = current["scaleStrategy"]
    return desired


def recreates_ray_pods(changed: list[str]) -> bool:
    """Whether changing these RayCluster paths makes KubeRay (upgradeStrategy Recreate)
    recreate the Ray pods: anything in the spec but the worker groups' scaling fields."""
    for path in changed:
        if not path.startswith("spec"):
            continue
        last = path.rsplit(".", 1)[-1]
        if path.startswith("spec.workerGroupSpecs[") and last in _SCALING_FIELDS:
            continue
        return True
    return False


# -- applying ----------------------------------------------------------------------------------


def apply_object(kube: Kube, obj: dict[str, Any]) -> Change:
    """Create ``obj``, or patch the live one where it differs (removing what an earlier apply
    set and ``obj`` no longer does), or leave it."""
    kind = kind_of(obj)
    name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")
    obj = with_last_applied(obj)
    live = kube.get(kind, name, namespace)
    if live is None:
        if kube.create(kind, obj) is not None:
            return Change(obj, "created")
        live = kube.get(kind, name, namespace)  # created meanwhile by someone else
        if live is None:
            raise ClusterError(f"{describe(obj)} exists and does not: try again")
    desired = keep_autoscaler_fields(obj, live) if kind.kind == "RayCluster" else obj
    removed = removals(last_applied(live), comparable(obj))
    changed = differences(comparable(desired), live) + removed_paths(removed)
    record = f"metadata.annotations.{LAST_APPLIED}"
    if len(changed) > 1 and record in changed:  # it differs because something else does
        changed.remove(record)
    if not changed:
        return Change(obj, "unchanged")
    with kube.errors("patch", kind, name, namespace):
        kube.body(kind, desired)  # the client's model check first (built-in kinds)
    kube.patch(kind, name, namespace, with_removals(desired, removed))
    return Change(obj, "configured", changed)


def restart_deployment(kube: Kube, obj: dict[str, Any]) -> Change:
    """Roll a Deployment's pods, as ``kubectl rollout restart`` does."""
    kind = kind_of(obj)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: now}}}}}
    kube.patch(kind, obj["metadata"]["name"], obj["metadata"].get("namespace"), patch)
    return Change(obj, "restarted", ["the Ray pods were recreated"])


def secret_references(obj: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(Secret, key) pairs a Deployment's pods need (optional references left out)."""
    spec = (obj.get("spec") or {}).get("template", {}).get("spec") or {}
    found: list[tuple[str, str | None]] = []
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    found.append((ref["name"], ref.get("key")))
            for source in container.get("envFrom") or []:
                ref = source.get("secretRef")
                if ref and not ref.get("optional"):
                    found.append((ref["name"], None))
    return list(dict.fromkeys(found))


def missing_secrets(kube: Kube, obj: dict[str, Any]) -> list[str]:
    """What a Deployment needs from Secrets that the namespace lacks (nothing if the user may
    not read Secrets: then this cannot be checked)."""
    namespace = obj["metadata"].get("namespace")
    kind = KINDS[("v1", "Secret")]
    problems: list[str] = []
    secrets: dict[str, dict[str, Any] | None] = {}
    for name, key in secret_references(obj):
        if name not in secrets:
            try:
                secrets[name] = kube.get(kind, name, namespace)
            except Forbidden:
                return []
        secret = secrets[name]
        if secret is None:
            problems.append(f"Secret {name} (key {key})" if key else f"Secret {name}")
        elif key and key not in (secret.get("data") or {}) | (secret.get("stringData") or {}):
            problems.append(f"key {key} of Secret {name}")
    return list(dict.fromkeys(problems))


@dataclass
class ApplyResult:
    changes: list[Change]

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


def apply(
    kube: Kube,
    objects: list[dict[str, Any]],
    *,
    say: Callable[[str], None],
    wait: bool = True,
    timeout_s: float = 600.0,
) -> ApplyResult:
    """Apply ``objects`` in order (the Deployments last), then wait for the pods if ``wait``.

    When the RayCluster changes in a way that recreates the Ray pods, the platform loses its
    Ray session: with ``wait``, the Deployments are applied once the new Ray pods are ready,
    and restarted if nothing else changed them.
    """
    kinds = [kind_of(obj) for obj in objects]  # refuses unknown kinds before any write
    if any(k.kind == "RayCluster" for k in kinds):
        kube.require_kuberay()
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    clusters = [o for o in objects if o["kind"] == "RayCluster"]
    changes: list[Change] = []
    recreated = False
    for obj in objects:
        if obj["kind"] == "Deployment":
            continue
        change = apply_object(kube, obj)
        changes.append(change)
        say(change.line())
        if obj["kind"] == "RayCluster" and change.action == "configured":
            recreated = recreated or recreates_ray_pods(change.differences)
    for deployment in deployments:
        for problem in missing_secrets(kube, deployment):
            say(
                f"warning: {problem} not found in namespace "
                f"{deployment['metadata'].get('namespace')}: the {deployment['metadata']['name']} "
                "pods wait for it (docs/deploy.md, Secrets)"
            )
    if recreated and wait:
        say("the Ray pods are recreated with the new spec; waiting for them")
        for cluster in clusters:
            ns = cluster["metadata"].get("namespace")
            progress.wait(
                kube,
                ns,
                progress.raycluster_pending(kube, cluster["metadata"]["name"], ns),
                timeout_s,
                say,
            )
    for deployment in deployments:
        change = apply_object(kube, deployment)
        if change.action == "unchanged" and recreated and wait:
            change = restart_deployment(kube, deployment)
        changes.append(change)
        say(change.line())
    if recreated and not wait:
        say(
            "warning: the Ray pods are being recreated; once they are ready, restart the "
            "platform (its Ray session ends with them): fxray cluster apply again, or "
            "kubectl rollout restart deployment/fxray-platform"
        )
    if wait:
        checks = [
            progress.raycluster_pending(kube, c["metadata"]["name"], c["metadata"].get("namespace"))
            for c in clusters
        ] + [
            progress.deployment_pending(kube, d["metadata"]["name"], d["metadata"].get("namespace"))
            for d in deployments
        ]
        namespaces = {o["metadata"].get("namespace") for o in clusters + deployments}
        if checks and len(namespaces) == 1:
            say("waiting for the pods")
            progress.wait(kube, namespaces.pop(), progress.all_of(*checks), timeout_s, say)
            say("ready")
    return ApplyResult(changes)
