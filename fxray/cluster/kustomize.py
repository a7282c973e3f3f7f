"""A small kustomize in Python: what ``kubectl kustomize`` does with fxray's manifests.

It covers the part of kustomize that ``deploy/kuberay`` uses: ``resources`` (files and
directories), ``components``, ``namespace``, ``labels`` (metadata only), ``images``,
``patches`` (JSON 6902, inline or from a file, chosen by ``target``) and
``configMapGenerator`` (``literals`` and ``envs``; behaviours create, merge and replace; the
content-hash name suffix and the references to it from pod specs). Anything else is refused
with a message naming the field, so it never renders differently from kustomize unnoticed.
The tests render every overlay both ways and compare (when kubectl is installed).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fxray.cluster.errors import RenderError

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "images",
    "patches",
    "configMapGenerator",
}
_GENERATOR_FIELDS = {"name", "behavior", "literals", "envs"}
_IMAGE_FIELDS = {"name", "newName", "newTag", "digest"}
_TARGET_FIELDS = {"group", "version", "kind", "name", "namespace"}

# kustomize's "legacy" output order: these kinds first (in this order), then every other
# kind, then the webhook configurations; ties by group/version/kind, then namespace and name.
_ORDER_FIRST = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
]
_ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "IngressClass",
        "RuntimeClass",
    }
)

# where pod specs sit in the workload kinds whose ConfigMap references kustomize rewrites
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass
class _Resource:
    obj: dict[str, Any]
    generated: bool = False  # a generated ConfigMap: gets the content-hash suffix at the end
    origin: str = ""

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace", "") or "")


def build(directory: str | Path) -> list[dict[str, Any]]:
    """The objects the kustomization in ``directory`` renders to, in kustomize's order."""
    root = Path(directory)
    resources = _accumulate(root, "Kustomization", [], seen=())
    _add_hash_suffixes(resources)
    return [r.obj for r in sorted(resources, key=_sort_key)]


def kustomize_hash(data: dict[str, Any]) -> str:
    """kustomize's name suffix for a generated ConfigMap with ``data``.

    The sha256 of Go's JSON of ``{"data", "kind", "name"}`` (kustomize hashes an empty name),
    its first ten hex digits with 0, 1, 3, a, e changed to g, h, k, m, t.
    """
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoding/json escapes these three for HTML safety
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


# -- accumulation ------------------------------------------------------------------------------


def _load_kustomization(directory: Path) -> tuple[Path, dict[str, Any]]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            break
    else:
        raise RenderError(f"{directory} has no kustomization.yaml")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RenderError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise RenderError(f"{path} must hold a mapping")
    unknown = sorted(set(content) - _FIELDS)
    if unknown:
        raise RenderError(
            f"{path}: {', '.join(unknown)} not supported by fxray's own renderer "
            "(install kubectl, or use --renderer kubectl)"
        )
    return path, content


def _accumulate(
    directory: Path, expected_kind: str, inherited: list[_Resource], seen: tuple[Path, ...]
) -> list[_Resource]:
    directory = directory.resolve()
    if directory in seen:
        raise RenderError(f"{directory} includes itself (through {seen[-1]})")
    seen = (*seen, directory)
    path, k = _load_kustomization(directory)
    kind = k.get("kind", "Kustomization")
    if kind != expected_kind:
        raise RenderError(f"{path} is a {kind}, but is used as a {expected_kind}")
    resources = list(inherited)
    for entry in _strings(k, "resources", path):
        target = directory / entry
        if "://" in entry or entry.startswith("github.com/"):
            raise RenderError(f"{path}: remote resource {entry} not supported by fxray's renderer")
        if target.is_dir():
            resources.extend(_accumulate(target, "Kustomization", [], seen))
        elif target.is_file():
            resources.extend(_load_objects(target))
        else:
            raise RenderError(f"{path}: resource {entry} does not exist")
    for entry in _strings(k, "components", path):
        resources = _accumulate(directory / entry, "Component", resources, seen)
    for generator in _list(k, "configMapGenerator", path):
        _generate_config_map(resources, generator, directory, path)
    for patch in _list(k, "patches", path):
        _apply_patch(resources, patch, directory, path)
    if "namespace" in k:
        _set_namespace(resources, str(k["namespace"]), path)
    for entry in _list(k, "labels", path):
        _add_labels(resources, entry, path)
    for image in _list(k, "images", path):
        _set_images(resources, image, path)
    return resources


