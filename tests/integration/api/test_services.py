"""The services part of the API: upload, list, versions, docs, activation, git repositories."""

from __future__ import annotations

import io
import json
import os
import stat
import tracemalloc
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fxray.services import load_package
from tests.git_repo import git
from tests.integration.api.conftest import ApiHarness, database_url, start_api
from tests.integration.conftest import write_service
from tests.unit.packages.bombs import BOMB_BYTES, BOMB_ENTRY, MIB, lying_bomb, zip_with_zeros

V1 = "/api/v1"

README = "# Greeter\n\nSays hello.\n"
PARAMETERS = [{"name": "who", "type": "text", "default": "world", "label": "Who"}]


def unique(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def service_zip(
    root: Path,
    name: str,
    *,
    code: str = "print('hi')\n",
    top_folder: bool = False,
    extra: dict[str, str] | None = None,
    **manifest: Any,
) -> bytes:
    """A zip of a valid service folder (at the zip root, or in one top folder)."""
    files = {"main.py": code, "README.md": README, "parameters.json": json.dumps(PARAMETERS)}
    files.update(extra or {})
    folder = write_service(root, name, files, **manifest)
    data = load_package(folder).to_zip()
    if not top_folder:
        return data
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(f"{name}/{info.filename}", src.read(info))
    return out.getvalue()


def upload(
    api: ApiHarness,
    data: bytes,
    headers: dict[str, str],
    **form: str,
) -> Any:
    return api.client.post(
        f"{V1}/services",
        files={"file": ("service.zip", data, "application/zip")},
        data=form,
        headers=headers,
    )


def raw_zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return out.getvalue()


def manifest_entry(name: str = "unsafe") -> tuple[str, bytes]:
    return ("manifest.json", json.dumps({"name": name, "entrypoint": "main.py"}).encode())


def problems_of(answer: Any) -> list[str]:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    return [str(p) for p in error["problems"]]


# -- core: both databases ---------------------------------------------------------------------


def test_upload_list_get_versions_docs(api: ApiHarness, tmp_path: Path) -> None:
    team = api.project()
    name = unique()
    first = service_zip(tmp_path / "a", name, tags=["etl"], description="Says hello")

    made = upload(api, first, team.developer, label="v1")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["created"] is True and body["triggers"] == []
    assert body["service"]["name"] == name and body["service"]["project"] == team.name
    assert body["service"]["version_count"] == 1
    version = body["version"]
    assert version["label"] == "v1" and version["steps"] == ["main.py"]
    assert version["id"] == body["service"]["latest_version"]

    again = upload(api, first, team.developer)
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["version"]["id"] == version["id"]

    changed = service_zip(
        tmp_path / "b", name, code="print('changed')\n", top_folder=True, tags=["etl"]
    )
    second = upload(api, changed, team.developer, label="v2")
    assert second.status_code == 201, second.text
    assert second.json()["version"]["id"] != version["id"]

    listed = api.client.get(f"{V1}/services", headers=team.viewer).json()
    assert listed["total"] == 1
    [item] = listed["items"]
    assert item["name"] == name and item["version_count"] == 2 and item["active"] is True
    assert item["latest_version"] == second.json()["version"]["id"]
    assert item["tags"] == ["etl"] and item["project"] == team.name
    for query, count in [("tag=etl", 1), ("tag=nope", 0), ("active=true", 1), ("active=false", 0)]:
        found = api.client.get(f"{V1}/services?{query}", headers=team.viewer).json()
        assert found["total"] == count, query
    found = api.client.get(f"{V1}/services", params={"q": name[4:]}, headers=team.viewer)
    assert [s["name"] for s in found.json()["items"]] == [name]

    got = api.client.get(f"{V1}/services/{name}", headers=team.viewer)
    assert got.status_code == 200 and got.json()["description"] == ""  # from the 2nd manifest

    versions = api.client.get(f"{V1}/services/{name}/versions", headers=team.viewer).json()
    assert [v["label"] for v in versions["items"]] == ["v1", "v2"]
    v1 = versions["items"][0]
    assert set(v1) >= {
        "id",
        "label",
        "content_hash",
        "requirements",
        "requirements_hash",
        "deployed_by",
        "created_at",
        "steps",
    }
    assert v1["deployed_by"] and len(v1["content_hash"]) == 64
    for ref in ("v1", v1["id"], v1["content_hash"][:12]):
        one = api.client.get(f"{V1}/services/{name}/versions/{ref}", headers=team.viewer)
        assert one.status_code == 200 and one.json()["id"] == v1["id"], ref
    missing = api.client.get(f"{V1}/services/{name}/versions/v9", headers=team.viewer)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    docs = api.client.get(f"{V1}/services/{name}/docs", headers=team.viewer).json()
    assert docs["readme"] == README and docs["parameters"] == PARAMETERS
    assert docs["version"] == second.json()["version"]["id"]
    old = api.client.get(f"{V1}/services/{name}/docs?version=v1", headers=team.viewer).json()
    assert old["version"] == v1["id"]


def test_docs_without_readme_or_parameters(api: ApiHarness, tmp_path: Path) -> None:
    team = api.project()
    name = unique()
    folder = write_service(tmp_path, name, {"main.py": "print(1)\n"})
    assert upload(api, load_package(folder).to_zip(), team.developer).status_code == 201
    docs = api.client.get(f"{V1}/services/{name}/docs", headers=team.viewer).json()
    assert docs["readme"] is None and docs["parameters"] is None


def test_role_boundaries(api: ApiHarness, tmp_path: Path) -> None:
    a, b = api.project("a"), api.project("b")
    name = unique()
    data = service_zip(tmp_path, name)

    refused = upload(api, data, a.viewer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert upload(api, data, a.developer).status_code == 201
    assert api.client.get(f"{V1}/services/{name}", headers=a.viewer).status_code == 200
    patched = api.client.patch(f"{V1}/services/{name}", json={"active": False}, headers=a.viewer)
    assert patched.status_code == 403

    # project B sees nothing of project A's service
    for path in ("", "/versions", "/docs", "/versions/latest"):
        answer = api.client.get(f"{V1}/services/{name}{path}", headers=b.admin)
        assert answer.status_code == 404, (path, answer.text)
    hidden = api.client.patch(f"{V1}/services/{name}", json={"active": False}, headers=b.admin)
    assert hidden.status_code == 404
    assert api.client.get(f"{V1}/services", headers=b.admin).json()["items"] == []
    other = api.client.get(f"{V1}/services?project={a.name}", headers=b.admin)
    assert other.status_code == 404
    # names are per project: project B gets a service of its own under the same name
    own = upload(api, data, b.developer)
    assert own.status_code == 201 and own.json()["service"]["project"] == b.name
    assert api.client.get(f"{V1}/services/{name}", headers=a.viewer).json()["project"] == a.name
    # a project key cannot deploy into another project
    assert upload(api, data, b.developer, project=a.name).status_code == 404

    # a platform-wide key names the project
    other_name = unique()
    admin_zip = service_zip(tmp_path / "admin", other_name)
    no_project = upload(api, admin_zip, api.admin)
    assert no_project.status_code == 422
    assert upload(api, admin_zip, api.admin, project="no-such-project").status_code == 404
    assert upload(api, admin_zip, api.admin, project=b.name).status_code == 201
    seen = api.client.get(f"{V1}/services?project={b.name}", headers=api.admin).json()
    assert sorted(s["name"] for s in seen["items"]) == sorted([name, other_name])
    assert api.client.get(f"{V1}/services/{other_name}", headers=a.viewer).status_code == 404
    assert api.client.get(f"{V1}/services", headers={}).status_code == 401


# -- the rest: SQLite -------------------------------------------------------------------------


def test_deactivate_and_reactivate_in_real_time(sqlite_api: ApiHarness, tmp_path: Path) -> None:
    api = sqlite_api
    team = api.project()
    name = unique()
    event_type = f"test.{name}"
    made = upload(api, service_zip(tmp_path, name, trigger_events=[event_type]), team.developer)
    assert made.status_code == 201, made.text
    assert [t["pattern"] for t in made.json()["triggers"]] == [event_type]

    event = api.platform.send(event_type, {"n": 1})
    [run] = api.platform.wait_for_runs(correlation_id=event["id"])
    assert run.status == "succeeded", run.error

    off = api.client.patch(f"{V1}/services/{name}", json={"active": False}, headers=team.developer)
    assert off.status_code == 200 and off.json()["active"] is False
    listed = api.client.get(f"{V1}/services?active=false", headers=team.viewer).json()
    assert [s["name"] for s in listed["items"]] == [name]
    quiet = api.platform.send(event_type, {"n": 2})
    api.platform.wait_idle()
    assert api.platform.runs(correlation_id=quiet["id"]) == []

    on = api.client.patch(f"{V1}/services/{name}", json={"active": True}, headers=team.developer)
    assert on.status_code == 200 and on.json()["active"] is True
    again = api.platform.send(event_type, {"n": 3})
    [run] = api.platform.wait_for_runs(correlation_id=again["id"])
    assert run.status == "succeeded", run.error

    unchanged = api.client.patch(f"{V1}/services/{name}", json={}, headers=team.developer)
    assert unchanged.status_code == 200 and unchanged.json()["active"] is True
    bad = api.client.patch(
        f"{V1}/services/{name}", json={"active": "maybe", "x": 1}, headers=team.developer
    )
    assert bad.status_code == 422 and len(bad.json()["error"]["problems"]) == 2


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([manifest_entry(), ("main.py", b""), ("../evil.py", b"x")], "escapes"),
        ([manifest_entry(), ("main.py", b""), ("a/../../evil.py", b"x")], "escapes"),
        ([manifest_entry(), ("main.py", b""), ("/etc/evil.py", b"x")], "absolute"),
        ([manifest_entry(), ("main.py", b""), ("C:/evil.py", b"x")], "absolute"),
        ([manifest_entry(), ("main.py", b""), symlink_entry("link.py", "/etc/passwd")], "symlink"),
    ],
    ids=["zip-slip", "nested-zip-slip", "absolute", "drive", "symlink"],
)
def test_unsafe_archives_are_refused(
    sqlite_api: ApiHarness, entries: list[Any], words: str
) -> None:
    team = sqlite_api.project()
    problems = problems_of(upload(sqlite_api, raw_zip(entries), team.developer))
    assert any(words in p for p in problems), problems
    assert sqlite_api.client.get(f"{V1}/services/unsafe", headers=team.viewer).status_code == 404


