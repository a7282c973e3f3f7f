"""The KubeRay v1.7.0 CRD schemas, read from ``FXRAY_KUBERAY_CRDS`` (never copied into the
project), made strict like ``kubectl --validate=strict``: an object schema that lists its
properties refuses others unless it says ``additionalProperties`` or
``x-kubernetes-preserve-unknown-fields``. Shared by the manifest tests and the fake API server.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CRDS_ENV = "FXRAY_KUBERAY_CRDS"
DEFAULT_CRDS = "/work/shared/kuberay/crds-v1.7.0"
KUBERNETES_VERSION = "1.32"  # the built-in kinds are checked against this release's schemas


def crds_dir() -> Path:
    """The CRD folder; skips the test if it is missing (fails under CI=true)."""
    path = Path(os.environ.get(CRDS_ENV, DEFAULT_CRDS))
    if not (path / "ray.io_rayclusters.yaml").is_file():
        message = f"no KubeRay CRDs in {path} (set {CRDS_ENV})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@functools.cache
def _schema(plural: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((crds_dir() / f"ray.io_{plural}.yaml").read_text(encoding="utf-8"))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists properties
    and allows nothing else explicitly."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(schema)
    return schema


@functools.cache
def raycluster_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(_schema("rayclusters", "v1")))


def raycluster_schema() -> dict[str, Any]:
    return _schema("rayclusters", "v1")


def raycluster_errors(obj: dict[str, Any]) -> list[str]:
    """Every problem the strict v1 schema finds in a RayCluster (path: message)."""
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '.'}: {error.message}"
        for error in raycluster_validator().iter_errors(obj)
    )


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """``obj`` with the schema's ``default`` values filled in where a field is missing, as the
    API server does for custom resources (structural schema defaulting)."""
    if isinstance(obj, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                if key not in properties:
                    apply_defaults(value, extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])
    return obj
