"""The assets API: upload (which publishes fxray.asset.uploaded and so runs linked services),
list, download, delete; roles and path checks. Local assets on SQLite, and assets in S3."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fxray.events import cloudevent as ev
from fxray.packages.assets import LocalAssetStore, S3AssetStore
from tests.integration.api.conftest import ApiHarness, start_api
from tests.integration.conftest import write_service
from tests.integration.packages.conftest import client_for, drop_bucket, s3_settings
from tests.unit.packages.bombs import MIB, lying_bomb

if TYPE_CHECKING:
    from tests.integration.api.conftest import ProjectKeys

ON_UPLOAD = """
from fxray import context
data = context.params
context.log.info("new file %s", data["path"])
context.result = {
    "type": context.event["type"],
    "subject": context.event.get("subject"),
    "path": data["path"],
    "size": data["size"],
    "sha256": data["sha256"],
    "content_type": data["content_type"],
    "url": data["url"],
}
"""


def _upload(
    api: ApiHarness,
    project: str,
    path: str,
    data: bytes,
    headers: dict[str, str],
    content_type: str = "text/csv",
) -> Any:
    return api.client.post(
        f"/api/v1/projects/{project}/assets",
        files={"file": (path.rsplit("/", 1)[-1], data, content_type)},
        data={"path": path},
        headers=headers,
    )


def _link_service(api: ApiHarness, keys: ProjectKeys, root: Path) -> str:
    """A service of the project, linked over the API to its project's uploads."""
    service = f"on-upload-{uuid.uuid4().hex[:8]}"
    folder = write_service(root, service, {"main.py": ON_UPLOAD})
    api.platform.deploy(folder, project=keys.name)
    made = api.client.post(
        "/api/v1/triggers",
        json={
            "pattern": ev.ASSET_UPLOADED,
            "service": service,
            "filters": {"data.project": keys.name, "data.path": "in/*"},
        },
        headers=keys.developer,
    )
    assert made.status_code == 201, made.text
    return service


def _upload_runs_service(api: ApiHarness, tmp_path: Path) -> tuple[ProjectKeys, bytes]:
    keys = api.project("assets")
    service = _link_service(api, keys, tmp_path)
    data = b"order,amount\nA-17,120.5\n"
    answer = _upload(api, keys.name, "in/orders 1.csv", data, keys.developer)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    sha256 = hashlib.sha256(data).hexdigest()
    assert body["path"] == "in/orders 1.csv" and body["project"] == keys.name
    assert body["size"] == len(data) and body["sha256"] == sha256
    assert body["content_type"] == "text/csv"
    assert body["url"] == f"/api/v1/projects/{keys.name}/assets/in/orders%201.csv"

    (run,) = api.platform.wait_for_runs(event_id=body["event_id"], timeout=120)
    assert run.status == "succeeded", run.error
    assert run.service == api.service_id(service, keys)
    assert run.result == {
        "type": "fxray.asset.uploaded",
        "subject": "in/orders 1.csv",
        "path": "in/orders 1.csv",
        "size": len(data),
        "sha256": sha256,
        "content_type": "text/csv",
        "url": body["url"],
    }
    assert any("new file in/orders 1.csv" in line[3] for line in run.logs)

    other = _upload(api, keys.name, "out/report.csv", b"x", keys.developer)  # filtered out
    assert other.status_code == 201
    api.platform.wait_idle(timeout=60)
    assert api.platform.runs(event_id=other.json()["event_id"]) == []
    download = api.client.get(body["url"], headers=keys.viewer)
    assert download.status_code == 200 and download.content == data
    return keys, data


def test_upload_triggers_a_linked_service(sqlite_api: ApiHarness, tmp_path: Path) -> None:
    keys, _ = _upload_runs_service(sqlite_api, tmp_path)
    assert isinstance(sqlite_api.platform.assets, LocalAssetStore)
    assert sqlite_api.platform.assets.root == sqlite_api.platform.settings.home / "assets"
    assert [a.path for a in sqlite_api.platform.assets.list(keys.name)] == [
        "in/orders 1.csv",
        "out/report.csv",
    ]


