"""deploy/kuberay: every object the base and the overlays render is valid (RayCluster against the
KubeRay v1.7.0 CRD schema made strict, built-in kinds against Kubernetes' own schemas), both
renderers agree, and Ray's own reading of each RayCluster gives what docs/deploy.md promises."""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)

from fxray.cluster import kustomize
from fxray.cluster.render import kubectl_path, overlay_dir, render, render_with_kubectl
from fxray.settings import Settings
from tests.kuberay_schemas import KUBERNETES_VERSION, raycluster_errors

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy" / "kuberay"
OVERLAYS = ["base", "dev", "production"]
GIB = 1024**3


def rendered(overlay: str) -> list[dict[str, Any]]:
    return render(overlay, renderer="python")


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def ray_reading(overlay: str) -> dict[str, Any]:
    """What Ray's autoscaler reads from the overlay's RayCluster."""
    cluster = copy.deepcopy(one(rendered(overlay), "RayCluster"))
    cluster["metadata"].setdefault("namespace", "default")  # the base has none
    return _derive_autoscaling_config_from_ray_cr(cluster)


def require_kubectl() -> str:
    path = kubectl_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not installed (CI must compare the renderers)")
        pytest.skip("kubectl is not installed")
    return path


# -- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_fxrays_renderer_gives_what_kubectl_kustomize_gives(overlay: str) -> None:
    require_kubectl()
    assert rendered(overlay) == render_with_kubectl(overlay_dir(overlay))


def test_the_overlays_differ_where_they_should() -> None:
    dev, production = rendered("dev"), rendered("production")
    assert {o["metadata"].get("namespace") for o in dev} - {None} == {"fxray-dev"}
    assert {o["metadata"].get("namespace") for o in production} - {None} == {"fxray"}
    assert one(dev, "Deployment")["spec"]["replicas"] == 1
    assert one(production, "Deployment")["spec"]["replicas"] == 2
    assert {o["kind"] for o in production} - {o["kind"] for o in dev} == {
        "PodDisruptionBudget",
        "NetworkPolicy",
    }


