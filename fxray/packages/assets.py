"""Assets: files a project stores on the platform (inputs for services, reports, models, ...).

An asset is named by its project and a relative ``path`` (``/``-separated, at most 512
characters, no ``..``, no absolute paths, no control characters). Storing one through
:meth:`fxray.Platform.upload_asset` publishes a ``fxray.asset.uploaded`` event, so services
linked to that type run on each new file (see ``docs/events.md``).

Two stores implement :class:`AssetStore`: :class:`LocalAssetStore` (the embedded default: a
folder with content-addressed blobs and an SQLite index) and :class:`S3AssetStore` (objects
``assets/<project>/<path>`` in the platform's bucket).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import mimetypes
import os
import re
import sqlite3
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote

from minio.error import S3Error

from fxray.packages.s3 import MISSING_CODES, S3Bucket

__all__ = [
    "ASSET_SOURCE",
    "MAX_PATH_LENGTH",
    "AssetInfo",
    "AssetNotFound",
    "AssetStore",
    "InvalidAssetPath",
    "LocalAssetStore",
    "S3AssetStore",
    "path_problems",
    "validate_path",
    "validate_prefix",
]

ASSET_SOURCE = "fxray/assets"
"""The ``source`` of ``fxray.asset.uploaded`` events."""
MAX_PATH_LENGTH = 512
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_BYTES = 1024 * 1024
_SPOOL_BYTES = 8 * 1024 * 1024
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DRIVE_RE = re.compile(r"[A-Za-z]:")

Data = bytes | bytearray | memoryview | BinaryIO


class AssetNotFound(KeyError):
    """No asset is stored under that project and path."""

    def __init__(self, project: str, path: str) -> None:
        super().__init__(f"{project}/{path}")
        self.project = project
        self.path = path

    def __str__(self) -> str:
        return f"asset {self.path!r} of project {self.project!r} not found"


class InvalidAssetPath(ValueError):
    """An asset path (or project name, or prefix) that is refused; ``problems`` says why."""

    def __init__(self, problems: builtins.list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class AssetInfo:
    """What is stored under one path."""

    project: str
    path: str
    size: int
    sha256: str
    content_type: str
    uploaded_at: float
    etag: str | None = None
    event_id: str | None = None  # the fxray.asset.uploaded event (set by Platform.upload_asset)

    @property
    def url(self) -> str:
        """The API path that downloads it."""
        return f"/api/v1/projects/{self.project}/assets/{quote(self.path, safe='/')}"

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of its ``fxray.asset.uploaded`` event."""
        return {
            "project": self.project,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "url": self.url,
        }


@runtime_checkable
class AssetStore(Protocol):
    """Files per project, by relative path."""

    def put(
        self, project: str, path: str, data: Data, content_type: str | None = None
    ) -> AssetInfo:
        """Store ``data`` (bytes or a binary stream) under ``path``, replacing what was there."""
        ...

    def stat(self, project: str, path: str) -> AssetInfo:
        """The asset's description; raise :class:`AssetNotFound` if absent."""
        ...

    def open(self, project: str, path: str) -> tuple[AssetInfo, Iterator[bytes]]:
        """The description and the bytes in chunks; raise :class:`AssetNotFound` if absent."""
        ...

    def get(self, project: str, path: str) -> bytes:
        """All the bytes; raise :class:`AssetNotFound` if absent."""
        ...

    def list(self, project: str, prefix: str = "") -> builtins.list[AssetInfo]:
        """The project's assets whose path starts with ``prefix``, by path."""
        ...

    def delete(self, project: str, path: str) -> bool:
        """Remove the asset; False if there was none."""
        ...


# -- names ------------------------------------------------------------------------------------


def _char_problems(text: str, what: str) -> builtins.list[str]:
    problems = []
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        problems.append(f"{what} contains a control character")
    if "\\" in text:
        problems.append(f"{what} contains a backslash (use '/')")
    if text.startswith("/") or _DRIVE_RE.match(text):
        problems.append(f"{what} must be relative, not absolute")
    return problems


def path_problems(path: Any) -> builtins.list[str]:
    """Why ``path`` cannot name an asset ([] if it can)."""
    if not isinstance(path, str) or not path:
        return ["the path must be a non-empty string"]
    problems = []
    if len(path) > MAX_PATH_LENGTH:
        problems.append(f"the path is longer than {MAX_PATH_LENGTH} characters")
    problems += _char_problems(path, "the path")
    segments = path.split("/")
    if any(s in (".", "..") for s in segments):
        problems.append("the path cannot contain '.' or '..' segments")
    if not path.startswith("/") and "" in segments:
        problems.append("the path cannot contain empty segments ('//' or a trailing '/')")
    return problems


