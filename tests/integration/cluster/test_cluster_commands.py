"""``fxray cluster apply/status/scale/delete`` through the real ``kubernetes`` client against the
fake API server (tests/integration/cluster/fake_kube.py, a test double answering as
kube-apiserver does)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cluster.conftest import SECRETS, add_secrets, cluster, invoke
from tests.integration.cluster.fake_kube import FakeKube

DEV = Path(__file__).resolve().parents[3] / "deploy" / "kuberay" / "overlays" / "dev"
NS = "fxray-dev"
WRITES = ("POST", "PATCH", "PUT", "DELETE")


def overlay(tmp_path: Path, name: str, patches: str = "", literals: str = "") -> Path:
    """A kustomization on top of the dev overlay (JSON 6902 ``patches``, settings
    ``literals``), as a platform team would write one."""
    folder = tmp_path / name
    folder.mkdir()
    text = (
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {DEV}\n"
    )
    if literals:
        text += (
            "configMapGenerator:\n  - name: fxray-settings\n    behavior: merge\n    literals:\n"
        )
        text += "".join(f"      - {line}\n" for line in literals.split())
    if patches:
        text += patches
    (folder / "kustomization.yaml").write_text(text)
    return folder


def patches(target: str, *operations: str) -> str:
    """A ``patches:`` entry: JSON 6902 ``operations`` (flow-style YAML) on ``target``."""
    lines = "".join(f"      - {op}\n" for op in operations)
    return f"patches:\n  - target: {{{target}}}\n    patch: |-\n{lines}"


RAYCLUSTER = "group: ray.io, version: v1, kind: RayCluster, name: fxray"


def applied(fake: FakeKube, kubeconfig: Path, *args: object, overlay: str = "dev") -> str:
    result = cluster("apply", kubeconfig, "--timeout", 60, *args, overlay=overlay)
    assert result.exit_code == 0, result.output
    return result.output


# -- apply ----------------------------------------------------------------------------------


def test_apply_creates_everything_and_follows_the_pods(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    output = applied(fake, kubeconfig)
    for name in (
        "serviceaccount/fxray-platform created",
        "service/fxray-api created",
        "service/fxray-dashboard created",
        "raycluster.ray.io/fxray created",
        "deployment.apps/fxray-platform created",
    ):
        assert name in output
    assert "ready" in output.splitlines()[-1]
    cluster_obj = fake.get("rayclusters", "fxray", NS)
    assert cluster_obj["status"]["state"] == "ready"
    assert cluster_obj["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    deployment = fake.get("deployments", "fxray-platform", NS)
    assert deployment["status"]["availableReplicas"] == 1
    # the pods' progress was followed by watch, with their roles
    assert "ray head" in output and "platform" in output
    creates = [path for method, path, _ in fake.requests if method == "POST"]
    assert "/apis/ray.io/v1/namespaces/fxray-dev/rayclusters" in creates
    assert "/apis/apps/v1/namespaces/fxray-dev/deployments" in creates


def test_a_second_apply_sends_no_write(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    before = len(fake.requests)
    output = applied(fake, kubeconfig)
    again = fake.requests[before:]
    assert [r for r in again if r[0] in WRITES] == []
    assert "nothing to change" in output
    assert "created" not in output and "configured" not in output


def test_what_the_manifests_no_longer_set_is_removed_and_the_rest_left(
    fake: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    """An overlay that added a label to the API's Service and a Ray start parameter is
    dropped: the next apply removes both, keeps a label someone else set, and a further
    apply writes nothing."""
    add_secrets(fake, NS)
    service = "version: v1, kind: Service, name: fxray-api"
    extra = overlay(
        tmp_path,
        "extra",
        patches=patches(service, "{op: add, path: /metadata/labels/team, value: data}")
        + patches(
            RAYCLUSTER,
            "{op: add, path: /spec/headGroupSpec/rayStartParams/log-color, value: 'false'}",
        )[len("patches:\n") :],
    )
    applied(fake, kubeconfig, "--no-wait", overlay=str(extra))
    assert fake.get("services", "fxray-api", NS)["metadata"]["labels"]["team"] == "data"
    with fake.lock:  # a label set by hand (kubectl label), not by fxray
        key = next(k for k in fake.objects if k[2] == "services" and k[4] == "fxray-api")
        fake.objects[key]["metadata"]["labels"]["owner"] = "ops"
    output = applied(fake, kubeconfig, "--no-wait")
    assert "service/fxray-api configured (metadata.labels.team (removed))" in output
    assert "rayStartParams.log-color (removed)" in output
    labels = fake.get("services", "fxray-api", NS)["metadata"]["labels"]
    assert "team" not in labels and labels["owner"] == "ops"
    params = fake.get("rayclusters", "fxray", NS)["spec"]["headGroupSpec"]["rayStartParams"]
    assert "log-color" not in params and params["num-cpus"] == "0"
    before = len(fake.requests)
    applied(fake, kubeconfig, "--no-wait")
    assert [r for r in fake.requests[before:] if r[0] in WRITES] == []


def test_an_object_created_meanwhile_is_compared_not_created_twice(
    fake: FakeKube, kubeconfig: Path
) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig, "--no-wait")
    fake.created_meanwhile.add(("rayclusters", "fxray"))
    output = applied(fake, kubeconfig, "--no-wait")
    assert "raycluster.ray.io/fxray unchanged" in output
    path = "/apis/ray.io/v1/namespaces/fxray-dev/rayclusters"
    conflict = fake.answers.index(("POST", path, 409))
    assert fake.answers[conflict - 1 : conflict + 2] == [
        ("GET", f"{path}/fxray", 404),
        ("POST", path, 409),
        ("GET", f"{path}/fxray", 200),
    ]
    assert ("PATCH", f"{path}/fxray", 200) not in fake.answers


def test_apply_leaves_the_replicas_the_autoscaler_chose(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    # the autoscaler adds a worker (dev: 0..2) by patching replicas, as KubeRay's does
    with fake.lock:
        key = next(k for k in fake.objects if k[2] == "rayclusters")
        fake.objects[key]["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    before = len(fake.requests)
    output = applied(fake, kubeconfig)
    assert [r for r in fake.requests[before:] if r[0] in WRITES] == []
    assert "nothing to change" in output
    assert fake.get("rayclusters", "fxray", NS)["spec"]["workerGroupSpecs"][0]["replicas"] == 2


def test_a_changed_setting_rolls_the_platform(
    fake: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    (old_pod,) = [
        p["metadata"]["name"] for p in fake.all("pods", NS) if "platform" in p["metadata"]["name"]
    ]
    changed = overlay(tmp_path, "more-routers", literals="FXRAY_ROUTERS=3")
    output = applied(fake, kubeconfig, overlay=str(changed))
    assert "deployment.apps/fxray-platform configured" in output
    assert "raycluster.ray.io/fxray unchanged" in output
    (new_config,) = [c for c in fake.all("configmaps", NS) if c["data"].get("FXRAY_ROUTERS") == "3"]
    deployment = fake.get("deployments", "fxray-platform", NS)
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"configMapRef": {"name": new_config["metadata"]["name"]}}]
    pods = [
        p["metadata"]["name"] for p in fake.all("pods", NS) if "platform" in p["metadata"]["name"]
    ]
    assert old_pod not in pods and len(pods) == 1


def test_an_upgrade_recreates_the_ray_pods_before_the_platform_rolls(
    fake: FakeKube, kubeconfig: Path
) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    old_head = fake.get("rayclusters", "fxray", NS)["status"]["head"]["podName"]
    output = applied(fake, kubeconfig, "--image", "registry.example.com/fxray:0.2.0")
    assert "raycluster.ray.io/fxray configured" in output
    assert "waiting for them" in output
    new = fake.get("rayclusters", "fxray", NS)
    assert new["status"]["head"]["podName"] != old_head
    image = new["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/fxray:0.2.0"
    events = [what for _, what in fake.timeline]
    recreate = events.index("recreate fxray")
    ready_again = events.index("cluster ready fxray", recreate)
    deployment_patch = events.index(
        "PATCH /apis/apps/v1/namespaces/fxray-dev/deployments/fxray-platform"
    )
    assert recreate < ready_again < deployment_patch


def test_a_ray_only_change_restarts_the_platform_after_the_ray_pods(
    fake: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    head = "/spec/headGroupSpec/template/spec/containers/0/resources"
    bigger = overlay(
        tmp_path,
        "bigger-head",
        patches=patches(
            RAYCLUSTER,
            f"{{op: replace, path: {head}/limits/memory, value: 3Gi}}",
            f"{{op: replace, path: {head}/requests/memory, value: 3Gi}}",
        ),
    )
    output = applied(fake, kubeconfig, overlay=str(bigger))
    assert "deployment.apps/fxray-platform restarted" in output
    annotations = fake.get("deployments", "fxray-platform", NS)["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    # and the restart mark does not count as a difference next time
    before = len(fake.requests)
    applied(fake, kubeconfig, overlay=str(bigger))
    assert [r for r in fake.requests[before:] if r[0] in WRITES] == []


def test_missing_secrets_are_named(fake: FakeKube, kubeconfig: Path) -> None:
    output = applied(fake, kubeconfig)
    for name in SECRETS:
        assert f"Secret {name}" in output
    assert "fxray-consul" not in output  # optional references are not required


def test_a_timeout_says_what_it_waited_for(
    make_fake: Callable[..., FakeKube], tmp_path: Path
) -> None:
    slow = make_fake(pod_delay_s=30)
    kubeconfig = slow.kubeconfig(tmp_path / "kubeconfig")
    add_secrets(slow, NS)
    result = cluster("apply", kubeconfig, "--timeout", 2)
    assert result.exit_code == 1
    assert "timed out after 2 s waiting for RayCluster fxray to be ready" in result.output


# -- status, scale, delete -------------------------------------------------------------------


def test_status_shows_groups_deployments_and_pods(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    result = cluster("status", kubeconfig)
    assert result.exit_code == 0, result.output
    assert "RayCluster fxray in namespace fxray-dev: ready" in result.output
    assert "deployment fxray-platform: 1/1 available" in result.output
    as_json = json.loads(cluster("status", kubeconfig, "--json").output)
    groups = {g["name"]: g for g in as_json["groups"]}
    assert groups["executors"]["min_replicas"] == 0 and groups["executors"]["max_replicas"] == 2
    assert groups["head"]["ready_pods"] == 1
    assert {p["role"] for p in as_json["pods"]} == {"ray head", "platform"}


def test_scale_patches_one_group_and_waits_for_its_pods(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    before = len(fake.requests)
    result = cluster(
        "scale", kubeconfig, "executors", "--min", 1, "--max", 3, "--wait", "--timeout", 30
    )
    assert result.exit_code == 0, result.output
    assert "group executors: min 1, max 3, replicas 1" in result.output
    assert "the overlay says min 0, max 2" in result.output
    writes = [r for r in fake.requests[before:] if r[0] in WRITES]
    assert writes == [
        (
            "PATCH",
            "/apis/ray.io/v1/namespaces/fxray-dev/rayclusters/fxray",
            "application/json-patch+json",
        )
    ]
    group = fake.get("rayclusters", "fxray", NS)["spec"]["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["maxReplicas"], group["replicas"]) == (1, 3, 1)
    workers = [
        p
        for p in fake.all("pods", NS)
        if p["metadata"]["labels"].get("ray.io/group") == "executors"
    ]
    assert len(workers) == 1
    assert "ray worker (executors)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("heavy", "--min", 1), "has no worker group 'heavy'; it has executors"),
        (("executors", "--min", 3, "--max", 2), "min (3) is above max (2)"),
        (("executors", "--replicas", 5), "--replicas 5 is outside min 0 .. max 2"),
        (("executors",), "give --min, --max and/or --replicas"),
    ],
)
def test_scale_refuses_bad_requests_without_writing(
    fake: FakeKube, kubeconfig: Path, args: tuple[object, ...], message: str
) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig, "--no-wait")
    before = len(fake.requests)
    result = cluster("scale", kubeconfig, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert [r for r in fake.requests[before:] if r[0] in WRITES] == []


def test_delete_removes_everything_but_the_namespace(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig)
    result = cluster("delete", kubeconfig, "--yes", "--timeout", 30)
    assert result.exit_code == 0, result.output
    assert "raycluster.ray.io/fxray deleted" in result.output
    assert "namespace/fxray-dev kept" in result.output
    for plural in (
        "rayclusters",
        "deployments",
        "services",
        "configmaps",
        "serviceaccounts",
        "pods",
    ):
        assert fake.all(plural, NS) == [], plural
    assert len(fake.all("secrets", NS)) == len(SECRETS)  # the namespace keeps its Secrets
    again = cluster("delete", kubeconfig, "--yes")
    assert again.exit_code == 0
    assert "raycluster.ray.io/fxray not found" in again.output


def test_delete_asks_first(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig, "--no-wait")
    result = cluster("delete", kubeconfig)  # no --yes, no input: the answer is no
    assert result.exit_code == 1
    assert fake.get("rayclusters", "fxray", NS) is not None


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["apply", "status", "delete"])
def test_without_kuberay_nothing_is_written(
    make_fake: Callable[..., FakeKube], tmp_path: Path, command: str
) -> None:
    bare = make_fake(kuberay=False)
    kubeconfig = bare.kubeconfig(tmp_path / "kubeconfig")
    result = cluster(command, kubeconfig, *(["--yes"] if command == "delete" else []))
    assert result.exit_code == 1
    assert "the cluster has no RayCluster API (ray.io/v1)" in result.output
    assert "install the KubeRay operator 1.7.0" in result.output
    assert bare.writes() == []


def test_scale_without_kuberay(make_fake: Callable[..., FakeKube], tmp_path: Path) -> None:
    bare = make_fake(kuberay=False)
    result = cluster("scale", bare.kubeconfig(tmp_path / "k"), "executors", "--max", 3)
    assert result.exit_code == 1
    assert "install the KubeRay operator" in result.output


def test_forbidden_names_the_verb_and_the_resource(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    fake.deny.add(("create", "deployments"))
    result = cluster("apply", kubeconfig, "--no-wait")
    assert result.exit_code == 1
    assert "no permission to create deployments.apps in namespace fxray-dev" in result.output
    assert 'User "tester" cannot create resource "deployments"' in result.output


def test_forbidden_patch_of_the_raycluster(fake: FakeKube, kubeconfig: Path) -> None:
    add_secrets(fake, NS)
    applied(fake, kubeconfig, "--no-wait")
    fake.deny.add(("patch", "rayclusters"))
    result = cluster("scale", kubeconfig, "executors", "--max", 3)
    assert result.exit_code == 1
    assert "no permission to patch rayclusters.ray.io in namespace fxray-dev" in result.output


def test_an_invalid_raycluster_is_refused_with_the_servers_message(
    fake: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    add_secrets(fake, NS)
    broken = overlay(
        tmp_path,
        "broken",
        patches=patches(
            RAYCLUSTER, '{op: replace, path: /spec/workerGroupSpecs/0/maxReplicas, value: "two"}'
        ),
    )
    result = cluster("apply", kubeconfig, "--no-wait", overlay=str(broken))
    assert result.exit_code == 1
    assert "RayCluster fxray is invalid" in result.output
    assert "maxReplicas: 'two' is not of type 'integer'" in result.output


def test_an_unknown_field_in_a_built_in_kind_is_refused_before_sending(
    fake: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    add_secrets(fake, NS)
    broken = overlay(
        tmp_path,
        "typo",
        patches=patches(
            "group: apps, version: v1, kind: Deployment",
            "{op: add, path: /spec/template/spec/containers/0/imagePullPolice, value: Always}",
        ),
    )
    result = cluster("apply", kubeconfig, "--no-wait", overlay=str(broken))
    assert result.exit_code == 1
    assert "Deployment fxray-platform" in result.output and "imagePullPolice" in result.output
    assert not any(path.endswith("/deployments") for method, path, _ in fake.writes())


def test_an_unreachable_server(tmp_path: Path, make_fake: Callable[..., FakeKube]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = make_fake()
    gone.url = f"http://127.0.0.1:{port}"  # nothing listens there
    result = cluster("status", gone.kubeconfig(tmp_path / "kubeconfig"))
    assert result.exit_code == 1
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{port}" in result.output


def test_no_kubeconfig_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = invoke("cluster", "status", "-k", "dev", "--renderer", "python")
    assert result.exit_code == 1
    assert "no Kubernetes cluster configured" in result.output


def test_wrong_credentials(fake: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig", token="stale")
    result = cluster("status", kubeconfig)
    assert result.exit_code == 1
    assert "did not accept the credentials" in result.output
