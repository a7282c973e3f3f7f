"""Services from a git repository: each top-level folder with a ``manifest.json`` is a service.

:func:`sync` checks a repository out at a ref (a shallow clone of a branch or tag, or a fetch of
one commit) into a temporary folder with the ``git`` command line, then hands each service
folder to a ``deploy`` callback; a folder that fails (invalid package, name taken) is reported
with its problems and does not stop the others.

``git`` runs without a shell, with a timeout, without prompting for credentials
(``GIT_TERMINAL_PROMPT=0``, no controlling terminal) and limited to the transports
:func:`url_problem` allows: ``https://``, ``ssh://`` and ``user@host:path``, plus ``file://``
URLs and absolute local paths only when ``allow_local`` is set. A remote host must resolve to
public addresses only (:func:`address_problem`) unless ``allowed_hosts`` names it; an https
checkout is pinned to the addresses checked and follows no redirects. The service folders are
read by the ``deploy`` callback within the package limits
(:class:`~fxray.packages.archive.ArchiveLimits`: files counted and sized with ``os.stat``
before they are read).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Collection
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
Resolver = Callable[[str], list[str]]
"""``resolve(host)``: the IP addresses a host name resolves to (raise OSError if none)."""
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to, by ``socket.getaddrinfo``."""
    found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def remote_host(url: str) -> str | None:
    """The host a remote URL names (``scheme://host/...`` or ``user@host:path``); None for a
    local path or a URL without one."""
    if is_local(url):
        return None
    if "://" in url:
        try:
            return urlsplit(url).hostname or None
        except ValueError:
            return None
    match = _SCP_RE.match(url)
    return match["host"] if match else None


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _non_public(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is, or None for a public one."""
    kinds = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),
    )
    return next((kind for kind, hit in kinds if hit), None)


def _allowed(host: str, ip: IPAddress | None, allowed_hosts: Collection[str]) -> bool:
    """Whether ``allowed_hosts`` names ``host``, or (given ``ip``) an address or network of it."""
    name = host.lower().rstrip(".")
    for raw in allowed_hosts:
        entry = raw.strip().lower().rstrip(".")
        if entry == name and entry:
            return True
        if ip is None or not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:  # a host name
            continue
        if ip in network:
            return True
    return False


def _addresses(
    url: str, allowed_hosts: Collection[str], resolve: Resolver | None
) -> tuple[str | None, list[str]]:
    """``(why the URL's host may not be reached or None, the addresses checked)``."""
    host = remote_host(url)
    if host is None or _allowed(host, None, allowed_hosts):
        return None, []
    literal = _ip(host)
    if literal is not None:
        found = [str(literal)]
    elif resolve is None:
        return None, []
    else:
        try:
            found = resolve(host)
        except (OSError, UnicodeError) as exc:
            return f"cannot resolve the host {host!r}: {exc}", []
        if not found:
            return f"the host {host!r} resolves to no address", []
    for address in found:
        ip = _ip(address)
        if ip is None:
            return f"the host {host!r} resolves to {address!r}, which is not an IP address", []
        if _allowed(host, ip, allowed_hosts):
            continue
        kind = _non_public(ip)
        if kind is not None:
            what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
            where = f"is {what}" if literal else f"resolves to {ip}, {what}"
            return (
                f"the host {host!r} {where}; git sync only reaches public hosts unless the "
                "git_allowed_hosts setting names the host"
            ), []
    return None, found


def address_problem(
    url: str, allowed_hosts: Collection[str] = (), resolve: Resolver | None = resolve_host
) -> str | None:
    """Why the host of ``url`` may not be reached, or None: it is (or resolves to) a loopback,
    link-local, private, reserved or otherwise non-public address that ``allowed_hosts``
    (names, addresses or networks such as ``10.0.0.0/8``) does not name. Local paths have no
    host. With ``resolve=None`` only literal addresses are checked (no DNS)."""
    return _addresses(url, allowed_hosts, resolve)[0]


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
    allowed_hosts: Collection[str] = (),
    resolve: Resolver = resolve_host,
    timeout: float = GIT_TIMEOUT_S,
) -> str:
    """Check ``url`` out at ``ref`` into the new folder ``dest``; returns the commit id.

    A 40-hex ``ref`` is fetched as a commit; anything else is cloned as a branch or tag, both
    shallow. Raises ValueError for a refused URL, host (:func:`address_problem`) or ref,
    :class:`GitError` if git fails.
    """
    problem = url_problem(url, allow_local=allow_local) or ref_problem(ref)
    if problem:
        raise ValueError(problem)
    problem, addresses = _addresses(url, allowed_hosts, resolve)
    if problem:
        raise ValueError(problem)
    env = _git_env(allow_local, _pins(url, addresses))
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


def _pins(url: str, addresses: list[str]) -> list[tuple[str, str]]:
    """git config that makes an https checkout connect only to the ``addresses`` checked (no
    second DNS answer) and follow no redirect (to a host nobody checked)."""
    if not url.lower().startswith("https://"):
        return []
    config = [("http.followRedirects", "false")]
    parts = urlsplit(url)
    if addresses and parts.hostname:
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        config.append(("http.curloptResolve", f"{parts.hostname}:{parts.port or 443}:{listed}"))
    return config


def _git_env(allow_local: bool, config: list[tuple[str, str]] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GCM_INTERACTIVE="never",
        GIT_ALLOW_PROTOCOL="https:ssh:file" if allow_local else "https:ssh",
        GIT_LFS_SKIP_SMUDGE="1",
    )
    for key in ("GIT_ASKPASS", "SSH_ASKPASS"):
        env.pop(key, None)
    for i, (key, value) in enumerate(config or []):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if config:
        env["GIT_CONFIG_COUNT"] = str(len(config))
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
    allowed_hosts: Collection[str] = (),
    resolve: Resolver = resolve_host,
    timeout: float = GIT_TIMEOUT_S,
) -> SyncResult:
    """Check the repository out in a temporary folder and deploy its service folders."""
    with tempfile.TemporaryDirectory(prefix="fxray-git-", ignore_cleanup_errors=True) as tmp:
        dest = Path(tmp) / "checkout"
        commit = checkout(
            url,
            ref,
            dest,
            allow_local=allow_local,
            allowed_hosts=allowed_hosts,
            resolve=resolve,
            timeout=timeout,
        )
        return SyncResult(commit, deploy_folders(dest, commit, deploy))