def validate_path(project: str, path: str) -> str:
    """Return ``path`` if ``project`` and ``path`` name an asset; else raise InvalidAssetPath."""
    problems = [] if _PROJECT_RE.fullmatch(str(project)) else [f"invalid project {project!r}"]
    problems += path_problems(path)
    if problems:
        raise InvalidAssetPath(problems)
    return path


def validate_prefix(project: str, prefix: str) -> str:
    """Return ``prefix`` (``""``, or a path start such as ``"reports/2026-"`` or ``"in/"``)."""
    if not prefix:
        validate_path(project, "x")
        return ""
    trimmed = prefix[:-1] if prefix.endswith("/") else prefix
    try:
        validate_path(project, trimmed or "/")
    except InvalidAssetPath as exc:
        problems = [p.replace("the path", "the prefix") for p in exc.problems]
        raise InvalidAssetPath(problems) from None
    return prefix


def _content_type(path: str, given: str | None) -> str:
    return given or mimetypes.guess_type(path)[0] or DEFAULT_CONTENT_TYPE


def _chunks(data: Data) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    while chunk := data.read(CHUNK_BYTES):
        yield chunk


def _spool(data: Data) -> tuple[BinaryIO, int, str]:
    """``data`` as a readable stream at its start, its size and its sha256."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        return io.BytesIO(raw), len(raw), hashlib.sha256(raw).hexdigest()
    digest, size = hashlib.sha256(), 0
    if data.seekable():
        start = data.tell()
        for chunk in _chunks(data):
            digest.update(chunk)
            size += len(chunk)
        data.seek(start)
        return data, size, digest.hexdigest()
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - returned
    for chunk in _chunks(data):
        digest.update(chunk)
        size += len(chunk)
        spool.write(chunk)
    spool.seek(0)
    return spool, size, digest.hexdigest()  # type: ignore[return-value]


# -- local folder -----------------------------------------------------------------------------


_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    project TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (project, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS assets_sha256 ON assets (sha256);
"""
_COLUMNS = "project, path, size, sha256, content_type, uploaded_at"