def _strings(k: dict[str, Any], key: str, path: Path) -> list[str]:
    values = k.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RenderError(f"{path}: {key} must be a list of strings")
    return values


def _list(k: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    values = k.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise RenderError(f"{path}: {key} must be a list of mappings")
    return values


def _load_objects(path: Path) -> list[_Resource]:
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise RenderError(f"{path} is not valid YAML: {exc}") from None
    loaded = []
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise RenderError(f"{path}: document {index + 1} is not a Kubernetes object")
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise RenderError(f"{path}: document {index + 1} ({doc['kind']}) has no name")
        loaded.append(_Resource(doc, origin=str(path)))
    return loaded


# -- generators ----------------------------------------------------------------------------


def _generate_config_map(
    resources: list[_Resource], spec: dict[str, Any], directory: Path, path: Path
) -> None:
    unknown = sorted(set(spec) - _GENERATOR_FIELDS)
    if unknown:
        raise RenderError(f"{path}: configMapGenerator {', '.join(unknown)} not supported")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise RenderError(f"{path}: a configMapGenerator entry needs a name")
    data: dict[str, str] = {}
    for env_file in _strings(spec, "envs", path):
        data.update(_read_env_file(directory / env_file))
    for literal in _strings(spec, "literals", path):
        key, sep, value = literal.partition("=")
        if not sep:
            raise RenderError(f"{path}: literal {literal!r} is not KEY=VALUE")
        data[_check_key(key, path)] = _unquote(value)
    behavior = spec.get("behavior", "create")
    existing = [r for r in resources if r.kind == "ConfigMap" and r.name == name]
    if behavior == "create":
        if existing:
            raise RenderError(f"{path}: ConfigMap {name} exists already (use behavior: merge)")
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        resources.append(_Resource(obj, generated=True, origin=str(path)))
    elif behavior in ("merge", "replace"):
        if len(existing) != 1:
            raise RenderError(f"{path}: no ConfigMap {name} to {behavior} with")
        target = existing[0].obj
        target["data"] = {**target.get("data", {}), **data} if behavior == "merge" else data
    else:
        raise RenderError(f"{path}: unknown behavior {behavior!r} (create, merge or replace)")


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RenderError(f"cannot read {path}: {exc.strerror or exc}") from None
    data = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise RenderError(f"{path}:{number}: {key!r} has no value (KEY=VALUE)")
        data[_check_key(key, path)] = value
    return data


def _check_key(key: str, path: Path) -> str:
    if not _ENV_NAME.match(key):
        raise RenderError(f"{path}: {key!r} is not a valid ConfigMap key")
    return key


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


# -- transformers ----------------------------------------------------------------------------


def _group_version(obj: dict[str, Any]) -> tuple[str, str]:
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    return group, version


def _selected(resource: _Resource, target: dict[str, Any]) -> bool:
    group, version = _group_version(resource.obj)
    actual = {
        "group": group,
        "version": version,
        "kind": resource.kind,
        "name": resource.name,
        "namespace": resource.namespace,
    }
    return all(re.fullmatch(str(target[k]), actual[k]) for k in target)


def _apply_patch(
    resources: list[_Resource], spec: dict[str, Any], directory: Path, path: Path
) -> None:
    unknown = sorted(set(spec) - {"patch", "path", "target", "options"})
    if unknown or spec.get("options"):
        raise RenderError(f"{path}: patch field(s) {', '.join(unknown) or 'options'} not supported")
    target = spec.get("target")
    if not isinstance(target, dict) or not target:
        raise RenderError(
            f"{path}: fxray's renderer needs a target on every patch (JSON 6902 patches only)"
        )
    bad = sorted(set(target) - _TARGET_FIELDS)
    if bad:
        raise RenderError(f"{path}: patch target by {', '.join(bad)} not supported")
    if "patch" in spec:
        text, where = str(spec["patch"]), f"{path} (inline patch)"
    elif "path" in spec:
        patch_file = directory / str(spec["path"])
        try:
            text, where = patch_file.read_text(encoding="utf-8"), str(patch_file)
        except OSError as exc:
            raise RenderError(f"cannot read patch {patch_file}: {exc.strerror or exc}") from None
    else:
        raise RenderError(f"{path}: a patch needs patch or path")
    try:
        operations = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(operations, list):
        raise RenderError(
            f"{where}: only JSON 6902 patches (a list of operations) are supported by "
            "fxray's renderer; strategic merge patches need kubectl"
        )
    chosen = [r for r in resources if _selected(r, target)]
    if not chosen:
        raise RenderError(f"{where}: the target {target} matches no resource")
    for resource in chosen:
        try:
            resource.obj = apply_json_patch(resource.obj, operations)
        except RenderError as exc:
            raise RenderError(f"{where} on {resource.kind} {resource.name}: {exc}") from None


def _set_namespace(resources: list[_Resource], namespace: str, path: Path) -> None:
    for resource in resources:
        if resource.kind in ("RoleBinding", "ClusterRoleBinding"):
            raise RenderError(
                f"{path}: namespace with a {resource.kind} ({resource.name}) is not supported "
                "by fxray's renderer (kustomize rewrites its subjects); use kubectl"
            )
        if resource.kind not in CLUSTER_SCOPED_KINDS:
            resource.obj.setdefault("metadata", {})["namespace"] = namespace


def _add_labels(resources: list[_Resource], entry: dict[str, Any], path: Path) -> None:
    if entry.get("includeSelectors") or entry.get("includeTemplates"):
        raise RenderError(
            f"{path}: labels with includeSelectors/includeTemplates not supported by fxray's "
            "renderer; use kubectl"
        )
    unknown = sorted(set(entry) - {"pairs", "includeSelectors", "includeTemplates"})
    if unknown:
        raise RenderError(f"{path}: labels field(s) {', '.join(unknown)} not supported")
    pairs = entry.get("pairs") or {}
    for resource in resources:
        labels = resource.obj.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({str(k): str(v) for k, v in pairs.items()})


def split_image(image: str) -> tuple[str, str, str]:
    """``registry/name:tag@digest`` -> (``registry/name``, tag, digest), as kustomize splits."""
    slash = image.find("/")
    offset = slash if slash > 0 else 0
    search = image[offset:]
    at, colon = search.find("@"), search.find(":")
    if at < 0 and colon < 0:
        return image, "", ""
    if at >= 0 and (colon < 0 or at < colon):
        return image[: offset + at], "", image[offset + at + 1 :]
    if at >= 0:
        return (
            image[: offset + colon],
            image[offset + colon + 1 : offset + at],
            image[offset + at + 1 :],
        )
    return image[: offset + colon], image[offset + colon + 1 :], ""


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in an object, as kustomize finds them."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def _set_images(resources: list[_Resource], spec: dict[str, Any], path: Path) -> None:
    unknown = sorted(set(spec) - _IMAGE_FIELDS)
    if unknown or not spec.get("name"):
        raise RenderError(f"{path}: an images entry needs a name (and no {', '.join(unknown)})")
    for resource in resources:
        for container in containers(resource.obj):
            if isinstance(container.get("image"), str):
                container["image"] = _new_image(container["image"], spec)


def _new_image(image: str, spec: dict[str, Any]) -> str:
    name, tag, digest = split_image(image)
    if name != spec["name"]:
        return image
    name = str(spec.get("newName") or name)
    new_tag, new_digest = str(spec.get("newTag") or ""), str(spec.get("digest") or "")
    if new_tag or new_digest:
        tag, digest = new_tag, new_digest
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _add_hash_suffixes(resources: list[_Resource]) -> None:
    renamed: dict[tuple[str, str], str] = {}
    for resource in resources:
        if resource.generated:
            new_name = f"{resource.name}-{kustomize_hash(resource.obj.get('data', {}))}"
            renamed[(resource.namespace, resource.name)] = new_name
            resource.obj["metadata"]["name"] = new_name
    if not renamed:
        return
    for resource in resources:
        route = _POD_SPEC_PATHS.get(resource.kind)
        spec: Any = resource.obj
        for step in route or ():
            spec = spec.get(step) if isinstance(spec, dict) else None
        if route and isinstance(spec, dict):
            _rename_references(spec, lambda n, ns=resource.namespace: renamed.get((ns, n), n))


def _rename_references(pod_spec: dict[str, Any], rename: Callable[[str], str]) -> None:
    def fix(ref: Any) -> None:
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            ref["name"] = rename(ref["name"])

    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in pod_spec.get(key) or []:
            for source in container.get("envFrom") or []:
                fix(source.get("configMapRef"))
            for env in container.get("env") or []:
                fix((env.get("valueFrom") or {}).get("configMapKeyRef"))
    for volume in pod_spec.get("volumes") or []:
        fix(volume.get("configMap"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            fix(source.get("configMap"))


def _sort_key(resource: _Resource) -> tuple[int, str, str, str]:
    kind = resource.kind
    if kind in _ORDER_FIRST:
        rank = _ORDER_FIRST.index(kind) - len(_ORDER_FIRST)
    elif kind in _ORDER_LAST:
        rank = 1 + _ORDER_LAST.index(kind)
    else:
        rank = 0
    group, version = _group_version(resource.obj)
    gvk = "_".join([group or "~G", version or "~V", kind or "~K"])
    return rank, gvk, resource.namespace, resource.name


# -- JSON patch (RFC 6902) -------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise RenderError(f"{path}: {token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_add):
        raise RenderError(f"{path}: index {index} is out of range")
    return index


def _parent(document: Any, tokens: list[str], path: str) -> Any:
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise RenderError(f"{path}: {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path)]
        else:
            raise RenderError(f"{path}: cannot descend into a {type(node).__name__}")
    return node


def _get(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return document
    parent, last = _parent(document, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise RenderError(f"{path}: {last!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path)]
    raise RenderError(f"{path}: cannot descend into a {type(parent).__name__}")


def _add(document: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(document, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, for_add=True), value)
    else:
        raise RenderError(f"{path}: cannot add to a {type(parent).__name__}")
    return document


def _remove(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise RenderError("cannot remove the whole document")
    parent, last = _parent(document, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise RenderError(f"{path}: {last!r} does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, path)]
    else:
        raise RenderError(f"{path}: cannot remove from a {type(parent).__name__}")
    return document


def apply_json_patch(document: Any, operations: list[Any]) -> Any:
    """``document`` (a copy) with the RFC 6902 ``operations`` applied; :class:`RenderError`
    naming the operation if one cannot be applied (or a ``test`` fails)."""
    result = copy.deepcopy(document)
    for number, op in enumerate(operations, start=1):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise RenderError(f"operation {number} needs op and path")
        kind, path = op["op"], str(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise RenderError(f"operation {number} ({kind} {path}) needs a value")
        value = copy.deepcopy(op.get("value"))
        if kind == "add":
            result = _add(result, path, value)
        elif kind == "remove":
            result = _remove(result, path)
        elif kind == "replace":
            _get(result, path)  # must exist
            result = _add(_remove(result, path), path, value) if _pointer(path) else value
        elif kind == "test":
            actual = _get(result, path)
            if actual != value:
                raise RenderError(f"test {path}: expected {value!r}, found {actual!r}")
        elif kind in ("move", "copy"):
            source = str(op.get("from", ""))
            moved = copy.deepcopy(_get(result, source))
            if kind == "move":
                result = _remove(result, source)
            result = _add(result, path, moved)
        else:
            raise RenderError(f"operation {number}: unknown op {kind!r}")
    return result
