"""``fxray cluster render``: the overlay's manifests as YAML, with --image and --namespace, and
clear errors for a bad overlay (no cluster needed)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from fxray.cli import app
from fxray.cluster import kustomize
from fxray.cluster import render as render_module
from fxray.cluster.render import render


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, ["cluster", "render", *(str(a) for a in args)])


def test_render_prints_every_object_as_yaml() -> None:
    result = invoke("-k", "dev", "--renderer", "python")
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(result.output))
    assert objects == render("dev", renderer="python")
    assert {o["kind"] for o in objects} >= {"RayCluster", "Deployment", "ConfigMap"}


def test_image_and_namespace_overrides() -> None:
    result = invoke(
        "-k", "production", "--renderer", "python", "--image", "r.io/fxray:9", "-n", "team-a"
    )
    objects = list(yaml.safe_load_all(result.output))
    images = {c["image"] for o in objects for c in kustomize.containers(o)}
    assert images == {"r.io/fxray:9"}
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "team-a"
    }
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "team-a"


def test_an_overlay_folder_works_too(tmp_path: Path) -> None:
    dev = Path(__file__).resolve().parents[3] / "deploy" / "kuberay" / "overlays" / "dev"
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {dev}\nnamespace: other\n")
    result = invoke("-k", tmp_path, "--renderer", "python")
    assert result.exit_code == 0, result.output
    assert "namespace: other" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-k", "staging"), "no overlay 'staging'; known: dev, production"),
        (("-k", "dev", "--renderer", "helm"), "--renderer must be auto, kubectl or python"),
        (("-k", "./nowhere/at-all"), "./nowhere/at-all is not a folder"),
    ],
)
def test_bad_overlays_are_named(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code in (1, 2)
    assert message in result.output


def test_kubectl_renderer_without_kubectl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_module.shutil, "which", lambda _name: None)
    result = invoke("-k", "dev", "--renderer", "kubectl")
    assert result.exit_code == 1
    assert "kubectl is not installed (use --renderer python)" in result.output
    assert invoke("-k", "dev").exit_code == 0  # auto falls back to fxray's renderer


def test_the_manifests_folder_can_be_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXRAY_KUBERAY_DIR", str(tmp_path))
    result = invoke("-k", "dev", "--renderer", "python")
    assert result.exit_code == 1
    assert f"FXRAY_KUBERAY_DIR={tmp_path} has no base/ folder" in result.output


ROOT = Path(__file__).resolve().parents[3]


def test_a_wheel_installs_every_manifest_where_render_looks() -> None:
    """pyproject's data-files put each file of deploy/kuberay under share/fxray/kuberay at its
    own relative path (the folder ``render`` falls back to outside a checkout)."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    installed = {
        f"{target}/{source.name}".removeprefix("share/fxray/kuberay/")
        for target, patterns in data_files.items()
        for pattern in patterns
        for source in ROOT.glob(pattern)
        if source.is_file()
    }
    shipped = {
        str(path.relative_to(ROOT / "deploy" / "kuberay"))
        for path in (ROOT / "deploy" / "kuberay").rglob("*")
        if path.is_file()
    }
    assert installed == shipped
    assert str(render_module.INSTALLED_MANIFESTS).endswith("share/fxray/kuberay")


def test_outside_a_checkout_the_installed_manifests_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "share" / "fxray" / "kuberay"
    shutil.copytree(ROOT / "deploy" / "kuberay", installed)
    monkeypatch.delenv("FXRAY_KUBERAY_DIR", raising=False)
    monkeypatch.setattr(render_module, "CHECKOUT_MANIFESTS", tmp_path / "no-checkout")
    monkeypatch.setattr(render_module, "INSTALLED_MANIFESTS", installed)
    monkeypatch.chdir(tmp_path)
    assert render_module.manifests_dir() == installed
    result = invoke("-k", "dev", "--renderer", "python")
    assert result.exit_code == 0, result.output
    assert "kind: RayCluster" in result.output
