"""A :class:`~fxray.packages.PackageStore` in an S3 bucket (MinIO or any S3-compatible server).

Packages are objects ``packages/<content hash>.zip``; each carries its sha256 in the object's
metadata. Every read is verified: the bytes must match that sha256, and the key must be the
sha256 of the bytes or fxray's content hash of the zip's files
(:attr:`fxray.services.ServicePackage.content_hash`). Executors cache what they fetch by content
hash (:func:`fxray.packages.materialize`), so a fresh node needs only the bucket.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error
from urllib3.util import Retry, Timeout

from fxray.packages import PackageNotFound, PackageStore, validate_hash

__all__ = ["MISSING_CODES", "PackageCorrupted", "S3Bucket", "S3PackageStore"]

MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
"""S3 error codes that mean "no such object"."""
SHA256_META = "sha256"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0


class PackageCorrupted(RuntimeError):
    """A stored package does not match its content hash (or its recorded sha256)."""

    def __init__(self, content_hash: str, reason: str) -> None:
        super().__init__(f"package {content_hash} is corrupted: {reason}")
        self.content_hash = content_hash


def _http_client() -> urllib3.PoolManager:
    """Connections with retries (back-off) on connection errors and 5xx/429 answers."""
    retries = Retry(
        total=5,
        connect=5,
        read=3,
        backoff_factor=0.2,
        status_forcelist=(429, 500, 502, 503, 504),
        raise_on_status=False,
    )
    return urllib3.PoolManager(
        timeout=Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=certifi.where(),
        retries=retries,
    )


class S3Bucket:
    """A handle on one bucket: picklable (only its address and credentials travel), with a
    ``minio`` client made lazily in each process and the bucket created on first write.
    Subclasses keep their objects under ``prefix`` (default: :attr:`DEFAULT_PREFIX`)."""

    DEFAULT_PREFIX = ""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str = "fxray",
        *,
        secure: bool = False,
        region: str | None = None,
        prefix: str | None = None,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both the S3 access key and the secret key, or neither")
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.secure = secure
        self.region = region
        self.prefix = self.DEFAULT_PREFIX if prefix is None else prefix
        self._client: Minio | None = None
        self._bucket_ready = False

    def __getstate__(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": self.bucket,
            "secure": self.secure,
            "region": self.region,
            "prefix": self.prefix,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = None
        self._bucket_ready = False

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{type(self).__name__}({scheme}://{self.endpoint}/{self.bucket})"

    @property
    def client(self) -> Minio:
        """The ``minio`` client of this process, made on first use."""
        if self._client is None:
            self._client = Minio(
                self.endpoint,
                access_key=self.access_key,
                secret_key=self.secret_key,
                secure=self.secure,
                region=self.region,
                http_client=_http_client(),
            )
        return self._client

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (once per process)."""
        if self._bucket_ready:
            return
        client = self.client
        if not client.bucket_exists(self.bucket):
            try:
                client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:  # another process made it meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    def read(self, key: str) -> tuple[bytes, dict[str, str]]:
        """An object's bytes and response headers (lower-case names); ``KeyError`` if absent."""
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise KeyError(key) from None
            raise
        try:
            data = response.read()
            headers = {name.lower(): value for name, value in response.headers.items()}
        finally:
            response.close()
            response.release_conn()
        return data, headers

    def has(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                return False
            raise
        return True


class S3PackageStore(S3Bucket, PackageStore):
    """Packages as objects ``<prefix><content_hash>.zip`` in a bucket, verified on every read."""

    DEFAULT_PREFIX = "packages/"

    def key(self, content_hash: str) -> str:
        """The object key of a package."""
        return f"{self.prefix}{validate_hash(content_hash)}.zip"

    def put(self, content_hash: str, data: bytes) -> None:
        key = self.key(content_hash)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"package data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if not _matches(content_hash, data, digest):
            raise ValueError(
                f"the data does not match content hash {content_hash}: it is neither the "
                "sha256 of the bytes nor the content hash of the zip's files"
            )
        self.ensure_bucket()
        if self.has(key):
            return
        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type="application/zip",
            metadata={SHA256_META: digest},
        )

    def get(self, content_hash: str) -> bytes:
        key = self.key(content_hash)
        try:
            data, headers = self.read(key)
        except KeyError:
            raise PackageNotFound(content_hash) from None
        digest = hashlib.sha256(data).hexdigest()
        recorded = headers.get(f"x-amz-meta-{SHA256_META}")
        if recorded is not None and recorded != digest:
            raise PackageCorrupted(content_hash, "its bytes do not match their recorded sha256")
        if not _matches(content_hash, data, digest):
            raise PackageCorrupted(content_hash, "its bytes do not match the content hash")
        return data

    def exists(self, content_hash: str) -> bool:
        return self.has(self.key(content_hash))


def _matches(content_hash: str, data: bytes, digest: str) -> bool:
    """Is ``content_hash`` the sha256 of ``data`` or the content hash of its zip's files?"""
    if digest == content_hash:
        return True
    from fxray.services.package import compute_content_hash

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    except Exception:  # not a readable zip (bad CRC, truncated, bad deflate data, ...)
        return False
    return compute_content_hash(files) == content_hash
