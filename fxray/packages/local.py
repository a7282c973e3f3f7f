"""A :class:`~fxray.packages.PackageStore` on the local filesystem."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fxray.packages import PackageNotFound, PackageStore, validate_hash

__all__ = ["LocalPackageStore"]


class LocalPackageStore(PackageStore):
    """Packages as ``root/<content_hash>.zip``, each written atomically.

    It holds only its root path, so it pickles cheaply into Ray workers on the same host
    (or on hosts sharing the directory).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalPackageStore({str(self.root)!r})"

    def _path(self, content_hash: str) -> Path:
        return self.root / f"{validate_hash(content_hash)}.zip"

    def put(self, content_hash: str, data: bytes) -> None:
        path = self._path(content_hash)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"package data must be bytes, not {type(data).__name__}")
        if path.is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{content_hash}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, content_hash: str) -> bytes:
        try:
            return self._path(content_hash).read_bytes()
        except FileNotFoundError:
            raise PackageNotFound(content_hash) from None

    def exists(self, content_hash: str) -> bool:
        return self._path(content_hash).is_file()