def test_list_download_delete(sqlite_api: ApiHarness) -> None:
    api, keys = sqlite_api, sqlite_api.project("assets")
    base = f"/api/v1/projects/{keys.name}/assets"
    files = {"in/a.json": b'{"a": 1}', "in/b.bin": bytes(range(256)) * 64, "out/c.txt": b"c"}
    for path, data in files.items():
        kind = "application/octet-stream" if path.endswith(".bin") else "text/plain"
        assert _upload(api, keys.name, path, data, keys.developer, kind).status_code == 201

    listed = api.client.get(base, headers=keys.viewer).json()
    assert listed["total"] == 3 and [a["path"] for a in listed["items"]] == sorted(files)
    assert {a["path"]: a["size"] for a in listed["items"]} == {p: len(d) for p, d in files.items()}
    inside = api.client.get(base, params={"prefix": "in/", "limit": 1}, headers=keys.viewer)
    assert inside.status_code == 200
    assert inside.json()["total"] == 2 and [a["path"] for a in inside.json()["items"]] == [
        "in/a.json"
    ]
    second = api.client.get(
        base, params={"prefix": "in/", "limit": 1, "offset": 1}, headers=keys.viewer
    )
    assert [a["path"] for a in second.json()["items"]] == ["in/b.bin"]

    got = api.client.get(f"{base}/in/b.bin", headers=keys.viewer)
    assert got.status_code == 200 and got.content == files["in/b.bin"]
    assert got.headers["content-type"] == "application/octet-stream"  # guessed: none for .bin
    assert got.headers["content-length"] == str(len(files["in/b.bin"]))
    assert got.headers["x-checksum-sha256"] == hashlib.sha256(files["in/b.bin"]).hexdigest()
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''b.bin"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert api.client.get(f"{base}/in/a.json", headers=keys.viewer).json() == {"a": 1}

    replaced = _upload(api, keys.name, "in/a.json", b"{}", keys.developer, "application/json")
    assert replaced.status_code == 201 and replaced.json()["size"] == 2
    assert api.client.get(f"{base}/in/a.json", headers=keys.viewer).content == b"{}"

    assert api.client.delete(f"{base}/in/a.json", headers=keys.developer).status_code == 204
    assert api.client.get(f"{base}/in/a.json", headers=keys.viewer).status_code == 404
    assert api.client.delete(f"{base}/in/a.json", headers=keys.developer).status_code == 404
    left = api.client.get(base, headers=keys.viewer).json()
    assert [a["path"] for a in left["items"]] == ["in/b.bin", "out/c.txt"]


def test_roles_and_projects(sqlite_api: ApiHarness) -> None:
    api, mine, other = sqlite_api, sqlite_api.project("assets"), sqlite_api.project("assets")
    base = f"/api/v1/projects/{mine.name}/assets"
    assert _upload(api, mine.name, "f.txt", b"f", mine.viewer).status_code == 403
    assert _upload(api, mine.name, "f.txt", b"f", other.developer).status_code == 404
    assert _upload(api, mine.name, "f.txt", b"f", {}).status_code == 401
    assert _upload(api, mine.name, "f.txt", b"f", mine.developer).status_code == 201
    assert api.client.get(base, headers=mine.viewer).status_code == 200
    assert api.client.get(base, headers=other.admin).status_code == 404
    assert api.client.get(f"{base}/f.txt", headers=other.admin).status_code == 404
    assert api.client.delete(f"{base}/f.txt", headers=mine.viewer).status_code == 403
    assert api.client.delete(f"{base}/f.txt", headers=other.admin).status_code == 404
    assert api.client.get(f"{base}/f.txt", headers=mine.viewer).content == b"f"
    missing = "/api/v1/projects/no-such-project/assets"
    assert api.client.get(missing, headers=api.admin).status_code == 404
    assert _upload(api, "no-such-project", "f.txt", b"f", api.admin).status_code == 404
    assert api.client.get(f"{base}/f.txt", headers=api.admin).content == b"f"


@pytest.mark.parametrize(
    "path",
    [
        "../escape.txt",
        "a/../../escape.txt",
        "/etc/passwd",
        "a/./b",
        "a//b",
        "a/",
        "a\\..\\b",
        "bad\x01name",
        "bad\x7fname",
        "x" * 513,
        "C:/windows",
    ],
)
def test_bad_paths_are_refused(sqlite_api: ApiHarness, path: str) -> None:
    api, keys = sqlite_api, sqlite_api.project("assets")
    answer = _upload(api, keys.name, path, b"x", keys.developer)
    assert answer.status_code == 422, answer.text
    assert (
        api.client.get(f"/api/v1/projects/{keys.name}/assets", headers=keys.viewer).json()["total"]
        == 0
    )


