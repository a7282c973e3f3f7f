"""Services from a git repository: each top-level folder with a ``manifest.json`` is a service.

:func:`sync` checks a repository out at a ref (a shallow clone of a branch or tag, or a fetch of
one commit) into a temporary folder with the ``git`` command line, then hands each service
folder to a ``deploy`` callback; a folder that fails (invalid package, name taken) is reported
with its problems and does not stop the others.

``git`` runs without a shell, with a timeout, without prompting for credentials
(``GIT_TERMINAL_PROMPT=0``, no controlling terminal) and limited to the transports
:func:`url_problem` allows: ``https://``, ``ssh://`` and ``user@host:path``, plus ``file://``
URLs and absolute local paths only when ``allow_local`` is set.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fxray.services.package import MANIFEST_FILE, PackageError

GIT_TIMEOUT_S = 120.0
MAX_SERVICE_FOLDERS = 200
MAX_URL_LENGTH = 2048
MAX_REF_LENGTH = 255

_SCP_RE = re.compile(r"^[A-Za-z0-9._~-]+@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<path>.+)$")
_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class GitError(RuntimeError):
    """The repository could not be checked out; the message says why."""


@dataclass(frozen=True, slots=True)
class Deployed:
    """What the ``deploy`` callback made of one folder."""

    service: str
    version: str
    created: bool


@dataclass(frozen=True, slots=True)
class FolderResult:
    """One top-level folder: deployed (``service``, ``version``, ``created``) or ``problems``."""

    folder: str
    service: str | None = None
    version: str | None = None
    created: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class SyncResult:
    commit: str
    folders: list[FolderResult]


Deploy = Callable[[Path, str], Deployed]
"""``deploy(folder, commit)``: deploy one service folder; raise ValueError (PackageError) if bad."""


# -- checking input ---------------------------------------------------------------------------


def is_local(url: str) -> bool:
    """A ``file://`` URL or a local path (not a network transport)."""
    return url.lower().startswith("file://") or url.startswith("/")


