"""fxray.packages.git: URL and ref checks, checking out a local repository, deploying folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fxray.packages import git as gitsync
from fxray.packages.archive import ArchiveLimits
from fxray.packages.git import Deployed, GitError
from fxray.services import load_package
from fxray.services.package import PackageError
from tests.git_repo import git


def write_service(folder: Path, name: str, **manifest: object) -> None:
    folder.mkdir(parents=True)
    body = {"name": name, "entrypoint": "main.py", **manifest}
    (folder / "manifest.json").write_text(json.dumps(body))
    (folder / "main.py").write_text("print('hi')\n")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on branch main: services alpha and beta, a broken one, and other things."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write_service(root / "alpha", "alpha")
    write_service(root / "beta", "beta")
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text('{"name": "Bad Name!", "retries": 1}')
    (root / "docs").mkdir()
    (root / "docs" / "index.md").write_text("# not a service\n")
    write_service(root / ".hidden", "hidden")
    (root / "README.md").write_text("services\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "services")
    git(root, "tag", "v1")
    return root


# -- URL and ref checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/services.git",
        "https://user:token@git.example.com/acme/services",
        "ssh://git@github.com/acme/services.git",
        "ssh://git@git.example.com:2222/acme/services.git",
        "git@github.com:acme/services.git",
    ],
)
def test_remote_urls_are_allowed(url: str) -> None:
    assert gitsync.url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "empty"),
        ("-uhttps://x/y", "start with '-'"),
        ("--upload-pack=touch /tmp/x", "start with '-'"),
        ("https://github.com/a/b --upload-pack=x", "whitespace"),
        ("https://github.com/a/b\n", "whitespace"),
        ("ssh://-oProxyCommand=x/y", "host"),
        ("http://github.com/acme/services.git", "only https://"),
        ("git://github.com/acme/services.git", "only https://"),
        ("ext::sh", "only https://"),
        ("github.com:acme/services.git", "only https://"),
        ("https://", "no host"),
        ("https://github.com", "no repository path"),
        ("file:///srv/repo", "api_allow_local_repos"),
        ("/srv/repo", "api_allow_local_repos"),
        ("relative/repo", "only https://"),
        ("git@host:-x", "must not start with '-'"),
        ("https://x/" + "a" * gitsync.MAX_URL_LENGTH, "longer"),
    ],
)
def test_unsafe_urls_are_refused(url: str, words: str) -> None:
    problem = gitsync.url_problem(url)
    assert problem is not None and words in problem


def test_local_urls_need_allow_local() -> None:
    assert gitsync.url_problem("file:///srv/repo", allow_local=True) is None
    assert gitsync.url_problem("/srv/repo", allow_local=True) is None
    assert "absolute" in (gitsync.url_problem("file://srv/repo", allow_local=True) or "")
    assert gitsync.url_problem("-/srv/repo", allow_local=True) is not None
    assert gitsync.url_problem("relative/repo", allow_local=True) is not None


@pytest.mark.parametrize("ref", ["main", "release/1.2", "v1.0.0", "a" * 40, "feature_x+y"])
def test_good_refs(ref: str) -> None:
    assert gitsync.ref_problem(ref) is None


@pytest.mark.parametrize(
    "ref", ["", "-b", "--upload-pack=x", "a..b", "a b", "x/", "x.lock", "a//b", "a/.b", "@{1}"]
)
def test_bad_refs(ref: str) -> None:
    assert gitsync.ref_problem(ref) is not None


def test_redact_hides_passwords() -> None:
    assert gitsync.redact("https://u:secret@h.example/a/b") == "https://u:***@h.example/a/b"
    assert gitsync.redact("https://h.example/a/b") == "https://h.example/a/b"
    assert gitsync.redact("git@h:a/b") == "git@h:a/b"


def test_git_runs_without_prompts() -> None:
    env = gitsync._git_env(allow_local=False)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_ALLOW_PROTOCOL"] == "https:ssh"
    assert "file" in gitsync._git_env(allow_local=True)["GIT_ALLOW_PROTOCOL"]


# -- checking out -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_checkout_branch(repo: Path, tmp_path: Path, form: str) -> None:
    url = str(repo) if form == "path" else repo.as_uri()
    commit = gitsync.checkout(url, "main", tmp_path / "out", allow_local=True)
    assert commit == git(repo, "rev-parse", "HEAD")
    assert (tmp_path / "out" / "alpha" / "manifest.json").is_file()
    assert git(tmp_path / "out", "rev-list", "--count", "HEAD") == "1"  # shallow


def test_checkout_tag_and_commit(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    (repo / "alpha" / "main.py").write_text("print('changed')\n")
    git(repo, "commit", "-q", "-am", "change")
    assert gitsync.checkout(repo.as_uri(), "v1", tmp_path / "tag", allow_local=True) == first
    assert gitsync.checkout(repo.as_uri(), first, tmp_path / "sha", allow_local=True) == first
    assert (tmp_path / "sha" / "alpha" / "main.py").read_text() == "print('hi')\n"


def test_checkout_unknown_ref_is_a_git_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="git clone failed"):
        gitsync.checkout(str(repo), "nope", tmp_path / "out", allow_local=True)
    with pytest.raises(GitError, match="git fetch failed"):
        gitsync.checkout(str(repo), "f" * 40, tmp_path / "sha", allow_local=True)


def test_checkout_refuses_before_running_git(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="api_allow_local_repos"):
        gitsync.checkout(str(repo), "main", tmp_path / "out")
    with pytest.raises(ValueError, match="not a valid"):
        gitsync.checkout(str(repo), "--upload-pack=x", tmp_path / "out", allow_local=True)
    assert not (tmp_path / "out").exists()


def test_checkout_times_out(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="did not finish"):
        gitsync.checkout(str(repo), "main", tmp_path / "out", allow_local=True, timeout=1e-6)


def test_missing_repository_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError):
        gitsync.checkout(str(tmp_path / "none"), "main", tmp_path / "out", allow_local=True)


# -- scanning and deploying -------------------------------------------------------------------


def test_sync_deploys_each_service_folder(repo: Path) -> None:
    seen: list[tuple[str, str]] = []

    def deploy(folder: Path, commit: str) -> Deployed:
        package = load_package(folder)  # raises PackageError for the broken folder
        seen.append((folder.name, commit))
        return Deployed(package.name, f"{package.name}@{package.short_hash}", True)

    result = gitsync.sync(str(repo), "main", deploy, allow_local=True)
    assert result.commit == git(repo, "rev-parse", "HEAD")
    assert [r.folder for r in result.folders] == ["alpha", "beta", "broken"]
    alpha, beta, broken = result.folders
    assert (alpha.service, alpha.created, alpha.ok) == ("alpha", True, True)
    assert beta.service == "beta" and beta.version and beta.version.startswith("beta@")
    assert not broken.ok and broken.service is None
    assert any("name" in p for p in broken.problems)
    assert any("retries" in p for p in broken.problems)
    assert seen == [("alpha", result.commit), ("beta", result.commit)]


def test_a_failing_deploy_does_not_stop_the_others(repo: Path) -> None:
    def deploy(folder: Path, commit: str) -> Deployed:
        if folder.name == "alpha":
            raise ValueError("a service named 'alpha' already exists in another project")
        if folder.name == "broken":
            raise PackageError(["manifest.json: one", "manifest.json: two"])
        return Deployed(folder.name, f"{folder.name}@x", False)

    result = gitsync.sync(repo.as_uri(), "main", deploy, allow_local=True)
    by_folder = {r.folder: r for r in result.folders}
    assert by_folder["alpha"].problems == [
        "a service named 'alpha' already exists in another project"
    ]
    assert by_folder["broken"].problems == ["manifest.json: one", "manifest.json: two"]
    assert by_folder["beta"].ok and by_folder["beta"].created is False


def test_symlinked_folders_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    write_service(root / "real", "real")
    outside = tmp_path / "outside"
    write_service(outside, "outside")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(root / "real" / "main.py")
    folders, refused = gitsync.service_folders(root)
    assert [f.name for f in folders] == ["real"]
    assert [(r.folder, r.ok) for r in refused] == [("linked", False)]
    assert "symlink" in refused[0].problems[0]


def test_too_many_service_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitsync, "MAX_SERVICE_FOLDERS", 1)
    root = tmp_path / "checkout"
    write_service(root / "a", "a")
    write_service(root / "b", "b")
    with pytest.raises(ValueError, match="more than the limit of 1"):
        gitsync.deploy_folders(root, "c" * 40, lambda f, c: Deployed(f.name, "v", True))


# -- hosts git may reach ------------------------------------------------------------------------

ADDRESSES = {
    "git.example.com": ["140.82.121.3", "2606:50c0:8000::154"],
    "inside.example.com": ["10.0.0.5"],
    "rebound.example.com": ["140.82.121.3", "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "v6.example.com": ["fe80::1%eth0"],
}


def fake_resolve(host: str) -> list[str]:
    """No network: names resolve from ADDRESSES only."""
    if host not in ADDRESSES:
        raise OSError(f"unknown host {host}")
    return ADDRESSES[host]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1/x.git", "'127.0.0.1' is a loopback address"),
        ("http://[::1]/x.git", "'::1' is a loopback address"),
        ("http://169.254.169.254/x", "'169.254.169.254' is a link-local address"),
        ("http://10.0.0.5/x", "'10.0.0.5' is a private address"),
        ("https://192.168.1.20/x.git", "a private address"),
        ("https://[::ffff:127.0.0.1]/x.git", "a loopback address"),
        ("https://0.0.0.0/x.git", "an unspecified address"),
        ("https://100.64.0.1/x.git", "a non-public address"),
        ("ssh://git@10.1.2.3/x.git", "a private address"),
        ("git@172.16.0.9:acme/x.git", "a private address"),
        ("https://inside.example.com/x.git", "resolves to 10.0.0.5, a private address"),
        ("https://rebound.example.com/x.git", "resolves to 127.0.0.1, a loopback address"),
        ("git@metadata.example.com:a/b", "resolves to 169.254.169.254, a link-local address"),
        ("https://v6.example.com/x.git", "resolves to fe80::1, a link-local address"),
        ("https://nowhere.example.com/x.git", "cannot resolve the host 'nowhere.example.com'"),
    ],
)
def test_non_public_hosts_are_refused(url: str, words: str) -> None:
    problem = gitsync.address_problem(url, resolve=fake_resolve)
    assert problem is not None and words in problem, problem
    assert "git_allowed_hosts" in problem or "resolve" in problem


def test_public_and_allowed_hosts_pass() -> None:
    assert gitsync.address_problem("https://git.example.com/a/b", resolve=fake_resolve) is None
    assert gitsync.address_problem("git@git.example.com:a/b", resolve=fake_resolve) is None
    for allowed in (["inside.example.com"], ["INSIDE.example.com."], ["10.0.0.0/8"], ["10.0.0.5"]):
        url = "https://inside.example.com/x.git"
        assert gitsync.address_problem(url, allowed, resolve=fake_resolve) is None, allowed
    assert gitsync.address_problem("http://127.0.0.1/x.git", ["127.0.0.1"]) is None
    assert gitsync.address_problem("http://[::1]/x.git", ["::1/128"]) is None
    # an allowed network covers only its addresses
    url = "https://rebound.example.com/x.git"
    assert gitsync.address_problem(url, ["10.0.0.0/8"], resolve=fake_resolve) is not None


def test_names_are_not_resolved_without_a_resolver_or_when_allowed() -> None:
    def no_dns(host: str) -> list[str]:
        raise AssertionError(f"resolved {host}")

    assert gitsync.address_problem("https://inside.example.com/x", resolve=None) is None
    assert gitsync.address_problem("https://10.0.0.5/x", resolve=None) is not None  # literal
    assert gitsync.address_problem("https://a.example/x", ["a.example"], resolve=no_dns) is None
    for url in ("file:///srv/repo", "/srv/repo"):
        assert gitsync.address_problem(url, resolve=no_dns) is None  # local: allow_local decides


def test_checkout_refuses_a_private_host_before_running_git(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"resolves to 10\.0\.0\.5, a private address"):
        gitsync.checkout(
            "https://inside.example.com/acme/x.git", "main", tmp_path / "out", resolve=fake_resolve
        )
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="a loopback address"):
        gitsync.sync("https://127.0.0.1/acme/x.git", "main", lambda f, c: Deployed("", "", True))


def test_https_checkouts_are_pinned_and_follow_no_redirects() -> None:
    config = gitsync._pins("https://git.example.com:8443/a/b.git", ["140.82.121.3", "2606::1"])
    assert config == [
        ("http.followRedirects", "false"),
        ("http.curloptResolve", "git.example.com:8443:140.82.121.3,[2606::1]"),
    ]
    env = gitsync._git_env(False, config)
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert env["GIT_CONFIG_KEY_1"] == "http.curloptResolve"
    assert gitsync._pins("git@git.example.com:a/b", ["140.82.121.3"]) == []
    assert "GIT_CONFIG_COUNT" not in gitsync._git_env(True)


def test_a_huge_file_in_a_service_folder_is_refused_unread(repo: Path) -> None:
    (repo / "alpha" / "big.bin").write_bytes(bytes(3 * 1024 * 1024))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    limits = ArchiveLimits(max_entry_bytes=1024 * 1024)

    def deploy(folder: Path, commit: str) -> Deployed:
        package = load_package(folder, limits)
        return Deployed(package.name, package.short_hash, True)

    result = gitsync.sync(str(repo), "main", deploy, allow_local=True)
    by_folder = {r.folder: r for r in result.folders}
    assert by_folder["alpha"].problems == [
        "big.bin is 3145728 bytes, more than the limit of 1048576 bytes per file"
    ]
    assert by_folder["beta"].ok
