"""A fake Kubernetes API server on loopback: a TEST DOUBLE, not a Kubernetes.

It answers the requests ``fxray cluster`` sends the way a real kube-apiserver does (status
codes, ``Status`` objects with reasons and details, ``List`` objects, chunked watch streams),
for the kinds fxray's manifests hold and for pods: 201 with the stored object on create, 409
AlreadyExists, 404 NotFound (and the bare 404 of a path no API serves, such as ``ray.io`` without
the KubeRay CRDs), 422 Invalid (RayClusters are checked against the KubeRay v1.7.0 CRD schema,
built-in kinds with kubernetes-validate), 403 Forbidden for denied verbs, 401 without the
bearer token, merge-patch and json-patch, deletes, label selectors, and the schema's defaults
on custom resources.

A small controller stands in for the KubeRay operator, the Deployment controller and the
kubelet: it makes the pods a RayCluster or Deployment asks for, moves them from Pending through
Running to Ready, recreates a RayCluster's pods when its spec changes (upgradeStrategy
Recreate), rolls a Deployment when its pod template changes, and writes status. It is as
simple as the tests need: no scheduling, no real containers, no finalizers.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

from tests.kuberay_schemas import (
    KUBERNETES_VERSION,
    apply_defaults,
    raycluster_errors,
    raycluster_schema,
)

TOKEN = "fake-token"
USER = "tester"

# (group, version, plural) -> (Kind, namespaced)
RESOURCES: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "serviceaccounts"): ("ServiceAccount", True),
    ("", "v1", "configmaps"): ("ConfigMap", True),
    ("", "v1", "secrets"): ("Secret", True),
    ("", "v1", "services"): ("Service", True),
    ("", "v1", "pods"): ("Pod", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("policy", "v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
    ("rbac.authorization.k8s.io", "v1", "roles"): ("Role", True),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): ("RoleBinding", True),
    ("ray.io", "v1", "rayclusters"): ("RayCluster", True),
}
RAY = ("ray.io", "v1", "rayclusters")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


def _resource_name(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        status_object(
            404,
            "NotFound",
            f'{_resource_name(group, plural)} "{name}" not found',
            {"name": name, "group": group, "kind": plural}
            if group
            else {"name": name, "kind": plural},
        )
    )


PAGE_NOT_FOUND = status_object(404, "NotFound", "the server could not find the requested resource")


# -- patches (an implementation of their own, so fxray's is not tested with itself) ---------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _walk(doc: Any, pointer: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def json_patch(doc: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902; raises ValueError (the server answers 422) when an operation fails."""
    doc = copy.deepcopy(doc)
    for op in operations:
        try:
            parent, key = _walk(doc, op["path"])
            if op["op"] == "test":
                actual = parent[int(key)] if isinstance(parent, list) else parent[key]
                if actual != op["value"]:
                    raise ValueError(f"the test of {op['path']} failed")
            elif op["op"] in ("replace", "add"):
                if isinstance(parent, list):
                    index = len(parent) if key == "-" else int(key)
                    if op["op"] == "replace":
                        parent[index] = op["value"]
                    else:
                        parent.insert(index, op["value"])
                else:
                    if op["op"] == "replace" and key not in parent:
                        raise ValueError(f"replace of a missing {op['path']}")
                    parent[key] = op["value"]
            elif op["op"] == "remove":
                del parent[int(key) if isinstance(parent, list) else key]
            else:
                raise ValueError(f"unsupported op {op['op']}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"cannot apply {op.get('op')} {op.get('path')}: {exc}") from None
    return doc


# -- the store ----------------------------------------------------------------------------------


def _selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class FakeKube:
    """The fake API server and its controller; ``url`` once started."""

    def __init__(self, *, kuberay: bool = True, pod_delay_s: float = 0.15) -> None:
        self.kuberay = kuberay
        self.pod_delay_s = pod_delay_s
        self.objects: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, path (no query), content type
        self.deny: set[tuple[str, str]] = set()  # (verb, plural) answered with 403
        # (plural, name): the next GET answers 404 although the object exists, as if another
        # client created it just after this one looked (a create then meets 409)
        self.created_meanwhile: set[tuple[str, str]] = set()
        self.answers: list[tuple[str, str, int]] = []  # method, path, status code
        self.timeline: list[tuple[float, str]] = []  # (time, what) of controller milestones
        self.lock = threading.RLock()
        self._version = itertools.count(1)
        self._watchers: list[tuple[str, str | None, queue.Queue[Any]]] = []
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._pod_started: dict[str, float] = {}
        self._recreate_hash: dict[str, str] = {}
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeKube:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        for target in (self._server.serve_forever, self._control_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def kubeconfig(self, path: Any, token: str = TOKEN) -> Any:
        """Write a kubeconfig for this server to ``path``; returns the path."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": USER, "user": {"token": token}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": USER}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # -- objects ----------------------------------------------------------------------------

    def key(self, group: str, version: str, plural: str, namespace: str, name: str):
        return (group, version, plural, namespace, name)

    def get(self, plural: str, name: str, namespace: str = "", group: str | None = None):
        """A stored object (a copy), or None: for tests."""
        with self.lock:
            for (g, _v, p, ns, n), obj in self.objects.items():
                if p == plural and n == name and ns == namespace and group in (None, g):
                    return copy.deepcopy(obj)
        return None

    def all(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(obj)
                for (_g, _v, p, ns, _n), obj in self.objects.items()
                if p == plural and namespace in (None, ns)
            ]

    def writes(self) -> list[tuple[str, str, str]]:
        """The requests that could change something (not GET)."""
        with self.lock:
            return [r for r in self.requests if r[0] != "GET"]

    def put_object(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> None:
        """Store an object directly (e.g. a Secret the user made), as a create would."""
        with self.lock:
            self._store_new(
                group, version, plural, obj.get("metadata", {}).get("namespace", ""), obj
            )

    def _store_new(self, group, version, plural, namespace, obj) -> dict[str, Any]:
        kind, namespaced = RESOURCES[(group, version, plural)]
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = f"{group}/{version}" if group else version
        obj["kind"] = kind
        metadata = obj.setdefault("metadata", {})
        if namespaced:
            metadata["namespace"] = namespace
        metadata.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._version)),
            creationTimestamp=now(),
            generation=1,
        )
        self._defaults(kind, obj)
        self.objects[self.key(group, version, plural, namespace, metadata["name"])] = obj
        self._notify(plural, "ADDED", obj)
        return obj

    def _defaults(self, kind: str, obj: dict[str, Any]) -> None:
        """Some of the defaults a real server fills in (so the client must not compare them)."""
        if kind == "RayCluster":
            apply_defaults(obj, raycluster_schema())
        elif kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("clusterIP", "10.96.0.10")
            spec.setdefault("sessionAffinity", "None")
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        elif kind == "Deployment":
            spec = obj.setdefault("spec", {})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            pod = spec.get("template", {}).get("spec", {})
            pod.setdefault("restartPolicy", "Always")
            pod.setdefault("dnsPolicy", "ClusterFirst")
            for container in pod.get("containers") or []:
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                for port in container.get("ports") or []:
                    port.setdefault("protocol", "TCP")
        elif kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})

    def _replace(self, key, obj: dict[str, Any], *, spec_changed: bool) -> dict[str, Any]:
        metadata = obj["metadata"]
        metadata["resourceVersion"] = str(next(self._version))
        if spec_changed:
            metadata["generation"] = metadata.get("generation", 1) + 1
        self.objects[key] = obj
        self._notify(key[2], "MODIFIED", obj)
        return obj

    def _delete(self, key) -> dict[str, Any] | None:
        obj = self.objects.pop(key, None)
        if obj is not None:
            self._notify(key[2], "DELETED", obj)
        return obj

    def _notify(self, plural: str, event: str, obj: dict[str, Any]) -> None:
        for watched, selector, events in list(self._watchers):
            labels = obj.get("metadata", {}).get("labels") or {}
            namespace = obj.get("metadata", {}).get("namespace", "")
            if watched == f"{plural}/{namespace}" and _selector_matches(selector, labels):
                events.put({"type": event, "object": copy.deepcopy(obj)})

    # -- validation -------------------------------------------------------------------------

    def _validate(self, kind: str, group: str, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        if kind == "RayCluster":
            problems = raycluster_errors(obj)
        elif kind == "Pod":
            problems = []
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                problems = []
            except kubernetes_validate.ValidationError as exc:
                field = ".".join(str(p) for p in exc.path) or "."
                problems = [f"{field}: {exc.message}"]
        if problems:
            full_kind = f"{kind}.{group}" if group else kind
            raise ApiError(
                status_object(
                    422,
                    "Invalid",
                    f'{full_kind} "{name}" is invalid: {"; ".join(problems)}',
                    {
                        "name": name,
                        "group": group,
                        "kind": kind,
                        "causes": [
                            {"reason": "FieldValueInvalid", "message": p, "field": p.split(":")[0]}
                            for p in problems
                        ],
                    },
                )
            )

    def _authorize(self, verb: str, group: str, plural: str, namespace: str, name: str) -> None:
        if (verb, plural) in self.deny:
            what = (
                f'{_resource_name(group, plural)} "{name}"'
                if name
                else _resource_name(group, plural)
            )
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise ApiError(
                status_object(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{USER}" cannot {verb} resource "{plural}" in API '
                    f'group "{group}"{where}',
                    {"name": name, "group": group, "kind": plural},
                )
            )

    # -- the API ----------------------------------------------------------------------------

    def route(self, path: str) -> tuple[tuple[str, str, str], str, str, str] | None:
        """(group, version, plural), namespace, name, subresource of a resource path."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        elif len(rest) == 2 and rest[0] == "namespaces":
            return (group, version, "namespaces"), "", rest[1], ""
        if not rest:
            return None
        plural, name = rest[0], rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        resource = (group, version, plural)
        if resource not in RESOURCES or (resource == RAY and not self.kuberay):
            return None
        return resource, namespace, name, subresource

    def discovery(self, path: str) -> dict[str, Any] | None:
        if path.rstrip("/") == "/apis/ray.io/v1" and self.kuberay:
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "ray.io/v1",
                "resources": [
                    {
                        "name": "rayclusters",
                        "singularName": "raycluster",
                        "namespaced": True,
                        "kind": "RayCluster",
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    },
                    {
                        "name": "rayclusters/status",
                        "namespaced": True,
                        "kind": "RayCluster",
                        "verbs": ["get", "patch", "update"],
                    },
                ],
            }
        return None

    def create(self, resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        group, version, plural = resource
        kind, namespaced = RESOURCES[resource]
        name = body.get("metadata", {}).get("name", "")
        self._authorize("create", group, plural, namespace, name)
        with self.lock:
            if namespaced and self.key("", "v1", "namespaces", "", namespace) not in self.objects:
                raise not_found("", "namespaces", namespace)
            if self.key(group, version, plural, namespace, name) in self.objects:
                raise ApiError(
                    status_object(
                        409,
                        "AlreadyExists",
                        f'{_resource_name(group, plural)} "{name}" already exists',
                        {"name": name, "group": group, "kind": plural},
                    )
                )
            self._validate(kind, group, body)
            return copy.deepcopy(self._store_new(group, version, plural, namespace, body))

    def read(self, resource, namespace: str, name: str) -> dict[str, Any]:
        group, version, plural = resource
        self._authorize("get", group, plural, namespace, name)
        with self.lock:
            if (plural, name) in self.created_meanwhile:
                self.created_meanwhile.discard((plural, name))
                raise not_found(group, plural, name)
            obj = self.objects.get(self.key(group, version, plural, namespace, name))
            if obj is None:
                raise not_found(group, plural, name)
            return copy.deepcopy(obj)

    def list(self, resource, namespace: str, selector: str | None) -> dict[str, Any]:
        group, version, plural = resource
        kind, _ = RESOURCES[resource]
        self._authorize("list", group, plural, namespace, "")
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (g, v, p, ns, _n), obj in self.objects.items()
                if (g, v, p) == resource
                and ns == namespace
                and _selector_matches(selector, obj["metadata"].get("labels") or {})
            ]
            return {
                "kind": f"{kind}List",
                "apiVersion": f"{group}/{version}" if group else version,
                "metadata": {"resourceVersion": str(next(self._version))},
                "items": items,
            }

    def patch(self, resource, namespace: str, name: str, content_type: str, body: Any):
        group, version, plural = resource
        kind, _ = RESOURCES[resource]
        self._authorize("patch", group, plural, namespace, name)
        with self.lock:
            key = self.key(group, version, plural, namespace, name)
            live = self.objects.get(key)
            if live is None:
                raise not_found(group, plural, name)
            if content_type.startswith("application/merge-patch+json"):
                patched = merge_patch(live, body)
            elif content_type.startswith("application/json-patch+json"):
                try:
                    patched = json_patch(live, body)
                except ValueError as exc:
                    raise ApiError(status_object(422, "Invalid", str(exc))) from None
            elif content_type.startswith("application/strategic-merge-patch+json") and group in (
                "",
                "apps",
                "policy",
                "networking.k8s.io",
                "rbac.authorization.k8s.io",
            ):
                patched = merge_patch(live, body)  # close enough for the fields tests patch
            else:
                raise ApiError(
                    status_object(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an "
                        "unknown format - accepted media types include: "
                        "application/json-patch+json, application/merge-patch+json",
                    )
                )
            for immutable in ("name", "namespace", "uid", "creationTimestamp"):
                if live["metadata"].get(immutable) != patched["metadata"].get(immutable):
                    patched["metadata"][immutable] = live["metadata"].get(immutable)
            check = {k: v for k, v in patched.items() if k != "status"}
            self._validate(kind, group, check)
            self._defaults(kind, patched)
            spec_changed = patched.get("spec") != live.get("spec")
            return copy.deepcopy(self._replace(key, patched, spec_changed=spec_changed))

    def delete(self, resource, namespace: str, name: str) -> dict[str, Any]:
        group, version, plural = resource
        self._authorize("delete", group, plural, namespace, name)
        with self.lock:
            key = self.key(group, version, plural, namespace, name)
            obj = self._delete(key)
            if obj is None:
                raise not_found(group, plural, name)
            if plural == "namespaces":
                for other in [k for k in self.objects if k[3] == name]:
                    self._delete(other)
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": group,
                    "kind": plural,
                    "uid": obj["metadata"]["uid"],
                },
            }

    def watch(
        self, resource, namespace: str, selector: str | None, timeout_s: float
    ) -> Iterator[dict]:
        """The events of a watch: ADDED for what exists, then changes, until ``timeout_s``."""
        events: queue.Queue[Any] = queue.Queue()
        plural = resource[2]
        with self.lock:
            for item in self.list(resource, namespace, selector)["items"]:
                events.put({"type": "ADDED", "object": item})
            registration = (f"{plural}/{namespace}", selector, events)
            self._watchers.append(registration)
        deadline = time.monotonic() + timeout_s
        try:
            while not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    yield events.get(timeout=min(remaining, 0.2))
                except queue.Empty:
                    continue
        finally:
            with self.lock:
                self._watchers.remove(registration)

    # -- the controller (KubeRay, the Deployment controller, the kubelet) ---------------------

    def _control_loop(self) -> None:
        while not self._stop.wait(0.05):
            with self.lock:
                self._reconcile()

    def _pods_of(self, namespace: str, owner_uid: str) -> list[tuple[tuple, dict[str, Any]]]:
        return [
            (k, o)
            for k, o in self.objects.items()
            if k[2] == "pods"
            and k[3] == namespace
            and any(r.get("uid") == owner_uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _new_pod(self, owner: dict[str, Any], name: str, template: dict[str, Any], labels: dict):
        metadata = owner["metadata"]
        pod = {
            "metadata": {
                "name": name,
                "labels": {**(template.get("metadata", {}).get("labels") or {}), **labels},
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": metadata["name"],
                        "uid": metadata["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Pending"},
        }
        pod["spec"]["nodeName"] = "node-1"
        self._store_new("", "v1", "pods", metadata["namespace"], pod)
        self._pod_started[name] = time.monotonic()

    def _advance_pod(self, key, pod: dict[str, Any]) -> None:
        """Pending -> Running (not ready) -> Ready, ``pod_delay_s`` apart; deleting pods go."""
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp"):
            if time.monotonic() - self._pod_started.get(name, 0) > self.pod_delay_s:
                self._delete(key)
            return
        age = time.monotonic() - self._pod_started.get(name, time.monotonic())
        containers = pod["spec"].get("containers") or []
        status = pod["status"]
        if status.get("phase") == "Pending" and age > self.pod_delay_s:
            status.update(phase="Running", podIP="10.0.0.9", startTime=now())
            status["containerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now()}},
                }
                for c in containers
            ]
            self._replace(key, pod, spec_changed=False)
        elif (
            status.get("phase") == "Running"
            and age > 2 * self.pod_delay_s
            and not all(c["ready"] for c in status["containerStatuses"])
        ):
            for container in status["containerStatuses"]:
                container["ready"] = True
            status["conditions"] = [{"type": "Ready", "status": "True"}]
            self._replace(key, pod, spec_changed=False)
            self.timeline.append((time.monotonic(), f"ready {name}"))

    def _end_pod(self, key, pod: dict[str, Any]) -> None:
        if not pod["metadata"].get("deletionTimestamp"):
            pod["metadata"]["deletionTimestamp"] = now()
            self._pod_started[pod["metadata"]["name"]] = time.monotonic()
            self._replace(key, pod, spec_changed=False)

    @staticmethod
    def _ready(pod: dict[str, Any]) -> bool:
        statuses = pod["status"].get("containerStatuses") or []
        return (
            bool(statuses)
            and all(c["ready"] for c in statuses)
            and not pod["metadata"].get("deletionTimestamp")
        )

    def _reconcile(self) -> None:
        for key, pod in [(k, o) for k, o in self.objects.items() if k[2] == "pods"]:
            owners = pod["metadata"].get("ownerReferences") or []
            if owners and not any(
                o["metadata"]["uid"] == owners[0]["uid"] for o in self.objects.values()
            ):
                self._end_pod(key, pod)  # garbage collection of an owner's pods
            self._advance_pod(key, self.objects.get(key, pod))
        for key, cluster in [(k, o) for k, o in self.objects.items() if k[2] == "rayclusters"]:
            self._reconcile_raycluster(key, cluster)
        for key, deployment in [(k, o) for k, o in self.objects.items() if k[2] == "deployments"]:
            self._reconcile_deployment(key, deployment)

    def _reconcile_raycluster(self, key, cluster: dict[str, Any]) -> None:
        metadata, spec = cluster["metadata"], cluster["spec"]
        name, namespace = metadata["name"], metadata["namespace"]
        pods = self._pods_of(namespace, metadata["uid"])
        template_spec = copy.deepcopy(spec)
        for group in template_spec.get("workerGroupSpecs") or []:
            for scaling in ("replicas", "minReplicas", "maxReplicas", "scaleStrategy"):
                group.pop(scaling, None)
        template_spec.pop("upgradeStrategy", None)
        spec_hash = hashlib.sha256(json.dumps(template_spec, sort_keys=True).encode()).hexdigest()
        recreate = (spec.get("upgradeStrategy") or {}).get("type") == "Recreate"
        if self._recreate_hash.get(metadata["uid"]) not in (None, spec_hash) and recreate:
            for pod_key, pod in pods:
                self._end_pod(pod_key, pod)
            self.timeline.append((time.monotonic(), f"recreate {name}"))
        self._recreate_hash[metadata["uid"]] = spec_hash
        live = [(k, p) for k, p in pods if not p["metadata"].get("deletionTimestamp")]
        base = {"ray.io/cluster": name, "app.kubernetes.io/created-by": "kuberay-operator"}
        heads = [p for _, p in live if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        if not heads:
            self._new_pod(
                cluster,
                f"{name}-head-{uuid.uuid4().hex[:5]}",
                spec["headGroupSpec"]["template"],
                {**base, "ray.io/node-type": "head", "ray.io/group": "headgroup"},
            )
        desired_workers = ready_workers = 0
        for group in spec.get("workerGroupSpecs") or []:
            wanted = min(
                max(group.get("replicas", 0), group.get("minReplicas", 0)),
                group.get("maxReplicas", 0),
            )
            desired_workers += wanted
            members = [
                (k, p)
                for k, p in live
                if p["metadata"]["labels"].get("ray.io/group") == group["groupName"]
            ]
            for _ in range(wanted - len(members)):
                self._new_pod(
                    cluster,
                    f"{name}-{group['groupName']}-worker-{uuid.uuid4().hex[:5]}",
                    group["template"],
                    {**base, "ray.io/node-type": "worker", "ray.io/group": group["groupName"]},
                )
            for pod_key, pod in members[wanted:]:
                self._end_pod(pod_key, pod)
            ready_workers += sum(1 for _, p in members[:wanted] if self._ready(p))
        head_ready = any(self._ready(p) for p in heads)
        state = "ready" if head_ready and ready_workers >= desired_workers else ""
        status = {
            "state": state,
            "desiredWorkerReplicas": desired_workers,
            "readyWorkerReplicas": ready_workers,
            "availableWorkerReplicas": ready_workers,
            "observedGeneration": metadata.get("generation", 1),
            "head": {"serviceName": f"{name}-head-svc", "podName": heads[0]["metadata"]["name"]}
            if heads
            else {},
            "conditions": [
                {"type": "HeadPodReady", "status": "True" if head_ready else "False"},
                {"type": "RayClusterProvisioned", "status": "True" if state else "False"},
            ],
        }
        if cluster.get("status") != status:
            if state and (cluster.get("status") or {}).get("state") != "ready":
                self.timeline.append((time.monotonic(), f"cluster ready {name}"))
            cluster["status"] = status
            self._replace(key, cluster, spec_changed=False)

    def _reconcile_deployment(self, key, deployment: dict[str, Any]) -> None:
        metadata, spec = deployment["metadata"], deployment["spec"]
        namespace = metadata["namespace"]
        template = spec["template"]
        revision = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:8]
        pods = [
            (k, p)
            for k, p in self._pods_of(namespace, metadata["uid"])
            if not p["metadata"].get("deletionTimestamp")
        ]
        current = [
            (k, p) for k, p in pods if p["metadata"]["labels"].get("pod-template-hash") == revision
        ]
        old = [
            (k, p) for k, p in pods if p["metadata"]["labels"].get("pod-template-hash") != revision
        ]
        wanted = spec.get("replicas", 1)
        for _ in range(wanted - len(current)):
            self._new_pod(
                deployment,
                f"{metadata['name']}-{revision}-{uuid.uuid4().hex[:5]}",
                template,
                {"pod-template-hash": revision},
            )
            self.timeline.append((time.monotonic(), f"new pod of {metadata['name']}"))
        ready = sum(1 for _, p in current if self._ready(p))
        if ready >= wanted:
            for pod_key, pod in old:
                self._end_pod(pod_key, pod)
        status = {
            "observedGeneration": metadata.get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(current),
            "readyReplicas": ready + sum(1 for _, p in old if self._ready(p)),
            "availableReplicas": ready + sum(1 for _, p in old if self._ready(p)),
        }
        if deployment.get("status") != status:
            deployment["status"] = status
            self._replace(key, deployment, spec_changed=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeKube

    def log_message(self, *_args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        with self.server_fake.lock:
            self.server_fake.answers.append((self.command, urlsplit(self.path).path, code))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _handle(self, method: str) -> None:
        fake = self.server_fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        content_type = self.headers.get("Content-Type", "")
        body = self._body() if method in ("POST", "PATCH", "PUT") else None
        with fake.lock:
            fake.requests.append((method, url.path, content_type))
            if method != "GET":
                fake.timeline.append((time.monotonic(), f"{method} {url.path}"))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, status_object(401, "Unauthorized", "Unauthorized"))
            return
        try:
            found = fake.discovery(url.path) if method == "GET" else None
            if found is not None:
                self._send(200, found)
                return
            route = fake.route(url.path)
            if route is None:
                self._send(404, PAGE_NOT_FOUND)
                return
            resource, namespace, name, _subresource = route
            if method == "GET" and not name:
                if query.get("watch") in ("true", "1"):
                    self._stream(resource, namespace, query)
                    return
                self._send(200, fake.list(resource, namespace, query.get("labelSelector")))
            elif method == "GET":
                self._send(200, fake.read(resource, namespace, name))
            elif method == "POST" and not name:
                self._send(201, fake.create(resource, namespace, body or {}))
            elif method == "PATCH" and name:
                self._send(200, fake.patch(resource, namespace, name, content_type, body))
            elif method == "DELETE" and name:
                self._send(200, fake.delete(resource, namespace, name))
            else:
                self._send(405, status_object(405, "MethodNotAllowed", f"{method} not allowed"))
        except ApiError as exc:
            self._send(exc.body["code"], exc.body)

    def _stream(self, resource, namespace: str, query: dict[str, str]) -> None:
        timeout = float(query.get("timeoutSeconds") or 30)
        self.server_fake._authorize("watch", resource[0], resource[2], namespace, "")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.server_fake.watch(
                resource, namespace, query.get("labelSelector"), timeout
            ):
                line = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")
