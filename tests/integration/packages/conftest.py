"""S3 fixtures: the test S3 server's address from ``FXRAY_TEST_S3_*`` (``scripts/testinfra.sh``
starts one; point the variables at a real MinIO or S3 to use that instead), a fresh bucket per
test, emptied and removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject


def s3_settings() -> dict[str, Any]:
    """Settings overrides that reach the test S3 server; fails under CI, else skips, if unset."""
    endpoint = os.environ.get("FXRAY_TEST_S3_ENDPOINT", "")
    if not endpoint:
        what = "FXRAY_TEST_S3_ENDPOINT is not set (run scripts/testinfra.sh up)"
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail(f"{what} (FXRAY_REQUIRE_SERVERS is set)", pytrace=False)
        pytest.skip(what)
    return {
        "s3_endpoint": endpoint,
        "s3_access_key": os.environ.get("FXRAY_TEST_S3_ACCESS_KEY") or None,
        "s3_secret_key": os.environ.get("FXRAY_TEST_S3_SECRET_KEY") or None,
        "s3_secure": os.environ.get("FXRAY_TEST_S3_SECURE", "") in ("1", "true"),
    }


def client_for(settings: dict[str, Any]) -> Minio:
    return Minio(
        settings["s3_endpoint"],
        access_key=settings["s3_access_key"],
        secret_key=settings["s3_secret_key"],
        secure=settings["s3_secure"],
    )


def drop_bucket(client: Minio, bucket: str) -> None:
    """Empty and remove a bucket (if it exists)."""
    if not client.bucket_exists(bucket):
        return
    names = [o.object_name or "" for o in client.list_objects(bucket, recursive=True)]
    errors = list(client.remove_objects(bucket, [DeleteObject(n) for n in names if n]))
    assert not errors, errors
    # A file-system-backed gateway (JuiceFS) keeps the emptied folders as "dir/" objects.
    folders = {name[: i + 1] for name in names for i, ch in enumerate(name) if ch == "/"}
    for folder in sorted(folders, key=len, reverse=True):
        client.remove_object(bucket, folder)
    client.remove_bucket(bucket)


@pytest.fixture
def s3() -> Iterator[dict[str, Any]]:
    """Overrides for a Settings on the test S3 server, with a bucket of its own (not created:
    the stores create it)."""
    settings = {**s3_settings(), "s3_bucket": f"fxray-test-{uuid.uuid4().hex[:12]}"}
    yield settings
    drop_bucket(client_for(settings), settings["s3_bucket"])
