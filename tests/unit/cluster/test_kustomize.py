"""fxray's own kustomize (fxray/cluster/kustomize.py): the parts deploy/kuberay uses, and clear
refusals of the rest. Where kubectl is installed, its output is the reference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fxray.cluster import RenderError
from fxray.cluster.kustomize import apply_json_patch, build, kustomize_hash, split_image
from fxray.cluster.render import kubectl_path, render_with_kubectl


def write(folder: Path, files: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = yaml.safe_dump_all(content)
        else:
            text = yaml.safe_dump(content)
        (folder / name).write_text(text)
    return folder


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "initContainers": [{"name": "init", "image": "tool:1"}],
                "containers": [
                    {
                        "name": "web",
                        "image": "web",
                        "envFrom": [{"configMapRef": {"name": "settings"}}],
                        "env": [
                            {
                                "name": "X",
                                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "X"}},
                            }
                        ],
                    }
                ],
                "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}],
            },
        },
    },
}
CUSTOM = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": {"name": "w"},
    "spec": {"pods": {"template": {"spec": {"containers": [{"name": "c", "image": "web:old"}]}}}},
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path / "base",
        {
            "kustomization.yaml": {
                "resources": ["objects.yaml"],
                "labels": [{"pairs": {"team": "data"}}],
                "configMapGenerator": [
                    {"name": "settings", "envs": ["settings.env"], "literals": ["B='quoted'"]}
                ],
            },
            "objects.yaml": [DEPLOYMENT, CUSTOM],
            "settings.env": "# comment\n\nA=1\nX=two words\nURL=http://x/?a=b&c=<d>\n",
        },
    )
    write(
        tmp_path / "component",
        {
            "kustomization.yaml": {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "patches": [
                    {
                        "target": {"kind": "Widget"},
                        "patch": "- {op: add, path: /spec/extra, value: 1}",
                    }
                ],
            }
        },
    )
    write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {
                "namespace": "team",
                "resources": ["../base"],
                "components": ["../component"],
                "images": [{"name": "web", "newName": "registry/web", "newTag": "2.0"}],
                "configMapGenerator": [
                    {"name": "settings", "behavior": "merge", "literals": ["A=3", "C=4"]}
                ],
                "patches": [
                    {
                        "target": {"group": "apps", "kind": "Deployment", "name": "w.b"},
                        "path": "replicas.yaml",
                    },
                ],
            },
            "replicas.yaml": "- {op: add, path: /spec/replicas, value: 3}\n",
        },
    )
    return tmp_path


def test_an_overlay_renders_as_kustomize_would(project: Path) -> None:
    objects = build(project / "overlay")
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Widget"]
    config, deployment, widget = objects
    data = {"A": "3", "X": "two words", "URL": "http://x/?a=b&c=<d>", "B": "quoted", "C": "4"}
    assert config["data"] == data
    name = f"settings-{kustomize_hash(data)}"
    assert config["metadata"] == {"name": name, "namespace": "team", "labels": {"team": "data"}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == name
    assert pod["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == name
    assert pod["volumes"][0]["configMap"]["name"] == name
    assert pod["containers"][0]["image"] == "registry/web:2.0"
    assert pod["initContainers"][0]["image"] == "tool:1"
    assert deployment["spec"]["replicas"] == 3  # the target's name is a regular expression
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "web"}  # not templates
    assert widget["spec"]["extra"] == 1
    assert (
        widget["spec"]["pods"]["template"]["spec"]["containers"][0]["image"] == "registry/web:2.0"
    )
    assert widget["metadata"]["namespace"] == "team"


def test_the_same_as_kubectl_kustomize(project: Path) -> None:
    if kubectl_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not installed")
        pytest.skip("kubectl is not installed")
    assert build(project / "overlay") == render_with_kubectl(project / "overlay")
    assert build(project / "base") == render_with_kubectl(project / "base")


def test_kustomizes_hash_vectors() -> None:
    # the vectors of kustomize's api/hasher tests (TestConfigMapHash)
    assert kustomize_hash({}) == "42745tchd9"
    assert kustomize_hash({"one": ""}) == "9g67k2htb6"
    assert kustomize_hash({"two": 2, "one": "", "three": 3}) == "7757f9kkct"  # YAML ints


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("fxray", ("fxray", "", "")),
        ("fxray:dev", ("fxray", "dev", "")),
        ("registry:5000/team/fxray:0.1", ("registry:5000/team/fxray", "0.1", "")),
        ("fxray@sha256:abc", ("fxray", "", "sha256:abc")),
        ("r.io/fxray:1@sha256:abc", ("r.io/fxray", "1", "sha256:abc")),
    ],
)
def test_images_split_as_kustomize_splits_them(image: str, parts: tuple[str, str, str]) -> None:
    assert split_image(image) == parts


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("commonLabels", {"a": "b"}, "commonLabels not supported"),
        ("patches", [{"patch": "- {op: remove, path: /x}"}], "needs a target"),
        (
            "patches",
            [{"target": {"kind": "Deployment"}, "patch": "spec: {replicas: 2}"}],
            "strategic merge patches need kubectl",
        ),
        ("patches", [{"target": {"kind": "Nothing"}, "patch": "[]"}], "matches no resource"),
        ("labels", [{"pairs": {"a": "b"}, "includeSelectors": True}], "includeSelectors"),
        ("configMapGenerator", [{"name": "x", "files": ["f"]}], "files not supported"),
        ("configMapGenerator", [{"name": "nope", "behavior": "merge"}], "no ConfigMap nope"),
        ("resources", ["https://github.com/x/y"], "remote resource"),
        ("resources", ["missing.yaml"], "does not exist"),
    ],
)
def test_what_it_cannot_do_it_refuses_by_name(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    kustomization: dict[str, Any] = {"resources": ["objects.yaml"]}
    kustomization[field] = value if field != "resources" else ["objects.yaml", *value]
    write(tmp_path, {"kustomization.yaml": kustomization, "objects.yaml": [DEPLOYMENT]})
    with pytest.raises(RenderError, match=message):
        build(tmp_path)


def test_a_failing_patch_test_names_the_patch(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "kustomization.yaml": {
                "resources": ["objects.yaml"],
                "patches": [
                    {
                        "target": {"kind": "Deployment"},
                        "patch": "- {op: test, path: /metadata/name, value: other}",
                    }
                ],
            },
            "objects.yaml": [DEPLOYMENT],
        },
    )
    with pytest.raises(RenderError, match="on Deployment web: test /metadata/name"):
        build(tmp_path)


def test_a_folder_without_kustomization(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"has no kustomization\.yaml"):
        build(tmp_path)


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x", "d~/e": 1}
    patched = apply_json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 4},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/f"},
            {"op": "move", "from": "/d~0~1e", "path": "/g"},
            {"op": "test", "path": "/a/b", "value": [9, 2, 3, 4]},
        ],
    )
    assert patched == {"a": {"b": [9, 2, 3, 4]}, "c": "y", "f": "y", "g": 1}
    assert doc == {"a": {"b": [1, 2, 3]}, "c": "x", "d~/e": 1}  # the input is not changed


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ({"op": "replace", "path": "/missing", "value": 1}, "'missing' does not exist"),
        ({"op": "add", "path": "/a/b/7", "value": 1}, "out of range"),
        ({"op": "remove", "path": "/a/b/x"}, "not an array index"),
        ({"op": "test", "path": "/c", "value": "z"}, "expected 'z'"),
        ({"op": "jump", "path": "/c"}, "unknown op"),
        ({"op": "add", "path": "c", "value": 1}, "must start with /"),
    ],
)
def test_json_patch_errors(op: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        apply_json_patch({"a": {"b": [1]}, "c": "x"}, [op])
