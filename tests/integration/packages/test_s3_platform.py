"""A version's package lives in S3: it survives a platform restart on a new home folder, and a
fresh executor (empty package cache) fetches it from the bucket, not from the deploying process
or any local folder."""

from __future__ import annotations

import io
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from fxray import Platform, Settings
from tests.integration.conftest import write_service
from tests.integration.packages.conftest import client_for

SCRIPT = """\
from fxray import context

context.log.info("fetched from S3, hello %s", context.params.get("name"))
"""


class GetWatcher:
    """Records the keys of objects read from a bucket (MinIO bucket notifications)."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.keys: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        events = self.client.listen_bucket_notification(
            self.bucket, events=["s3:ObjectAccessed:Get"]
        )
        with events:
            for event in events:
                with self._seen:
                    self.keys += [r["s3"]["object"]["key"] for r in event.get("Records", [])]
                    self._seen.notify_all()

    def wait_for(self, key: str, timeout: float) -> bool:
        with self._seen:
            return self._seen.wait_for(lambda: key in self.keys, timeout)

    def ready(self) -> None:
        """Block until the listener demonstrably receives notifications."""
        key = f"probe/{uuid.uuid4().hex}"
        self.client.put_object(self.bucket, key, io.BytesIO(b"probe"), 5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.client.get_object(self.bucket, key).release_conn()
            if self.wait_for(key, 0.5):
                self.client.remove_object(self.bucket, key)
                return
        raise AssertionError("the S3 server sends no bucket notifications")


def test_package_survives_restart_and_is_fetched_from_s3(
    s3: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("ray_session")  # only once S3 is known to be there
    database = f"sqlite:///{tmp_path / 'state.db'}"

    def settings(home: str) -> Settings:
        return Settings(
            home=tmp_path / home,
            instance=f"s3{uuid.uuid4().hex[:8]}",
            database_url=database,
            package_store="s3",
            **s3,
        )

    first = Platform(settings("home-a")).start()
    try:
        folder = write_service(
            tmp_path / "services", "from-s3", {"main.py": SCRIPT}, trigger_events=["test.s3.go"]
        )
        deployment = first.deploy(folder)
        content_hash = deployment.version.content_hash
    finally:
        first.stop()
    shutil.rmtree(tmp_path / "home-a")  # the package cache and anything local are gone
    shutil.rmtree(folder)
    client = client_for(s3)
    key = f"packages/{content_hash}.zip"
    assert client.stat_object(s3["s3_bucket"], key).size > 0

    watcher = GetWatcher(client, s3["s3_bucket"])
    watcher.ready()
    second = Platform(settings("home-b")).start()
    try:
        cache = tmp_path / "home-b" / "cache" / "packages"
        assert not cache.exists() or not any(cache.iterdir())
        event = second.send("test.s3.go", {"name": "Ada"})
        (run,) = second.wait_for_runs(event_id=event["id"], timeout=120)
        assert run.status == "succeeded", run.error
        assert run.version_id == deployment.version.id
        assert any("fetched from S3, hello Ada" in line[3] for line in run.logs)
        assert (cache / content_hash / "main.py").read_text() == SCRIPT
        assert watcher.wait_for(key, 10), watcher.keys  # the executor read the S3 object
        assert second.packages is not None
        assert second.packages._client is None  # ... and this process never touched S3
        assert not (tmp_path / "home-b" / "packages").exists()
    finally:
        second.stop()