def test_every_archive_problem_is_listed(sqlite_api: ApiHarness) -> None:
    team = sqlite_api.project()
    entries = [
        manifest_entry(),
        ("main.py", b""),
        ("../up.py", b""),
        ("/abs.py", b""),
        symlink_entry("link", "/etc"),
    ]
    problems = problems_of(upload(sqlite_api, raw_zip(entries), team.developer))
    assert len(problems) == 3, problems
    for entry in ("'../up.py'", "'/abs.py'", "'link'"):
        assert any(entry in p for p in problems), (entry, problems)


def test_too_large_and_too_many_files(
    sqlite_api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = sqlite_api.project()
    settings = sqlite_api.platform.settings
    monkeypatch.setattr(settings, "package_max_total_bytes", 10_000)
    big = raw_zip([manifest_entry(), ("main.py", b"#" * 20_000)])
    problems = problems_of(upload(sqlite_api, big, team.developer))
    assert any("more than the limit of 10000" in p for p in problems), problems

    monkeypatch.setattr(settings, "package_max_files", 5)
    many = raw_zip([manifest_entry(), *((f"f{i}.py", b"") for i in range(10))])
    problems = problems_of(upload(sqlite_api, many, team.developer))
    assert any("more than the limit of 5" in p for p in problems), problems

    monkeypatch.setattr(settings, "package_max_entries", 20)
    junk = raw_zip([manifest_entry(), *((f"__pycache__/m{i}.pyc", b"") for i in range(30))])
    problems = problems_of(upload(sqlite_api, junk, team.developer))
    assert problems == ["zip lists 31 entries, more than the limit of 20"]

    assert problems_of(upload(sqlite_api, b"not a zip at all", team.developer))


def test_request_body_over_the_limit(
    sqlite_api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = sqlite_api.project()
    monkeypatch.setattr(sqlite_api.platform.settings, "package_max_upload_bytes", 1000)
    body = os.urandom(200_000)
    declared = upload(sqlite_api, body, team.developer)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "too_large"

    boundary = "fxrayboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="s.zip"\r\nContent-Type: application/zip\r\n\r\n'.encode(),
        *(body[i : i + 8192] for i in range(0, len(body), 8192)),
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    streamed = sqlite_api.client.post(
        f"{V1}/services",
        content=iter(parts),  # chunked: no Content-Length
        headers={**team.developer, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert streamed.status_code == 413, streamed.text


def test_upload_over_the_limit_but_within_the_framing(
    sqlite_api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = sqlite_api.project()
    monkeypatch.setattr(sqlite_api.platform.settings, "package_max_upload_bytes", 1000)
    answer = upload(sqlite_api, os.urandom(5000), team.developer)  # within the 64 KiB framing
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["message"] == "the upload is larger than the limit of 1000 bytes"


def test_lying_header_zip_bomb_is_refused_in_bounded_memory(sqlite_api: ApiHarness) -> None:
    """0.2 MB whose entry claims 1,000 bytes and expands to 200 MB: refused with 422 while the
    process (client, app and platform share it) allocates little more than the chunk size. The
    code before bounded reading inflated the entry whole first (~440 MB)."""
    team = sqlite_api.project()
    bomb = lying_bomb()
    chunk = sqlite_api.platform.settings.archive_chunk_bytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        answer = upload(sqlite_api, bomb, team.developer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems_of(answer) == [
        f"zip entry {BOMB_ENTRY!r} is corrupt: its data does not match the size and CRC-32 its "
        f"headers claim (Bad CRC-32 for file {BOMB_ENTRY!r})"
    ]
    print(f"\npeak while the API refused the lying-header bomb: {peak} bytes")
    assert peak < chunk + 8 * MIB, peak
    assert sqlite_api.client.get(f"{V1}/services/bomb", headers=team.viewer).status_code == 404


def test_huge_and_highly_compressed_entries_are_refused(
    sqlite_api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = sqlite_api.project()
    settings = sqlite_api.platform.settings
    huge = problems_of(upload(sqlite_api, zip_with_zeros(BOMB_BYTES), team.developer))
    assert huge == [
        f"zip entry {BOMB_ENTRY!r} claims {BOMB_BYTES} bytes, more than the limit of "
        f"{settings.package_max_entry_bytes} bytes per file"
    ]
    (ratio,) = problems_of(upload(sqlite_api, zip_with_zeros(5 * MIB), team.developer))
    assert "more than the compression ratio limit of 200" in ratio, ratio
    monkeypatch.setattr(settings, "archive_max_ratio", 2000.0)  # the setting decides
    made = upload(sqlite_api, zip_with_zeros(5 * MIB, service=unique("zeros")), team.developer)
    assert made.status_code == 201, made.text


def test_invalid_manifest_lists_every_problem(sqlite_api: ApiHarness) -> None:
    team = sqlite_api.project()
    manifest = {
        "name": "Not A Name!",
        "entrypoint": "missing.py",
        "priority": 99,
        "max_concurrency": "many",
    }
    data = raw_zip([("manifest.json", json.dumps(manifest).encode()), ("main.py", b"")])
    problems = problems_of(upload(sqlite_api, data, team.developer))
    text = "\n".join(problems)
    for words in ("name", "priority", "max_concurrency", "missing.py"):
        assert words in text, (words, problems)
    assert len(problems) >= 4

    broken_json = raw_zip([("manifest.json", b"{nope"), ("main.py", b"")])
    assert any(
        "invalid JSON" in p for p in problems_of(upload(sqlite_api, broken_json, team.developer))
    )
    no_manifest = raw_zip([("main.py", b"")])
    assert any("missing" in p for p in problems_of(upload(sqlite_api, no_manifest, team.developer)))


def test_request_validation(sqlite_api: ApiHarness, tmp_path: Path) -> None:
    team = sqlite_api.project()
    no_file = sqlite_api.client.post(f"{V1}/services", data={"label": "x"}, headers=team.developer)
    assert no_file.status_code == 422
    data = service_zip(tmp_path, unique())
    assert upload(sqlite_api, data, team.developer, label="bad label").status_code == 422
    assert upload(sqlite_api, data, team.developer, project="Bad!").status_code == 422
    bad = sqlite_api.client.get(f"{V1}/services/Bad%20Name", headers=team.viewer)
    assert bad.status_code == 422
    assert sqlite_api.client.get(f"{V1}/services/nope-x", headers=team.viewer).status_code == 404


def test_label_taken_is_a_conflict(sqlite_api: ApiHarness, tmp_path: Path) -> None:
    team = sqlite_api.project()
    name = unique()
    assert (
        upload(sqlite_api, service_zip(tmp_path / "a", name), team.developer, label="x").status_code
        == 201
    )
    changed = service_zip(tmp_path / "b", name, code="print(2)\n")
    assert upload(sqlite_api, changed, team.developer, label="x").status_code == 409


# -- git repositories -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def git_api(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiHarness]:
    """SQLite, with file:// and local repositories allowed."""
    folder = tmp_path_factory.mktemp("gitapi")
    url, _ = database_url("sqlite", folder)
    harness = start_api(folder, url, api_allow_local_repos=True)
    yield harness
    harness.client.close()
    harness.platform.stop()


def make_repo(root: Path, alpha: str, beta: str) -> Path:
    """Services alpha and beta, a folder with an invalid manifest, and a plain folder."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for name in (alpha, beta):
        folder = root / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"name": name, "entrypoint": "m.py"}))
        (folder / "m.py").write_text("print('hi')\n")
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text(json.dumps({"name": "Bad!", "priority": 0}))
    (root / "docs").mkdir()
    (root / "docs" / "notes.md").write_text("not a service\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_git_repository_register_and_sync(git_api: ApiHarness, tmp_path: Path) -> None:
    api = git_api
    team, other = api.project(), api.project()
    alpha, beta = unique("alpha"), unique("beta")
    repo = make_repo(tmp_path / "repo", alpha, beta)
    body = {"url": repo.as_uri(), "ref": "main"}

    assert api.client.post(f"{V1}/repositories", json=body, headers=team.viewer).status_code == 403
    made = api.client.post(f"{V1}/repositories", json=body, headers=team.developer)
    assert made.status_code == 201, made.text
    registered = made.json()
    assert registered["project"] == team.name and registered["last_commit"] is None
    rid = registered["id"]
    again = api.client.post(f"{V1}/repositories", json=body, headers=team.developer)
    assert again.status_code == 409

    listed = api.client.get(f"{V1}/repositories", headers=team.viewer).json()
    assert [r["id"] for r in listed["items"]] == [rid]
    assert api.client.get(f"{V1}/repositories", headers=other.admin).json()["items"] == []
    for method in ("get", "delete"):
        answer = getattr(api.client, method)(f"{V1}/repositories/{rid}", headers=other.admin)
        assert answer.status_code == 404
    assert api.client.post(f"{V1}/repositories/{rid}/sync", headers=other.admin).status_code == 404
    assert api.client.post(f"{V1}/repositories/{rid}/sync", headers=team.viewer).status_code == 403

    synced = api.client.post(f"{V1}/repositories/{rid}/sync", headers=team.developer)
    assert synced.status_code == 200, synced.text
    result = synced.json()
    commit = git(repo, "rev-parse", "HEAD")
    assert result["commit"] == commit and result["repository"]["last_commit"] == commit
    by_folder = {r["folder"]: r for r in result["results"]}
    assert set(by_folder) == {alpha, beta, "broken"}
    for name in (alpha, beta):
        assert by_folder[name]["service"] == name and by_folder[name]["created"] is True
        assert by_folder[name]["problems"] == []
    assert by_folder["broken"]["service"] is None
    assert len(by_folder["broken"]["problems"]) >= 2, by_folder["broken"]

    services = api.client.get(f"{V1}/services", headers=team.viewer).json()
    assert sorted(s["name"] for s in services["items"]) == sorted([alpha, beta])
    versions = api.client.get(f"{V1}/services/{alpha}/versions", headers=team.viewer).json()
    assert versions["items"][0]["label"] == f"git-{commit[:12]}"

    # nothing changed: no new versions
    same = api.client.post(f"{V1}/repositories/{rid}/sync", headers=team.developer).json()
    assert [r["created"] for r in same["results"] if r["service"]] == [False, False]

    # one service changed: only it gets a new version
    (repo / alpha / "m.py").write_text("print('changed')\n")
    git(repo, "commit", "-q", "-am", "change alpha")
    changed = api.client.post(f"{V1}/repositories/{rid}/sync", headers=team.developer).json()
    created = {r["folder"]: r["created"] for r in changed["results"] if r["service"]}
    assert created == {alpha: True, beta: False}
    assert changed["commit"] == git(repo, "rev-parse", "HEAD") != commit
    got = api.client.get(f"{V1}/repositories/{rid}", headers=team.viewer).json()
    assert got["last_commit"] == changed["commit"] and got["last_synced_at"]

    # another project's repository deploys services of the same names: its own ones
    theirs = api.client.post(f"{V1}/repositories", json=body, headers=other.developer).json()
    synced = api.client.post(f"{V1}/repositories/{theirs['id']}/sync", headers=other.developer)
    assert synced.status_code == 200
    created = {r["folder"]: r["created"] for r in synced.json()["results"] if r["service"]}
    assert created == {alpha: True, beta: True}
    mine = api.client.get(f"{V1}/services/{alpha}/versions", headers=team.viewer).json()
    assert len(mine["items"]) == 2  # untouched by the other project's sync

    assert api.client.delete(f"{V1}/repositories/{rid}", headers=team.viewer).status_code == 403
    assert api.client.delete(f"{V1}/repositories/{rid}", headers=team.developer).status_code == 204
    assert api.client.get(f"{V1}/repositories/{rid}", headers=team.viewer).status_code == 404
    assert api.client.get(f"{V1}/services/{alpha}", headers=team.viewer).status_code == 200


def test_git_sync_failures(git_api: ApiHarness, tmp_path: Path) -> None:
    api = git_api
    team = api.project()
    repo = make_repo(tmp_path / "repo", unique("a"), unique("b"))
    for ref in ("nope", "f" * 40):
        made = api.client.post(
            f"{V1}/repositories", json={"url": str(repo), "ref": ref}, headers=team.developer
        )
        assert made.status_code == 201, made.text
        failed = api.client.post(
            f"{V1}/repositories/{made.json()['id']}/sync", headers=team.developer
        )
        assert failed.status_code == 422, failed.text
        assert "git" in failed.json()["error"]["problems"][0]


def test_git_sync_checks_file_sizes(
    git_api: ApiHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = git_api
    team = api.project()
    alpha, beta = unique("alpha"), unique("beta")
    repo = make_repo(tmp_path / "repo", alpha, beta)
    (repo / alpha / "big.bin").write_bytes(bytes(2 * MIB))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    monkeypatch.setattr(api.platform.settings, "package_max_entry_bytes", MIB)
    made = api.client.post(
        f"{V1}/repositories", json={"url": repo.as_uri()}, headers=team.developer
    ).json()
    synced = api.client.post(f"{V1}/repositories/{made['id']}/sync", headers=team.developer)
    assert synced.status_code == 200, synced.text
    by_folder = {r["folder"]: r for r in synced.json()["results"]}
    assert by_folder[alpha]["problems"] == [
        f"big.bin is {2 * MIB} bytes, more than the limit of {MIB} bytes per file"
    ]
    assert by_folder[beta]["created"] is True


def test_git_hosts_must_be_public_unless_allowed(
    sqlite_api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = sqlite_api.project()
    for url in ("https://127.0.0.1/acme/x.git", "https://[::1]/x.git", "git@10.0.0.5:acme/x"):
        answer = sqlite_api.client.post(
            f"{V1}/repositories", json={"url": url}, headers=team.developer
        )
        (problem,) = answer.json()["error"]["problems"]
        assert answer.status_code == 422 and problem["location"] == "body.url"
        assert "git_allowed_hosts" in problem["message"], problem
    monkeypatch.setattr(sqlite_api.platform.settings, "git_allowed_hosts", ["127.0.0.1"])
    made = sqlite_api.client.post(
        f"{V1}/repositories", json={"url": "https://127.0.0.1:9/acme/x.git"}, headers=team.developer
    )
    assert made.status_code == 201, made.text
    rid = made.json()["id"]
    synced = sqlite_api.client.post(f"{V1}/repositories/{rid}/sync", headers=team.developer)
    (problem,) = problems_of(synced)
    assert problem.startswith("git clone failed"), problem  # allowed: git ran, found no server
    monkeypatch.setattr(sqlite_api.platform.settings, "git_allowed_hosts", [])
    refused = sqlite_api.client.post(f"{V1}/repositories/{rid}/sync", headers=team.developer)
    (problem,) = problems_of(refused)
    assert "'127.0.0.1' is a loopback address" in problem, problem


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"url": "--upload-pack=touch /tmp/x"}, "body.url"),
        ({"url": "https://github.com/a/b c"}, "body.url"),
        ({"url": "http://github.com/a/b"}, "body.url"),
        ({"url": "ext::sh -c touch% /tmp/x"}, "body.url"),
        ({"url": "https://github.com/a/b", "ref": "--orphan"}, "body.ref"),
        ({"url": "https://github.com/a/b", "ref": "a..b"}, "body.ref"),
        ({"url": ""}, "body.url"),
        ({"url": "https://github.com/a/b", "extra": 1}, "body.extra"),
    ],
)
def test_repository_urls_are_checked(
    sqlite_api: ApiHarness, body: dict[str, Any], location: str
) -> None:
    team = sqlite_api.project()
    answer = sqlite_api.client.post(f"{V1}/repositories", json=body, headers=team.developer)
    assert answer.status_code == 422, answer.text
    assert location in [p["location"] for p in answer.json()["error"]["problems"]]


def test_local_repositories_need_the_setting(sqlite_api: ApiHarness, tmp_path: Path) -> None:
    team = sqlite_api.project()
    for url in ("file:///srv/repo", str(tmp_path)):
        answer = sqlite_api.client.post(
            f"{V1}/repositories", json={"url": url}, headers=team.developer
        )
        assert answer.status_code == 422
        assert "api_allow_local_repos" in answer.json()["error"]["problems"][0]["message"]


def test_remote_repository_registration(sqlite_api: ApiHarness) -> None:
    team = sqlite_api.project()
    url = "https://user:s3cret@git.example.com/acme/services.git"
    made = sqlite_api.client.post(
        f"{V1}/repositories", json={"url": url, "ref": "release/1.0"}, headers=team.developer
    )
    assert made.status_code == 201, made.text
    assert made.json()["url"] == "https://user:***@git.example.com/acme/services.git"
    assert made.json()["ref"] == "release/1.0"
    admin = sqlite_api.client.post(
        f"{V1}/repositories", json={"url": "git@github.com:acme/x.git"}, headers=sqlite_api.admin
    )
    assert admin.status_code == 422  # a platform-wide key names the project
    admin = sqlite_api.client.post(
        f"{V1}/repositories",
        json={"url": "git@github.com:acme/x.git", "project": team.name},
        headers=sqlite_api.admin,
    )
    assert admin.status_code == 201 and admin.json()["project"] == team.name
    mine = sqlite_api.client.get(f"{V1}/repositories", headers=team.viewer).json()
    assert mine["total"] == 2
    assert sqlite_api.client.get(f"{V1}/repositories/zz", headers=team.viewer).status_code == 422
