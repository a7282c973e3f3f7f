"""The Kubernetes API through the official client: connecting, one object's create, read,
patch and delete by kind (typed APIs for built-in kinds, CustomObjectsApi for RayClusters),
and API errors turned into :mod:`fxray.cluster.errors` with the server's own message."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from fxray.cluster.errors import ClusterError, Forbidden, Invalid, NoCluster, NoKubeRay

RAY_GROUP = "ray.io"
RAY_VERSION = "v1"
RAY_PLURAL = "rayclusters"
KUBERAY_INSTALL = (
    "install the KubeRay operator 1.7.0 first: helm repo add kuberay "
    "https://ray-project.github.io/kuberay-helm/ && helm install kuberay-operator "
    "kuberay/kuberay-operator --version 1.7.0 (docs/deploy.md)"
)
REQUEST_TIMEOUT = (10, 60)  # seconds to connect, to read


_NO_BODY = object()  # _call: no body argument (None may be one)


@dataclass(frozen=True)
class Kind:
    """How to reach one kind: its typed API and method suffix, or CustomObjectsApi."""

    api_version: str
    kind: str
    plural: str
    api: type | None  # a typed API class; None: CustomObjectsApi
    method: str = ""  # e.g. "namespaced_deployment" or "namespace"
    model: type | None = None  # the client's model, to check a body before sending it

    @property
    def namespaced(self) -> bool:
        return self.method.startswith("namespaced_") or self.api is None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        """``deployments.apps`` (as the server names it in messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "Namespace", "namespaces", client.CoreV1Api, "namespace", client.V1Namespace),
        Kind(
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            client.CoreV1Api,
            "namespaced_service_account",
            client.V1ServiceAccount,
        ),
        Kind(
            "v1",
            "ConfigMap",
            "configmaps",
            client.CoreV1Api,
            "namespaced_config_map",
            client.V1ConfigMap,
        ),
        Kind("v1", "Secret", "secrets", client.CoreV1Api, "namespaced_secret", client.V1Secret),
        Kind("v1", "Service", "services", client.CoreV1Api, "namespaced_service", client.V1Service),
        Kind(
            "apps/v1",
            "Deployment",
            "deployments",
            client.AppsV1Api,
            "namespaced_deployment",
            client.V1Deployment,
        ),
        Kind(
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            client.PolicyV1Api,
            "namespaced_pod_disruption_budget",
            client.V1PodDisruptionBudget,
        ),
        Kind(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            client.NetworkingV1Api,
            "namespaced_network_policy",
            client.V1NetworkPolicy,
        ),
        Kind(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "roles",
            client.RbacAuthorizationV1Api,
            "namespaced_role",
            client.V1Role,
        ),
        Kind(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            client.RbacAuthorizationV1Api,
            "namespaced_role_binding",
            client.V1RoleBinding,
        ),
        Kind(f"{RAY_GROUP}/{RAY_VERSION}", "RayCluster", RAY_PLURAL, None),
    )
}


