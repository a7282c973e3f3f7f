"""Package storage: immutable, content-addressed service-version zips.

A package is a zip archive identified by its content hash (a sha256 hex digest, computed
elsewhere). Stores implement :class:`PackageStore`; :func:`materialize` unpacks a package into
a local cache directory that concurrent processes can share.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "PackageNotFound",
    "PackageStore",
    "materialize",
    "safe_extract",
    "validate_hash",
]

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_DRIVE_RE = re.compile(r"[A-Za-z]:")


class PackageNotFound(KeyError):
    """No package with the requested content hash is stored."""

    def __init__(self, content_hash: str) -> None:
        super().__init__(content_hash)
        self.content_hash = content_hash

    def __str__(self) -> str:
        return f"package {self.content_hash} not found"


@runtime_checkable
class PackageStore(Protocol):
    """Blob storage for package zips, keyed by content hash."""

    def put(self, content_hash: str, data: bytes) -> None:
        """Store ``data`` under ``content_hash``; storing an existing hash again is a no-op."""
        ...

    def get(self, content_hash: str) -> bytes:
        """Return the package bytes; raise :class:`PackageNotFound` if absent."""
        ...

    def exists(self, content_hash: str) -> bool:
        """Return whether a package with ``content_hash`` is stored."""
        ...


def validate_hash(content_hash: str) -> str:
    """Return ``content_hash`` if it is 64 lowercase hex characters, else raise ``ValueError``."""
    if not isinstance(content_hash, str) or not _HASH_RE.fullmatch(content_hash):
        raise ValueError(
            f"invalid content hash {content_hash!r}: expected a sha256 digest "
            "as 64 lowercase hex characters"
        )
    return content_hash


def _check_member(name: str) -> None:
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or _DRIVE_RE.match(normalised) or ".." in normalised.split("/"):
        raise ValueError(f"refusing unsafe zip entry {name!r}: absolute or contains '..'")


def safe_extract(data: bytes, dest: Path) -> None:
    """Unpack the zip ``data`` into ``dest``.

    Every entry is checked before anything is written: absolute names and names with a
    ``..`` segment raise ``ValueError``. A corrupt archive raises ``zipfile.BadZipFile``.
    """
    with zipfile.ZipFile(BytesIO(data)) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info.filename)
        zf.extractall(dest, members)


def materialize(store: PackageStore, content_hash: str, cache_dir: Path) -> Path:
    """Return ``cache_dir/<content_hash>/`` holding the unpacked package.

    An existing directory is returned at once without touching the store. Otherwise the
    package is fetched and unpacked into a temporary directory beside the target, which is
    then renamed into place atomically; when several processes race on the same hash, one
    rename wins and the others discard their copies and return the winner's.
    """
    validate_hash(content_hash)
    cache_dir = Path(cache_dir)
    target = cache_dir / content_hash
    if target.is_dir():
        return target
    data = store.get(content_hash)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{content_hash}.", suffix=".tmp", dir=cache_dir))
    try:
        safe_extract(data, tmp)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