def test_bad_paths_in_urls_are_refused(sqlite_api: ApiHarness) -> None:
    api, keys = sqlite_api, sqlite_api.project("assets")
    base = f"/api/v1/projects/{keys.name}/assets"
    for raw in ("%2e%2e/secret", "a/%2e%2e/%2e%2e/secret", "a%00b", "a//b"):
        assert api.client.get(f"{base}/{raw}", headers=keys.viewer).status_code == 422, raw
        assert api.client.delete(f"{base}/{raw}", headers=keys.developer).status_code == 422
    for prefix in ("../", "/abs", "a\x00"):
        listed = api.client.get(base, params={"prefix": prefix}, headers=keys.viewer)
        assert listed.status_code == 422, prefix


def test_upload_over_the_limit(sqlite_api: ApiHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    api, keys = sqlite_api, sqlite_api.project("assets")
    monkeypatch.setattr(api.platform.settings, "asset_max_bytes", 1000)
    answer = _upload(api, keys.name, "big.bin", b"x" * 200_000, keys.developer)
    assert answer.status_code == 413, answer.text
    framed = _upload(api, keys.name, "big.bin", b"x" * 5000, keys.developer)  # < the framing
    assert framed.status_code == 413, framed.text
    assert framed.json()["error"]["message"] == "the file is larger than the limit of 1000 bytes"
    assert (
        api.client.get(f"/api/v1/projects/{keys.name}/assets", headers=keys.viewer).json()["total"]
        == 0
    )


def test_a_zip_bomb_asset_is_stored_as_is(sqlite_api: ApiHarness) -> None:
    """Assets are never unpacked: a zip whose entry claims 1,000 bytes and expands to 200 MB is
    stored as its 0.2 MB, streamed in chunks, with little memory."""
    api, keys = sqlite_api, sqlite_api.project("assets")
    bomb = lying_bomb()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        answer = _upload(api, keys.name, "in/bomb.zip", bomb, keys.developer, "application/zip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status_code == 201, answer.text
    assert answer.json()["size"] == len(bomb)
    assert answer.json()["sha256"] == hashlib.sha256(bomb).hexdigest()
    assert peak < api.platform.settings.archive_chunk_bytes + 8 * MIB, peak
    got = api.client.get(f"/api/v1/projects/{keys.name}/assets/in/bomb.zip", headers=keys.viewer)
    assert got.content == bomb


@pytest.fixture(scope="module")
def s3_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiHarness, dict[str, Any]]]:
    """A platform whose assets are in S3 (a bucket of its own), on SQLite."""
    s3 = {**s3_settings(), "s3_bucket": f"fxray-test-{uuid.uuid4().hex[:12]}"}
    request.getfixturevalue("ray_session")
    folder = tmp_path_factory.mktemp("s3api")
    harness = start_api(folder, f"sqlite:///{folder / 'state.db'}", asset_store="s3", **s3)
    yield harness, s3
    harness.client.close()
    harness.platform.stop()
    drop_bucket(client_for(s3), s3["s3_bucket"])


def test_s3_assets(s3_api: tuple[ApiHarness, dict[str, Any]], tmp_path: Path) -> None:
    api, s3 = s3_api
    assert isinstance(api.platform.assets, S3AssetStore)
    keys, data = _upload_runs_service(api, tmp_path)
    stored = client_for(s3).get_object(s3["s3_bucket"], f"assets/{keys.name}/in/orders 1.csv")
    try:
        assert stored.read() == data
    finally:
        stored.release_conn()
    base = f"/api/v1/projects/{keys.name}/assets"
    listed = api.client.get(base, params={"prefix": "in/"}, headers=keys.viewer).json()
    assert [(a["path"], a["sha256"]) for a in listed["items"]] == [
        ("in/orders 1.csv", hashlib.sha256(data).hexdigest())
    ]
    assert api.client.delete(f"{base}/in/orders%201.csv", headers=keys.developer).status_code == 204
    assert api.client.get(f"{base}/in/orders%201.csv", headers=keys.viewer).status_code == 404
    assert api.client.get(base, params={"prefix": "in/"}, headers=keys.viewer).json()["total"] == 0