# -- validity -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_raycluster_is_valid_for_kuberay_1_7(overlay: str) -> None:
    assert raycluster_errors(one(rendered(overlay), "RayCluster")) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_in_object_is_valid_kubernetes(overlay: str) -> None:
    built_ins = [o for o in rendered(overlay) if o["kind"] != "RayCluster"]
    assert {o["kind"] for o in built_ins} >= {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
    }
    for obj in built_ins:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_example_secrets_are_valid_kubernetes() -> None:
    for obj in yaml.safe_load_all((DEPLOY / "examples" / "secrets.yaml").read_text()):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_an_unknown_field_or_a_wrong_type_in_the_raycluster_is_caught() -> None:
    cluster = one(rendered("dev"), "RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert any("'minReplica' was unexpected" in e for e in raycluster_errors(typo))
    nested = copy.deepcopy(cluster)
    nested["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "x"
    assert any("'imagePullPolice' was unexpected" in e for e in raycluster_errors(nested))
    wrong = copy.deepcopy(cluster)
    wrong["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert raycluster_errors(wrong) == [
        "spec.headGroupSpec.rayStartParams.num-cpus: 0 is not of type 'string'"
    ]
    missing = copy.deepcopy(cluster)
    del missing["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert any("'maxReplicas' is a required property" in e for e in raycluster_errors(missing))
    bad_enum = copy.deepcopy(cluster)
    bad_enum["spec"]["autoscalerOptions"]["version"] = "v3"
    assert any("'v3' is not one of" in e for e in raycluster_errors(bad_enum))


def test_an_unknown_field_or_a_wrong_type_in_a_built_in_is_caught() -> None:
    deployment = one(rendered("dev"), "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolice"):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type"):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)


# -- what Ray reads -------------------------------------------------------------------------


def documented_node_types() -> dict[str, dict[str, dict[str, str]]]:
    """The table under "### Node types" in docs/deploy.md: overlay -> node type -> columns."""
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    lines = text[text.index("### Node types") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header = rows[0]
    table: dict[str, dict[str, dict[str, str]]] = {}
    for cells in rows[2:]:
        row = dict(zip(header, cells, strict=True))
        table.setdefault(row["overlay"], {})[row["node type"]] = row
    return table


def as_documented(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Ray's node types, written as the docs' table writes them."""
    cluster_idle_s = config["idle_timeout_minutes"] * 60
    rows = {}
    for name, node in config["available_node_types"].items():
        resources = dict(node["resources"])
        custom = {k: v for k, v in resources.items() if k not in ("CPU", "memory", "GPU")}
        idle = "" if name == "headgroup" else f"{node.get('idle_timeout_s', cluster_idle_s):g} s"
        rows[name] = {
            "min": str(node["min_workers"]),
            "max": str(node["max_workers"]),
            "CPU": str(resources["CPU"]),
            "memory": f"{resources['memory'] / GIB:g} GiB",
            "custom resources": ", ".join(f"{k}: {v}" for k, v in sorted(custom.items())),
            "idle timeout": idle,
        }
    return rows


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rays_reading_of_the_raycluster_is_what_the_docs_promise(overlay: str) -> None:
    documented = {
        name: {k: v for k, v in row.items() if k not in ("overlay", "node type")}
        for name, row in documented_node_types()[overlay].items()
    }
    assert as_documented(ray_reading(overlay)) == documented


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_head_takes_no_work_and_platform_actors_fit_only_on_workers(overlay: str) -> None:
    objects = rendered(overlay)
    node_types = ray_reading(overlay)["available_node_types"]
    wanted = json.loads(one(objects, "ConfigMap")["data"]["FXRAY_PLATFORM_ACTOR_RESOURCES"])
    head = node_types.pop("headgroup")["resources"]
    assert head["CPU"] == 0  # no executor (they ask for CPU) can go there
    assert not set(wanted) & set(head)  # nor a router or an ops sink
    hosts = [name for name, t in node_types.items() if all(k in t["resources"] for k in wanted)]
    assert "executors" in hosts
    assert Settings().executor_cpus > 0


def settings_from(data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the ConfigMap's data alone gives (no other FXRAY_* variable, no toml)."""
    for name in list(os.environ):
        if name.startswith("FXRAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(Path(os.sep))  # no ./fxray.toml
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_settings_name_the_worker_groups_ray_reads(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cluster_node_types`` (what lets a service wait for a pod the autoscaler will add, and
    refuses one no group fits) is exactly the worker groups Ray reads from the RayCluster."""
    data = one(rendered(overlay), "ConfigMap")["data"]
    read = {
        name: {k: float(v) for k, v in node["resources"].items()}
        for name, node in ray_reading(overlay)["available_node_types"].items()
        if name != "headgroup"
    }
    assert settings_from(data, monkeypatch).cluster_node_types == read


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_is_in_tree_v2(overlay: str) -> None:
    spec = one(rendered(overlay), "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["upgradeStrategy"] == {"type": "Recreate"}


# -- the platform's pods ----------------------------------------------------------------------


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(kustomize.containers(obj))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_no_escalation(overlay: str) -> None:
    for obj in rendered(overlay):
        for container in containers(obj):
            resources = container.get("resources") or {}
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), container["name"]
            security = container.get("securityContext") or {}
            assert security.get("allowPrivilegeEscalation") is False, container["name"]
            assert security.get("capabilities") == {"drop": ["ALL"]}, container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_pods_have_shared_memory_and_no_token(overlay: str) -> None:
    spec = one(rendered(overlay), "RayCluster")["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [
        g["template"] for g in spec["workerGroupSpecs"]
    ]
    for template in templates:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {
            m["mountPath"]: m["name"] for m in template["spec"]["containers"][0]["volumeMounts"]
        }
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    for group in spec["workerGroupSpecs"]:  # workers run service code
        assert group["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_platform_is_probed_on_the_apis_health_endpoint(overlay: str) -> None:
    from fxray.api import app as api_app

    assert re.search(r'@app\.get\(f"\{API_PREFIX\}/health"', Path(api_app.__file__).read_text())
    prefix = api_app.API_PREFIX
    deployment = one(rendered(overlay), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (platform,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert platform[probe]["httpGet"] == {"path": f"{prefix}/health", "port": "http"}
    assert platform["command"] == ["fxray", "up"]
    assert pod["automountServiceAccountToken"] is False
    service_account = one(rendered(overlay), "ServiceAccount")
    assert service_account["automountServiceAccountToken"] is False
    assert not [o for o in rendered(overlay) if o["kind"] in ("Role", "RoleBinding", "ClusterRole")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_services_select_the_platform_and_the_head(overlay: str) -> None:
    objects = rendered(overlay)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    platform_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    api = services["fxray-api"]["spec"]
    assert api["selector"].items() <= platform_labels.items()
    assert api["ports"][0]["targetPort"] == "http"
    cluster = one(objects, "RayCluster")
    # KubeRay labels the head pod ray.io/cluster=<name>, ray.io/node-type=head
    assert services["fxray-dashboard"]["spec"]["selector"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }
    head_ports = {
        p["name"]: p["containerPort"]
        for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert head_ports["dashboard"] == services["fxray-dashboard"]["spec"]["ports"][0]["port"]
    # the platform reaches KubeRay's head Service, <cluster>-head-svc, on the client port
    address = one(objects, "ConfigMap")["data"]["FXRAY_RAY_ADDRESS"]
    assert address == f"ray://{cluster['metadata']['name']}-head-svc:{head_ports['client']}"


# -- settings, secrets, versions --------------------------------------------------------------


def secret_refs(deployment: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        env["name"]: (
            env["valueFrom"]["secretKeyRef"]["name"],
            env["valueFrom"]["secretKeyRef"]["key"],
            bool(env["valueFrom"]["secretKeyRef"].get("optional")),
        )
        for env in container["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_settings_and_secrets_make_valid_fxray_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered(overlay)
    data = one(objects, "ConfigMap")["data"]
    fields = Settings.model_fields
    setting = [k.removeprefix("FXRAY_").split("__")[0].lower() for k in data]  # "__": nested
    assert [k for k in setting if k not in fields] == []
    examples = {
        (s["metadata"]["name"], key): value
        for s in yaml.safe_load_all((DEPLOY / "examples" / "secrets.yaml").read_text())
        for key, value in s["stringData"].items()
    }
    secrets = {}
    for env, (secret, key, optional) in secret_refs(one(objects, "Deployment")).items():
        assert env.removeprefix("FXRAY_").lower() in fields
        if (secret, key) in examples:
            secrets[env] = examples[(secret, key)]
        else:
            assert optional, f"{env}: Secret {secret} key {key} is not in examples/secrets.yaml"
    settings = settings_from({**data, **secrets}, monkeypatch)
    assert settings.event_bus == "kafka" and settings.package_store == "s3"
    assert settings.database_url.startswith("postgresql+psycopg2://")
    assert settings.ray_address == data["FXRAY_RAY_ADDRESS"]
    assert settings.api_host == "0.0.0.0"
    assert settings.platform_actor_resources == {"fxray-platform": 0.001}


def test_every_secret_reference_is_in_the_example() -> None:
    text = (DEPLOY / "examples" / "secrets.yaml").read_text()
    examples = {s["metadata"]["name"]: set(s["stringData"]) for s in yaml.safe_load_all(text)}
    for env, (secret, key, optional) in secret_refs(one(rendered("dev"), "Deployment")).items():
        assert secret in examples, env
        if optional:  # an alternative may be shown as a comment
            assert f"{key}:" in text, env
        else:
            assert key in examples[secret], env


def test_the_image_ray_version_and_fxray_version_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ray_pin,) = [d for d in project["dependencies"] if d.startswith("ray[")]
    ray_version = ray_pin.split("==")[1]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert base == f"rayproject/ray:{ray_version}-py311"
    assert f"ray.__version__ == '{ray_version}'" in dockerfile
    for overlay in OVERLAYS:
        assert one(rendered(overlay), "RayCluster")["spec"]["rayVersion"] == ray_version
    images = {c["image"] for o in rendered("production") for c in containers(o)}
    assert images == {f"registry.example.com/fxray:{project['version']}"}
    assert {c["image"] for o in rendered("dev") for c in containers(o)} == {"fxray:dev"}
