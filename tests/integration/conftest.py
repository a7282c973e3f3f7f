"""Integration fixtures: one real Ray instance per test session, a fresh platform per test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from fxray import Platform, Settings
from fxray.platform import apply_ray_env_defaults
from tests.pg_server import PrivatePostgres, postgres_bin_dir

apply_ray_env_defaults()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


def start_session_ray() -> None:
    """The tests' local Ray (also started again by modules that needed a cluster of their
    own, see tests/integration/cluster/ray_clusters.py)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024 * 1024,
        namespace="fxray-tests",
        log_to_driver=False,
    )


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray on this machine, started once (no dashboard), shut down at the end."""
    started = False
    own_tmp: str | None = None
    if not ray.is_initialized():
        if "RAY_TMPDIR" not in os.environ:
            own_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fxr", dir="/tmp")
        start_session_ray()
        started = True
    yield
    if started:
        ray.shutdown()
    if own_tmp:
        shutil.rmtree(own_tmp, ignore_errors=True)


def stop_process(process: subprocess.Popen[Any], wait_s: float = 60.0) -> None:
    """End a process a test started: SIGTERM (a clean shutdown), SIGKILL after ``wait_s``."""
    process.terminate()
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_service(root: Path, name: str, scripts: dict[str, str], **manifest: Any) -> Path:
    """Write a service folder: ``scripts`` maps file names to code; ``manifest`` adds fields.

    Extra files (requirements.txt, secrets.json, ...) go in ``scripts`` too.
    """
    folder = root / f"{name}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    steps = [f for f in scripts if f.endswith(".py")]
    body = {"name": name, "execution_order": steps, **manifest}
    (folder / "manifest.json").write_text(json.dumps(body))
    for file_name, text in scripts.items():
        (folder / file_name).write_text(text)
    return folder


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL server of this test's own, free to stop and start (never the shared
    one). PostgreSQL not installed: a failure under CI or FXRAY_REQUIRE_SERVERS, else a skip."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        what = "PostgreSQL's binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("FXRAY_REQUIRE_SERVERS") or os.environ.get("CI") == "true":
            pytest.fail(what, pytrace=False)
        pytest.skip(what)
    with PrivatePostgres(bin_dir) as server:
        server.start()
        yield server


@pytest.fixture
def make_platform(ray_session: None, tmp_path: Path) -> Iterator[Callable[..., Platform]]:
    """Start platforms on embedded defaults, each with its own home and actor names."""
    started: list[Platform] = []

    def make(**overrides: Any) -> Platform:
        settings = Settings(
            home=tmp_path / f"home-{len(started)}",
            instance=f"t{uuid.uuid4().hex[:8]}",
            **overrides,
        )
        platform = Platform(settings).start()
        started.append(platform)
        return platform

    yield make
    for platform in started:
        platform.stop()


@pytest.fixture
def platform(make_platform: Callable[..., Platform]) -> Platform:
    return make_platform()


@pytest.fixture
def service_dir(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, scripts: dict[str, str], **manifest: Any) -> Path:
        return write_service(tmp_path / "services", name, scripts, **manifest)

    return make