def url_problem(url: str, *, allow_local: bool = False) -> str | None:
    """Why ``url`` may not be cloned, or None if it may."""
    if not url:
        return "the URL is empty"
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    if url.startswith("-"):
        return "the URL must not start with '-'"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "the URL must not contain whitespace or control characters"
    allowed = "https://, ssh:// and git@host:path URLs"
    if allow_local:
        allowed += ", file:// URLs and absolute paths"
    lower = url.lower()
    if lower.startswith(("https://", "ssh://")):
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            return f"the URL is not valid: {exc}"
        if not host:
            return "the URL has no host"
        if host.startswith("-"):
            return "the URL's host must not start with '-'"
        if not parts.path.strip("/"):
            return "the URL has no repository path"
        return None
    if is_local(url):
        if not allow_local:
            return (
                "file:// URLs and local paths are refused (the api_allow_local_repos "
                f"setting is off); use {allowed}"
            )
        path = url[len("file://") :] if lower.startswith("file://") else url
        if not path.startswith("/"):
            return "a file:// URL must name an absolute path (file:///path/to/repo)"
        return None
    match = _SCP_RE.match(url)
    if match and "://" not in url:
        if match["path"].startswith("-"):
            return "the repository path must not start with '-'"
        return None
    return f"only {allowed} are allowed"


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not a branch, tag or commit name git would take, or None."""
    if not ref:
        return "the ref is empty"
    if len(ref) > MAX_REF_LENGTH:
        return f"the ref is longer than {MAX_REF_LENGTH} characters"
    bad = (
        not _REF_RE.match(ref)
        or ".." in ref
        or "//" in ref
        or "/." in ref
        or ref.endswith(("/", ".", ".lock"))
    )
    if bad:
        return f"{ref!r} is not a valid branch, tag or commit name"
    return None


def redact(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    if not url.lower().startswith(("https://", "ssh://")):
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# -- git --------------------------------------------------------------------------------------


def checkout(
    url: str,
    ref: str,
    dest: Path,
    *,
    allow_local: bool = False,
    timeout: float = GIT_TIMEOUT_S,
) -> str:
    """Check ``url`` out at ``ref`` into the new folder ``dest``; returns the commit id.

    A 40-hex ``ref`` is fetched as a commit; anything else is cloned as a branch or tag, both
    shallow. Raises ValueError for a refused URL or ref, :class:`GitError` if git fails.
    """
    problem = url_problem(url, allow_local=allow_local) or ref_problem(ref)
    if problem:
        raise ValueError(problem)
    env = _git_env(allow_local)
    local = ["--no-local"] if is_local(url) else []
    if _COMMIT_RE.match(ref):
        dest.mkdir(parents=True)
        _git(["init", "-q"], dest, env, timeout, url)
        _git(["fetch", "-q", "--depth", "1", "--", url, ref], dest, env, timeout, url)
        _git(["checkout", "-q", "--detach", "FETCH_HEAD"], dest, env, timeout, url)
    else:
        args = ["clone", "-q", "--depth", "1", "--single-branch", "--branch", ref, *local]
        _git([*args, "--", url, str(dest)], dest.parent, env, timeout, url)
    return _git(["rev-parse", "HEAD"], dest, env, timeout, url).strip()


def _git_env(allow_local: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GCM_INTERACTIVE="never",
        GIT_ALLOW_PROTOCOL="https:ssh:file" if allow_local else "https:ssh",
        GIT_LFS_SKIP_SMUDGE="1",
    )
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    return env


def _git(args: list[str], cwd: Path, env: dict[str, str], timeout: float, url: str) -> str:
    """Run ``git args`` in ``cwd``, in its own session (no terminal to prompt on); its stdout."""
    command = ["git", *args]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise GitError(f"cannot run git: {exc}") from None
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise GitError(f"git {args[0]} did not finish within {timeout:g}s") from None
    if process.returncode != 0:
        text = err.decode("utf-8", errors="replace").strip().replace(url, redact(url))
        lines = [line for line in text.splitlines() if line.strip()][-5:]
        detail = "; ".join(lines) or f"exit status {process.returncode}"
        raise GitError(f"git {args[0]} failed: {detail}")
    return out.decode("utf-8", errors="replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    process.communicate()


# -- scanning and deploying -------------------------------------------------------------------


def service_folders(root: Path) -> tuple[list[Path], list[FolderResult]]:
    """Top-level folders of ``root`` with a ``manifest.json``, sorted by name; and refusals
    (symlinked folders). Hidden folders (``.git``, ``.github``) are skipped."""
    folders: list[Path] = []
    refused: list[FolderResult] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            if entry.is_dir():
                problem = "the folder is a symlink, which is not allowed in a repository"
                refused.append(FolderResult(entry.name, problems=[problem]))
            continue
        if entry.is_dir() and os.path.lexists(entry / MANIFEST_FILE):
            folders.append(entry)
    return folders, refused


def deploy_folders(root: Path, commit: str, deploy: Deploy) -> list[FolderResult]:
    """Deploy every service folder of a checkout; one failing folder does not stop the rest."""
    folders, results = service_folders(root)
    if len(folders) > MAX_SERVICE_FOLDERS:
        raise ValueError(
            f"the repository has {len(folders)} service folders, more than the limit of "
            f"{MAX_SERVICE_FOLDERS}"
        )
    for folder in folders:
        try:
            done = deploy(folder, commit)
        except PackageError as exc:
            results.append(FolderResult(folder.name, problems=list(exc.problems)))
        except ValueError as exc:  # e.g. the service name belongs to another project
            results.append(FolderResult(folder.name, problems=[str(exc)]))
        else:
            results.append(FolderResult(folder.name, done.service, done.version, done.created))
    return sorted(results, key=lambda r: r.folder)


def sync(
    url: str,
    ref: str,
    deploy: Deploy,
    *,
    allow_local: bool = False,
    timeout: float = GIT_TIMEOUT_S,
) -> SyncResult:
    """Check the repository out in a temporary folder and deploy its service folders."""
    with tempfile.TemporaryDirectory(prefix="fxray-git-", ignore_cleanup_errors=True) as tmp:
        dest = Path(tmp) / "checkout"
        commit = checkout(url, ref, dest, allow_local=allow_local, timeout=timeout)
        return SyncResult(commit, deploy_folders(dest, commit, deploy))
