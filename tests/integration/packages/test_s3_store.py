"""S3PackageStore against a real S3 server (``FXRAY_TEST_S3_ENDPOINT``)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
from minio.error import S3Error

from fxray.packages import PackageNotFound, PackageStore, materialize
from fxray.packages.s3 import PackageCorrupted, S3PackageStore
from fxray.services import load_package
from tests.integration.packages.conftest import client_for


def make_store(s3: dict[str, Any]) -> S3PackageStore:
    return S3PackageStore(
        s3["s3_endpoint"],
        s3["s3_access_key"],
        s3["s3_secret_key"],
        s3["s3_bucket"],
        secure=s3["s3_secure"],
    )


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def service_package(tmp_path: Path) -> tuple[str, bytes]:
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"name": "svc", "entrypoint": "main.py"}))
    (folder / "main.py").write_text("print('hi')\n")
    package = load_package(folder)
    return package.content_hash, package.to_zip()


def test_put_get_exists(s3: dict[str, Any], tmp_path: Path) -> None:
    store = make_store(s3)
    assert isinstance(store, PackageStore)
    data = make_zip({"a.py": "x = 1\n", "lib/b.py": "y = 2\n"})
    digest = hashlib.sha256(data).hexdigest()
    assert not store.exists(digest)
    with pytest.raises(PackageNotFound):
        store.get(digest)  # the bucket does not even exist yet
    store.put(digest, data)
    assert client_for(s3).bucket_exists(s3["s3_bucket"])
    assert store.exists(digest)
    assert store.get(digest) == data
    store.put(digest, data)  # again: a no-op
    stat = client_for(s3).stat_object(s3["s3_bucket"], f"packages/{digest}.zip")
    assert stat.size == len(data)
    assert stat.metadata["x-amz-meta-sha256"] == digest

    content_hash, zipped = service_package(tmp_path)  # fxray's hash of the package's files
    assert content_hash != hashlib.sha256(zipped).hexdigest()
    store.put(content_hash, zipped)
    assert store.get(content_hash) == zipped
    target = materialize(store, content_hash, tmp_path / "cache")
    assert (target / "main.py").read_text() == "print('hi')\n"


def test_put_refuses_data_that_does_not_match(s3: dict[str, Any]) -> None:
    store = make_store(s3)
    data = make_zip({"a.py": "x = 1\n"})
    with pytest.raises(ValueError, match="does not match"):
        store.put("0" * 64, data)
    with pytest.raises(ValueError, match="content hash"):
        store.put("../evil", data)
    assert not store.exists("0" * 64)


def test_corrupted_object_is_detected(s3: dict[str, Any], tmp_path: Path) -> None:
    store = make_store(s3)
    content_hash, zipped = service_package(tmp_path)
    store.put(content_hash, zipped)
    client = client_for(s3)
    key = f"packages/{content_hash}.zip"
    recorded = client.stat_object(s3["s3_bucket"], key).metadata["x-amz-meta-sha256"]

    flipped = bytearray(zipped)
    flipped[len(flipped) // 2] ^= 0xFF  # bit rot: the bytes no longer match their sha256
    client.put_object(
        s3["s3_bucket"],
        key,
        io.BytesIO(bytes(flipped)),
        len(flipped),
        metadata={"sha256": recorded},
    )
    with pytest.raises(PackageCorrupted, match="recorded sha256"):
        store.get(content_hash)
    with pytest.raises(PackageCorrupted):
        materialize(store, content_hash, tmp_path / "cache")
    assert not (tmp_path / "cache" / content_hash).exists()

    other = make_zip({"manifest.json": "{}", "main.py": "import os\n"})  # replaced, with a
    client.put_object(  # consistent sha256: the key no longer matches the content
        s3["s3_bucket"],
        key,
        io.BytesIO(other),
        len(other),
        metadata={"sha256": hashlib.sha256(other).hexdigest()},
    )
    with pytest.raises(PackageCorrupted, match="content hash"):
        store.get(content_hash)


def test_pickles_without_a_client(s3: dict[str, Any]) -> None:
    store = make_store(s3)
    data = make_zip({"a.py": "x = 1\n"})
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data)
    assert store._client is not None
    assert set(store.__getstate__()) == {
        "endpoint",
        "access_key",
        "secret_key",
        "bucket",
        "secure",
        "region",
        "prefix",
    }
    clone = pickle.loads(pickle.dumps(store))
    assert clone._client is None and not clone._bucket_ready
    assert (clone.endpoint, clone.bucket, clone.secure) == (store.endpoint, store.bucket, False)
    assert clone.get(digest) == data
    assert clone._client is not None and clone._client is not store._client
    assert s3["s3_secret_key"] not in repr(store)


def test_wrong_credentials_are_refused(s3: dict[str, Any]) -> None:
    if s3["s3_access_key"] is None:
        pytest.skip("the test S3 server takes anonymous requests")
    store = S3PackageStore(s3["s3_endpoint"], s3["s3_access_key"], "wrong-secret", s3["s3_bucket"])
    with pytest.raises(S3Error) as info:
        store.exists("0" * 64)
    assert info.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_client_retries_transient_errors(s3: dict[str, Any]) -> None:
    retries = make_store(s3).client._http.connection_pool_kw["retries"]
    assert retries.total == 5 and 503 in retries.status_forcelist and retries.backoff_factor > 0
