"""Fixtures for ``fxray cluster`` against the fake Kubernetes API server (a test double)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fxray.cli import app
from fxray.cluster import progress
from tests.integration.cluster.fake_kube import FakeKube
from tests.kuberay_schemas import crds_dir

SECRETS = {
    "fxray-postgres": {"url": "postgresql://fxray:pw@postgres:5432/fxray"},
    "fxray-s3": {"access-key": "access", "secret-key": "secret"},
    "fxray-admin": {"key": "admin-key"},
}


@pytest.fixture(autouse=True)
def quick_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renew pod watches every second, so a finished wait is seen quickly."""
    monkeypatch.setattr(progress, "WATCH_SLICE_S", 1)
    monkeypatch.setattr(progress, "CHECK_EVERY_S", 0.2)
    monkeypatch.delenv("FXRAY_DEBUG", raising=False)
    monkeypatch.delenv("FXRAY_CLUSTER_OVERLAY", raising=False)


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeKube]]:
    started: list[FakeKube] = []

    crds_dir()  # the fake checks RayClusters against the CRDs: skip (or, in CI, fail) early

    def make(**options: object) -> FakeKube:
        fake = FakeKube(**options).start()  # type: ignore[arg-type]
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fake(make_fake: Callable[..., FakeKube]) -> FakeKube:
    return make_fake()


@pytest.fixture
def kubeconfig(fake: FakeKube, tmp_path: Path) -> Path:
    return fake.kubeconfig(tmp_path / "kubeconfig")


def add_secrets(fake: FakeKube, namespace: str) -> None:
    """The Secrets an operator creates before applying (docs/deploy.md)."""
    if fake.get("namespaces", namespace) is None:
        fake.put_object("", "v1", "namespaces", {"metadata": {"name": namespace}})
    for name, data in SECRETS.items():
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        fake.put_object(
            "",
            "v1",
            "secrets",
            {"metadata": {"name": name, "namespace": namespace}, "data": encoded},
        )


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def cluster(command: str, kubeconfig: Path, *args: object, overlay: str = "dev") -> Result:
    """``fxray cluster <command> -k <overlay> --kubeconfig ... --renderer python <args>``."""
    return invoke(
        "cluster", command, "-k", overlay, "--kubeconfig", kubeconfig, "--renderer", "python", *args
    )
