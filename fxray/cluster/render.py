"""Where the manifests are, and rendering an overlay into the objects to apply.

``kubectl kustomize`` renders when kubectl is installed; otherwise fxray's own renderer
(:mod:`fxray.cluster.kustomize`) does, which the tests keep equal to kubectl's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

from fxray.cluster import kustomize
from fxray.cluster.errors import RenderError

Renderer = Literal["auto", "kubectl", "python"]
OVERLAYS = ("dev", "production")
MANIFESTS_ENV = "FXRAY_KUBERAY_DIR"
KUBECTL_TIMEOUT_S = 60
CHECKOUT_MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kuberay"
INSTALLED_MANIFESTS = Path(sys.prefix) / "share" / "fxray" / "kuberay"  # pyproject's data-files


def manifests_dir() -> Path:
    """``deploy/kuberay``: from ``FXRAY_KUBERAY_DIR``, the working directory, the checkout
    this fxray was installed from, or the copy a wheel installs (``<prefix>/share/fxray``)."""
    explicit = os.environ.get(MANIFESTS_ENV)
    if explicit:
        path = Path(explicit)
        if not (path / "base").is_dir():
            raise RenderError(f"{MANIFESTS_ENV}={explicit} has no base/ folder")
        return path
    for candidate in (
        Path.cwd() / "deploy" / "kuberay",
        CHECKOUT_MANIFESTS,
        INSTALLED_MANIFESTS,
    ):
        if (candidate / "base").is_dir():
            return candidate
    raise RenderError(
        "cannot find deploy/kuberay: run from a checkout of fxray, set "
        f"{MANIFESTS_ENV}, or give --overlay a folder"
    )


def overlay_dir(overlay: str) -> Path:
    """The folder of ``overlay``: a folder with a kustomization, or a name under
    ``deploy/kuberay/overlays`` (``base`` is the base itself)."""
    path = Path(overlay)
    if path.is_dir():
        if not any((path / name).is_file() for name in kustomize.KUSTOMIZATION_FILES):
            raise RenderError(f"{path} has no kustomization.yaml")
        return path
    if "/" in overlay or os.sep in overlay:
        raise RenderError(f"{overlay} is not a folder")
    root = manifests_dir()
    found = root / "base" if overlay == "base" else root / "overlays" / overlay
    if not found.is_dir():
        known = sorted(p.name for p in (root / "overlays").iterdir() if p.is_dir())
        raise RenderError(f"no overlay {overlay!r}; known: {', '.join(known)}, or a folder")
    return found


def kubectl_path() -> str | None:
    return shutil.which("kubectl")


def render_with_kubectl(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize directory``, parsed."""
    kubectl = kubectl_path()
    if kubectl is None:
        raise RenderError("kubectl is not installed (use --renderer python)")
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(
            f"kubectl kustomize {directory} took over {KUBECTL_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render(
    overlay: str,
    *,
    renderer: Renderer = "auto",
    image: str | None = None,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """The objects of ``overlay``, with every container on ``image`` and everything in
    ``namespace`` if given (all of fxray's containers run the fxray image)."""
    directory = overlay_dir(overlay)
    use_kubectl = renderer == "kubectl" or (renderer == "auto" and kubectl_path() is not None)
    objects = render_with_kubectl(directory) if use_kubectl else kustomize.build(directory)
    if image:
        for obj in objects:
            for container in kustomize.containers(obj):
                container["image"] = image
    if namespace:
        set_namespace(objects, namespace)
    return objects


def set_namespace(objects: list[dict[str, Any]], namespace: str) -> None:
    """Move every namespaced object to ``namespace``; a Namespace object becomes that one."""
    for obj in objects:
        metadata = obj.setdefault("metadata", {})
        if obj.get("kind") == "Namespace":
            metadata["name"] = namespace
        elif obj.get("kind") not in kustomize.CLUSTER_SCOPED_KINDS:
            metadata["namespace"] = namespace


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as one YAML stream, keys sorted (as kustomize prints them)."""
    return "---\n".join(
        yaml.safe_dump(obj, sort_keys=True, default_flow_style=False) for obj in objects
    )
