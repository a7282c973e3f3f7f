"""Dependency environments shared through the package store: the first node builds and
archives, the next fetches and unpacks without pip (pip is replaced by a fake that records
its calls; the real pip path is covered by the cluster integration test)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from fxray.actors import envs
from fxray.cluster.envstore import (
    LocalEnvArchives,
    NodeSetup,
    S3EnvArchives,
    ensure_shared_env,
    env_archives,
    node_home,
    pack_env,
    unpack_env,
)
from fxray.packages.local import LocalPackageStore
from fxray.packages.s3 import S3PackageStore

REQS = ["tinylib==1.0"]
HASH = hashlib.sha256(b"tinylib==1.0").hexdigest()


@pytest.fixture
def pip_runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A fake ``pip install --target``: writes a module and records where."""
    runs: list[Path] = []

    def fake_pip(requirements: list[str], target: Path, index_url: str | None, timeout_s: float):
        runs.append(target)
        (target / "tinylib").mkdir()
        (target / "tinylib" / "__init__.py").write_text("VERSION = '1.0'\n")
        (target / "bin").mkdir()
        (target / "bin" / "tiny").write_text("#!/bin/sh\n")
        (target / "bin" / "tiny").chmod(0o755)

    monkeypatch.setattr(envs, "_pip_install", fake_pip)
    return runs


def test_the_first_node_builds_and_archives_the_next_fetches_without_pip(
    tmp_path: Path, pip_runs: list[Path]
) -> None:
    archives = LocalEnvArchives(tmp_path / "store" / "envs")
    first = ensure_shared_env(REQS, HASH, tmp_path / "node-a" / "envs", archives)
    assert first.source == "built" and not first.cached
    assert len(pip_runs) == 1
    assert archives.get(HASH) is not None

    second = ensure_shared_env(REQS, HASH, tmp_path / "node-b" / "envs", archives)
    assert second.source == "fetched" and second.cached
    assert len(pip_runs) == 1  # no pip on the second node
    assert (second.path / "tinylib" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert (second.path / "bin" / "tiny").stat().st_mode & 0o111  # still executable
    assert (second.path / envs.READY_MARKER).exists()

    again = ensure_shared_env(REQS, HASH, tmp_path / "node-b" / "envs", archives)
    assert again.source == "local" and again.path == second.path


def test_an_archive_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        unpack_env(buffer.getvalue(), tmp_path / "target")
    assert not (tmp_path / "escaped.txt").exists()


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg" / "sub").mkdir(parents=True)
    (source / "pkg" / "sub" / "m.py").write_text("x = 1\n")
    unpack_env(pack_env(source), tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "sub" / "m.py").read_text() == "x = 1\n"


def test_archives_live_beside_the_packages(tmp_path: Path) -> None:
    local = env_archives(LocalPackageStore(tmp_path / "packages"))
    assert isinstance(local, LocalEnvArchives)
    assert local.root == tmp_path / "packages" / "envs"
    s3 = env_archives(S3PackageStore("127.0.0.1:9", "key", "secret", bucket="fx"))
    assert isinstance(s3, S3EnvArchives)
    assert (s3.bucket, s3.endpoint, s3.prefix) == ("fx", "127.0.0.1:9", "envs/")
    assert s3.key(HASH) == f"envs/{HASH}.tar.gz"


def test_a_node_keeps_its_caches_under_its_own_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = NodeSetup(home=str(tmp_path / "platform"))
    monkeypatch.delenv("FXRAY_NODE_HOME", raising=False)
    assert setup.package_cache_dir() == tmp_path / "platform" / "cache" / "packages"
    monkeypatch.setenv("FXRAY_NODE_HOME", str(tmp_path / "node"))
    assert node_home("/elsewhere") == tmp_path / "node"
    assert setup.envs_dir() == tmp_path / "node" / "envs"
    assert setup.ensure_env() is None  # no requirements: nothing to prepare