def kind_of(obj: dict[str, Any]) -> Kind:
    """The :class:`Kind` of a manifest object; :class:`ClusterError` for one fxray cannot apply."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key not in KINDS:
        known = ", ".join(sorted(k for _, k in KINDS))
        raise ClusterError(f"fxray cluster cannot apply {key[1]} ({key[0]}); it knows {known}")
    return KINDS[key]


def describe(obj: dict[str, Any]) -> str:
    """``deployment.apps/fxray-platform``, as kubectl names objects."""
    kind = kind_of(obj)
    singular = kind.kind.lower() + (f".{kind.group}" if kind.group else "")
    return f"{singular}/{obj['metadata']['name']}"


class Kube:
    """One connection to a Kubernetes API server."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.host = api_client.configuration.host

    # -- connecting ---------------------------------------------------------------------------

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """From a kubeconfig (``--kubeconfig``, ``KUBECONFIG``, ``~/.kube/config``), else from
        the pod's service account; :class:`NoCluster` if there is neither."""
        configuration = client.Configuration()
        try:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (ConfigException, OSError) as exc:
            if kubeconfig or context:
                raise NoCluster(f"cannot use the kubeconfig: {exc}") from None
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                raise NoCluster(
                    "no Kubernetes cluster configured: no kubeconfig (--kubeconfig, KUBECONFIG "
                    "or ~/.kube/config) and not running inside a cluster"
                ) from None
        return cls.from_configuration(configuration)

    @classmethod
    def from_configuration(cls, configuration: client.Configuration) -> Kube:
        configuration.retries = 1  # fail fast when nothing listens
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()

    # -- calls ----------------------------------------------------------------------------

    @contextmanager
    def errors(
        self, verb: str, kind: Kind, name: str | None, namespace: str | None
    ) -> Iterator[None]:
        """Turn the client's exceptions for one request into :class:`ClusterError` subclasses."""
        try:
            yield
        except ApiException as exc:
            raise self._api_error(exc, verb, kind, name, namespace) from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise Invalid(f"{kind.kind} {name}: {problems}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise NoCluster(f"cannot reach the Kubernetes API at {self.host}: {reason}") from None

    def _api_error(
        self, exc: ApiException, verb: str, kind: Kind, name: str | None, namespace: str | None
    ) -> ClusterError:
        status = _status(exc)
        message = status.get("message") or exc.reason or f"HTTP {exc.status}"
        where = f" in namespace {namespace}" if namespace else ""
        if exc.status == 401:
            return NoCluster(
                f"the Kubernetes API at {self.host} did not accept the credentials: {message}"
            )
        if exc.status == 403:
            return Forbidden(
                f"no permission to {verb} {kind.resource}{where}: {message} (ask for a Role "
                f"that allows {verb} on {kind.resource})"
            )
        if exc.status == 404 and kind.api is None and not status.get("details", {}).get("name"):
            return NoKubeRay(f"the cluster has no RayCluster API (ray.io/v1): {KUBERAY_INSTALL}")
        if exc.status in (400, 422):  # 400: a strict field validation failure
            return Invalid(f"{kind.kind} {name} is invalid: {message}", exc.status)
        subject = f"{kind.kind} {name}" if name else kind.resource
        return ClusterError(f"{verb} {subject}{where}: {message}", exc.status)

    def _typed(self, kind: Kind, verb: str) -> Callable[..., Any]:
        assert kind.api is not None
        return getattr(kind.api(self.api_client), f"{verb}_{kind.method}")

    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    def body(self, kind: Kind, obj: dict[str, Any]) -> Any:
        """The body to send: for typed APIs the client's model (which refuses unknown fields and
        wrong types, like kubectl --validate=strict), for CustomObjectsApi the dict."""
        return kind.model.model_validate(obj) if kind.model is not None else obj

    def _call(
        self,
        kind: Kind,
        verb: str,
        namespace: str | None,
        name: str | None = None,
        body: Any = _NO_BODY,
        **options: Any,
    ) -> Any:
        """``verb`` (read, create, patch, delete, list) on one kind: CustomObjectsApi for the
        Ray kinds, the kind's typed API for built-ins; the raw response."""
        options = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT, **options}
        named = [name] if name is not None else []
        sent = [body] if body is not _NO_BODY else []
        if kind.api is None:
            custom_verb = "get" if verb == "read" else verb
            method = getattr(self._custom(), f"{custom_verb}_namespaced_custom_object")
            return method(RAY_GROUP, RAY_VERSION, namespace, kind.plural, *named, *sent, **options)
        scoped = [namespace] if kind.namespaced else []
        return self._typed(kind, verb)(*named, *scoped, *sent, **options)

    def get(self, kind: Kind, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The live object, or None if there is none."""
        try:
            with self.errors("get", kind, name, namespace):
                return _json(self._call(kind, "read", namespace, name))
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create ``obj``; None if it exists already (409)."""
        name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")
        try:
            with self.errors("create", kind, name, namespace):
                body = self.body(kind, obj)
                return _json(
                    self._call(kind, "create", namespace, body=body, field_validation="Strict")
                )
        except ClusterError as exc:
            if exc.status == 409:
                return None
            raise

    def patch(
        self,
        kind: Kind,
        name: str,
        namespace: str | None,
        patch: Any,
        content_type: str = "application/merge-patch+json",
    ) -> dict[str, Any]:
        """Patch one object: a merge patch (a dict) or a JSON patch (a list of operations)."""
        with self.errors("patch", kind, name, namespace):
            response = self._call(
                kind,
                "patch",
                namespace,
                name,
                patch,
                field_validation="Strict",
                _content_type=content_type,
            )
            return _json(response)

    def delete(self, kind: Kind, name: str, namespace: str | None) -> bool:
        """Delete one object (its dependents in the background); False if it was not there."""
        try:
            with self.errors("delete", kind, name, namespace):
                self._call(kind, "delete", namespace, name, propagation_policy="Background")
                return True
        except ClusterError as exc:
            if exc.status == 404:
                return False
            raise

    def list(
        self, kind: Kind, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        with self.errors("list", kind, None, namespace):
            response = self._call(kind, "list", namespace, label_selector=label_selector)
            return list(_json(response).get("items") or [])

    def require_kuberay(self) -> None:
        """:class:`NoKubeRay` unless the server serves ``ray.io/v1`` rayclusters."""
        kind = KINDS[(f"{RAY_GROUP}/{RAY_VERSION}", "RayCluster")]
        try:
            with self.errors("discover", kind, None, None):
                resources = _json(
                    self._custom().get_api_resources(
                        RAY_GROUP,
                        RAY_VERSION,
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
        except NoKubeRay:
            raise
        except ClusterError as exc:
            if exc.status == 404:
                raise NoKubeRay(
                    f"the cluster has no RayCluster API (ray.io/v1): {KUBERAY_INSTALL}"
                ) from None
            raise
        names = {r.get("name") for r in resources.get("resources") or []}
        if RAY_PLURAL not in names:
            raise NoKubeRay(f"the cluster serves ray.io/v1 but no rayclusters: {KUBERAY_INSTALL}")

    # -- pods -----------------------------------------------------------------------------

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self.list(POD, namespace, label_selector)

    def watch_pods(
        self, namespace: str, label_selector: str, timeout_s: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, pod) as the server reports them, for up to ``timeout_s`` seconds."""
        from kubernetes import watch

        core = client.CoreV1Api(self.api_client)
        watcher = watch.Watch()
        with self.errors("watch", POD, None, namespace):
            try:
                for event in watcher.stream(
                    core.list_namespaced_pod,
                    namespace,
                    label_selector=label_selector,
                    timeout_seconds=max(1, timeout_s),
                    _request_timeout=(REQUEST_TIMEOUT[0], timeout_s + 10),
                    deserialize=False,  # plain dicts: no model check of what the server sent
                ):
                    pod = event.get("object") if isinstance(event, dict) else None
                    if event.get("type") == "ERROR":
                        message = (pod or {}).get("message", "the watch failed")
                        raise ClusterError(f"watching pods in namespace {namespace}: {message}")
                    if isinstance(pod, dict):
                        yield str(event.get("type")), pod
            finally:
                watcher.stop()


POD = Kind("v1", "Pod", "pods", client.CoreV1Api, "namespaced_pod", client.V1Pod)


def _json(response: Any) -> dict[str, Any]:
    data = response.data if hasattr(response, "data") else response
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data) if data else {}


def _status(exc: ApiException) -> dict[str, Any]:
    """The Status object the server sent with an error (empty if it sent none)."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {"message": str(exc.body).strip()[:500]} if exc.body else {}
    return body if isinstance(body, dict) else {}
