"""Dependency environments shared by the nodes of a cluster, through the package store.

A version's ``requirements.txt`` is installed once per requirements hash
(:func:`fxray.actors.envs.ensure_env`). On one machine that folder is all there is; on a
cluster, each node would install it again from the package index when it first runs the
version, and a node that cannot reach the index could not run it at all. So in cluster mode
the first node to build an environment archives it (``tar.gz``) into the package store under
its requirements hash (``envs/<hash>.tar.gz`` in the S3 bucket, or beside the local packages),
and every other node fetches and unpacks that archive instead of running pip
(:func:`ensure_shared_env`).

Executors prepare their own node (:class:`NodeSetup`): the package cache and the environment
live under the node's home, which is ``FXRAY_NODE_HOME`` when the node's environment sets it,
else the platform's home path.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fxray.actors.envs import READY_MARKER, ensure_env, fill_env_folder
from fxray.packages import PackageStore, validate_hash
from fxray.packages.s3 import S3Bucket

NODE_HOME_ENV = "FXRAY_NODE_HOME"
ARCHIVE_SUFFIX = ".tar.gz"
SHA256_META = "sha256"

EnvSource = Literal["local", "fetched", "built"]


class EnvArchives(Protocol):
    """Built environments, as archives keyed by requirements hash."""

    def get(self, requirements_hash: str) -> bytes | None:
        """The archive, or None if no node has stored it yet."""
        ...

    def put(self, requirements_hash: str, data: bytes) -> None:
        """Store an archive; a hash stored before is kept as it is."""
        ...


class LocalEnvArchives:
    """Archives in a folder (``<packages folder>/envs``): for nodes that share the folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, requirements_hash: str) -> Path:
        return self.root / f"{validate_hash(requirements_hash)}{ARCHIVE_SUFFIX}"

    def get(self, requirements_hash: str) -> bytes | None:
        try:
            return self._path(requirements_hash).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, requirements_hash: str, data: bytes) -> None:
        path = self._path(requirements_hash)
        if path.is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".env-", dir=self.root)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)


class S3EnvArchives(S3Bucket):
    """Archives as objects ``envs/<requirements hash>.tar.gz`` in the packages' bucket, each
    with its sha256 in the object's metadata, checked on every read."""

    DEFAULT_PREFIX = "envs/"

    def key(self, requirements_hash: str) -> str:
        return f"{self.prefix}{validate_hash(requirements_hash)}{ARCHIVE_SUFFIX}"

    def get(self, requirements_hash: str) -> bytes | None:
        try:
            data, headers = self.read(self.key(requirements_hash))
        except KeyError:
            return None
        recorded = headers.get(f"x-amz-meta-{SHA256_META}")
        if recorded is not None and recorded != hashlib.sha256(data).hexdigest():
            return None  # a corrupted archive is built again, never unpacked
        return data

    def put(self, requirements_hash: str, data: bytes) -> None:
        key = self.key(requirements_hash)
        self.ensure_bucket()
        if self.has(key):
            return
        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type="application/gzip",
            metadata={SHA256_META: hashlib.sha256(data).hexdigest()},
        )


def env_archives(store: PackageStore) -> EnvArchives:
    """Where environments are archived, beside the packages of ``store``."""
    from fxray.packages.local import LocalPackageStore
    from fxray.packages.s3 import S3PackageStore

    if isinstance(store, S3PackageStore):
        archives = S3EnvArchives.__new__(S3EnvArchives)
        archives.__setstate__({**store.__getstate__(), "prefix": S3EnvArchives.DEFAULT_PREFIX})
        return archives
    if isinstance(store, LocalPackageStore):
        return LocalEnvArchives(store.root / "envs")
    raise TypeError(f"no environment archives for a {type(store).__name__}")


@dataclass(frozen=True, slots=True)
class SharedEnv:
    """A version's environment on this node, and how it got here."""

    path: Path
    source: EnvSource
    seconds: float

    @property
    def cached(self) -> bool:
        return self.source != "built"


def ensure_shared_env(
    requirements: Sequence[str],
    requirements_hash: str,
    envs_dir: Path,
    archives: EnvArchives,
    *,
    index_url: str | None = None,
    timeout_s: float = 600.0,
) -> SharedEnv:
    """The environment on this node: already here, else fetched from ``archives``, else built
    with pip and archived for the other nodes."""
    started = time.monotonic()
    target = envs_dir / requirements_hash
    if (target / READY_MARKER).exists():
        return SharedEnv(target, "local", time.monotonic() - started)
    data = archives.get(requirements_hash)
    if data is not None:
        _install_archive(data, requirements_hash, envs_dir)
        return SharedEnv(target, "fetched", time.monotonic() - started)
    build = ensure_env(
        requirements, requirements_hash, envs_dir, index_url=index_url, timeout_s=timeout_s
    )
    archives.put(requirements_hash, pack_env(build.path))
    source: EnvSource = "local" if build.cached else "built"
    return SharedEnv(build.path, source, time.monotonic() - started)


def pack_env(path: Path) -> bytes:
    """A folder as a gzipped tar, its entries in name order and relative to the folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in sorted(path.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(path)), recursive=False)
    return buffer.getvalue()


def unpack_env(data: bytes, target: Path) -> None:
    """Unpack an archive made by :func:`pack_env` into ``target``; entries that would land
    outside it (absolute paths, ``..``, links out) raise ``tarfile.TarError``."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(target, filter="data")


def _install_archive(data: bytes, requirements_hash: str, envs_dir: Path) -> None:
    """Unpack into a staging folder and rename it into place, under the hash's file lock."""
    fill_env_folder(requirements_hash, envs_dir, lambda staging: unpack_env(data, staging))


def node_home(default: str | Path) -> Path:
    """This node's home for caches: ``FXRAY_NODE_HOME`` if its environment sets it."""
    return Path(os.environ.get(NODE_HOME_ENV) or default)


@dataclass(frozen=True, slots=True)
class NodeSetup:
    """What an executor prepares on its own node in cluster mode (it travels to the actor)."""

    home: str  # the platform's home: the node's unless it sets FXRAY_NODE_HOME
    requirements: tuple[str, ...] = ()
    requirements_hash: str = ""
    index_url: str | None = None
    archives: EnvArchives | None = None

    def package_cache_dir(self) -> Path:
        return node_home(self.home) / "cache" / "packages"

    def envs_dir(self) -> Path:
        return node_home(self.home) / "envs"

    def ensure_env(self) -> SharedEnv | None:
        """The version's environment on this node (None: it has no requirements)."""
        if not self.requirements or self.archives is None:
            return None
        return ensure_shared_env(
            self.requirements,
            self.requirements_hash,
            self.envs_dir(),
            self.archives,
            index_url=self.index_url,
        )


__all__ = [
    "EnvArchives",
    "LocalEnvArchives",
    "NodeSetup",
    "S3EnvArchives",
    "SharedEnv",
    "ensure_shared_env",
    "env_archives",
    "node_home",
    "pack_env",
    "unpack_env",
]