class LocalAssetStore(AssetStore):
    """Assets in a folder: each distinct content once as ``blobs/<sha256>``, and an SQLite
    index of ``(project, path)``. Writes are atomic; a blob goes when no path uses it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalAssetStore({str(self.root)!r})"

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.root / "index.db", timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        return conn

    def _blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    @staticmethod
    def _info(row: tuple[Any, ...]) -> AssetInfo:
        project, path, size, sha256, content_type, uploaded_at = row
        return AssetInfo(project, path, size, sha256, content_type, uploaded_at, etag=sha256)

    def put(
        self, project: str, path: str, data: Data, content_type: str | None = None
    ) -> AssetInfo:
        validate_path(project, path)
        blobs = self.root / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=".tmp", dir=blobs)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as f:
                for chunk in _chunks(data):
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            sha256 = digest.hexdigest()
            info = AssetInfo(
                project,
                path,
                size,
                sha256,
                _content_type(path, content_type),
                time.time(),
                etag=sha256,
            )
            with closing(self._connect()) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    blob = self._blob(sha256)
                    blob.parent.mkdir(exist_ok=True)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, blob)
                    old = conn.execute(
                        "SELECT sha256 FROM assets WHERE project = ? AND path = ?", (project, path)
                    ).fetchone()
                    conn.execute(
                        f"INSERT OR REPLACE INTO assets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                        (project, path, size, sha256, info.content_type, info.uploaded_at),
                    )
                    if old is not None and old[0] != sha256:
                        self._drop_unused(conn, old[0])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        finally:
            Path(tmp).unlink(missing_ok=True)
        return info

    def _drop_unused(self, conn: sqlite3.Connection, sha256: str) -> None:
        used = conn.execute("SELECT 1 FROM assets WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        if used is None:
            self._blob(sha256).unlink(missing_ok=True)

    def stat(self, project: str, path: str) -> AssetInfo:
        validate_path(project, path)
        with closing(self._connect()) as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM assets WHERE project = ? AND path = ?", (project, path)
            ).fetchone()
        if row is None:
            raise AssetNotFound(project, path)
        return self._info(row)

    def open(self, project: str, path: str) -> tuple[AssetInfo, Iterator[bytes]]:
        info = self.stat(project, path)
        try:
            f = self._blob(info.sha256).open("rb")  # stays readable if the blob goes meanwhile
        except FileNotFoundError:
            raise AssetNotFound(project, path) from None

        def chunks() -> Iterator[bytes]:
            with f:
                yield from _chunks(f)

        return info, chunks()

    def get(self, project: str, path: str) -> bytes:
        return b"".join(self.open(project, path)[1])

    def list(self, project: str, prefix: str = "") -> builtins.list[AssetInfo]:
        validate_prefix(project, prefix)
        with closing(self._connect()) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM assets WHERE project = ? AND substr(path, 1, ?) = ? "
                "ORDER BY path",
                (project, len(prefix), prefix),
            ).fetchall()
        return [self._info(row) for row in rows]

    def delete(self, project: str, path: str) -> bool:
        validate_path(project, path)
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "DELETE FROM assets WHERE project = ? AND path = ? RETURNING sha256",
                    (project, path),
                ).fetchone()
                if row is not None:
                    self._drop_unused(conn, row[0])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return row is not None


# -- S3 ---------------------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


class S3AssetStore(S3Bucket, AssetStore):
    """Assets as objects ``<prefix><project>/<path>`` in a bucket, with their sha256 and upload
    time in the object's metadata. Picklable like :class:`~fxray.packages.s3.S3PackageStore`."""

    DEFAULT_PREFIX = "assets/"

    def key(self, project: str, path: str) -> str:
        return f"{self.prefix}{project}/{path}"

    def _info(self, project: str, path: str, headers: Any, size: int | None = None) -> AssetInfo:
        uploaded = _header(headers, "x-amz-meta-uploaded-at")
        if uploaded is None:
            modified = _header(headers, "last-modified")
            uploaded_at = parsedate_to_datetime(modified).timestamp() if modified else 0.0
        else:
            uploaded_at = float(uploaded)
        etag = _header(headers, "etag")
        return AssetInfo(
            project,
            path,
            int(_header(headers, "content-length") or 0) if size is None else size,
            _header(headers, "x-amz-meta-sha256") or "",
            _header(headers, "content-type") or DEFAULT_CONTENT_TYPE,
            uploaded_at,
            etag=etag.strip('"') if etag else None,
        )

    def put(
        self, project: str, path: str, data: Data, content_type: str | None = None
    ) -> AssetInfo:
        validate_path(project, path)
        stream, size, sha256 = _spool(data)
        uploaded_at = time.time()
        kind = _content_type(path, content_type)
        self.ensure_bucket()
        result = self.client.put_object(
            self.bucket,
            self.key(project, path),
            stream,
            size,
            content_type=kind,
            metadata={"sha256": sha256, "uploaded-at": repr(uploaded_at)},
        )
        etag = result.etag.strip('"') if result.etag else None
        return AssetInfo(project, path, size, sha256, kind, uploaded_at, etag=etag)

    def stat(self, project: str, path: str) -> AssetInfo:
        validate_path(project, path)
        return self._stat(project, path)

    def _stat(self, project: str, path: str) -> AssetInfo:
        try:
            found = self.client.stat_object(self.bucket, self.key(project, path))
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise AssetNotFound(project, path) from None
            raise
        return self._info(project, path, found.metadata, found.size)

    def open(self, project: str, path: str) -> tuple[AssetInfo, Iterator[bytes]]:
        validate_path(project, path)
        try:
            response = self.client.get_object(self.bucket, self.key(project, path))
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise AssetNotFound(project, path) from None
            raise
        info = self._info(project, path, response.headers)

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(CHUNK_BYTES)
            finally:
                response.close()
                response.release_conn()

        return info, chunks()

    def get(self, project: str, path: str) -> bytes:
        return b"".join(self.open(project, path)[1])

    def list(self, project: str, prefix: str = "") -> builtins.list[AssetInfo]:
        validate_prefix(project, prefix)
        start = self.key(project, "")
        found = []
        try:
            objects = self.client.list_objects(
                self.bucket, prefix=start + prefix, recursive=True, include_user_meta=True
            )
            for obj in objects:
                name = obj.object_name or ""
                if obj.is_dir or name.endswith("/"):
                    continue
                path = name[len(start) :]
                meta = obj.metadata or {}
                if _header(meta, "x-amz-meta-sha256") is None:  # a server that lists no metadata
                    try:
                        found.append(self._stat(project, path))
                    except AssetNotFound:  # deleted meanwhile
                        pass
                    continue
                found.append(self._info(project, path, meta, obj.size))
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                return []
            raise
        return sorted(found, key=lambda info: info.path)

    def delete(self, project: str, path: str) -> bool:
        validate_path(project, path)
        key = self.key(project, path)
        if not self.has(key):
            return False
        self.client.remove_object(self.bucket, key)
        return True
