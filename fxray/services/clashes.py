"""Requirements that clash with the packages the platform itself runs on, and what follows.

A version's ``requirements.txt`` is installed into a folder of its own. In-process, that folder
goes first on the executor's import path, so a distribution the executor imports too (Ray,
fxray and what they depend on) at another version would replace the platform's copy in that
process (``pydantic==1.10.13`` makes Ray fail to start the executor), or be shadowed by a
module the platform had already imported. Such a version runs *isolated* instead: in a worker
process whose import path holds only its own packages (:mod:`fxray.runtime.isolated`).

- :func:`platform_clashes`: the clashes among a package's own requirement lines (offline);
- :func:`resolve`: every distribution the requirements install (``pip install --dry-run
  --ignore-installed --report``), cached by requirements hash;
- :func:`resolved_clashes`, :func:`env_clashes`: the clashes of a resolution, of a built env;
- :func:`decide_isolation`: in-process or isolated, given the manifest's ``isolation``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fxray.services.package import requirements_hash

PLATFORM_DISTRIBUTION = "fxray"
RESOLVE_TIMEOUT_S = 120.0
ISOLATION_KEY = "_isolation"  # where a version's manifest record keeps its decision

Isolation = Literal["auto", "process", "in-process"]


@dataclass(frozen=True, slots=True)
class Clash:
    """A distribution the service would get at a version the platform does not run.

    ``version`` is the version it would install (known once resolved; ``""`` for a
    requirement line checked on its own), ``requirement`` the line that brings it in.
    """

    requirement: str
    package: str
    platform_version: str
    version: str = ""

    def describe(self) -> str:
        if self.version:
            return (
                f"{self.requirement} installs {self.package} {self.version}; "
                f"the platform runs {self.package} {self.platform_version}"
            )
        return (
            f"{self.requirement}: the platform runs {self.package} {self.platform_version}, "
            "which this requirement excludes"
        )

    def to_json(self) -> dict[str, str]:
        return {
            "requirement": self.requirement,
            "package": self.package,
            "version": self.version,
            "platform_version": self.platform_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Clash:
        return cls(
            str(data.get("requirement", "")),
            str(data.get("package", "")),
            str(data.get("platform_version", "")),
            str(data.get("version", "")),
        )


def platform_clashes(
    requirements: Iterable[str],
    platform: Callable[[], dict[str, str]] | None = None,
) -> list[Clash]:
    """The requirement lines that exclude the version of a package the platform runs on."""
    versions = (platform or platform_packages)()
    clashes = []
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # the package checks report it
        name = canonicalize_name(requirement.name)
        have = versions.get(name)
        if have is not None and not requirement.specifier.contains(have, prereleases=True):
            clashes.append(Clash(line.strip(), name, have))
    return clashes


@functools.cache
def platform_packages() -> dict[str, str]:
    """The installed distributions fxray needs to run, with their versions: fxray's
    requirements, followed through the installed distributions (extras included)."""
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(PLATFORM_DISTRIBUTION, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[canonicalize_name(name)] = dist.version
        for line in dist.requires or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if not _applies(requirement, extras):
                continue
            pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    found.pop(PLATFORM_DISTRIBUTION, None)
    return found


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether a dependency line counts here: its marker holds, for no extra or one of ours
    (fxray's own extras, such as ``dev``, are not what the executor runs on)."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras))


# -- resolution ---------------------------------------------------------------------------------


class ResolveError(RuntimeError):
    """pip could not resolve the requirements (no index reachable, no such version, ...)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """Every distribution a set of requirements installs, and which of them needs which."""

    packages: dict[str, str]  # canonical name -> version
    needed_by: dict[str, list[str]] = field(default_factory=dict)  # name -> names needing it


def resolve(
    requirements: list[str],
    *,
    cache_dir: Path | None = None,
    index_url: str | None = None,
    timeout_s: float = RESOLVE_TIMEOUT_S,
) -> Resolution:
    """What ``pip install`` of ``requirements`` into an empty folder would install, for this
    interpreter (``--dry-run --ignore-installed --report``: nothing is installed). Cached in
    ``cache_dir`` by requirements hash. Raises :class:`ResolveError`."""
    cache = None
    if cache_dir is not None and requirements:
        cache = cache_dir / f"{requirements_hash(requirements)}.resolved.json"
        cached = _read_cached(cache)
        if cached is not None:
            return cached
    with tempfile.TemporaryDirectory(prefix="fxray-resolve-") as scratch:
        report_path = Path(scratch) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--no-input", "--disable-pip-version-check", "--retries", "1",
            "--timeout", "15", "--report", str(report_path),
        ]  # fmt: skip
        if index_url:
            command += ["--index-url", index_url]
        try:
            done = subprocess.run(
                [*command, "--", *requirements],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ResolveError(f"resolving took over {timeout_s:.0f}s") from exc
        except OSError as exc:
            raise ResolveError(f"could not run pip: {exc}") from exc
        if done.returncode != 0 or not report_path.exists():
            lines = (done.stderr or done.stdout).strip().splitlines()
            errors = [line for line in lines if "ERROR" in line] or lines[-3:]
            raise ResolveError(" ".join(line.strip() for line in errors)[:600] or "pip failed")
        resolution = _from_report(json.loads(report_path.read_text()))
    if cache is not None:
        _write_cached(cache, requirements, resolution)
    return resolution


def _from_report(report: dict[str, Any]) -> Resolution:
    items = report.get("install") or []
    packages: dict[str, str] = {}
    for item in items:
        meta = item.get("metadata") or {}
        packages[canonicalize_name(meta["name"])] = str(meta["version"])
    needed_by: dict[str, list[str]] = {}
    for item in items:
        meta = item.get("metadata") or {}
        name = canonicalize_name(meta["name"])
        extras = frozenset(item.get("requested_extras") or ())
        for line in meta.get("requires_dist") or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency in packages and _applies(requirement, extras):
                needed_by.setdefault(dependency, []).append(name)
    return Resolution(packages, needed_by)


def _read_cached(path: Path) -> Resolution | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("python") != _interpreter():
        return None
    return Resolution(dict(data["packages"]), {k: list(v) for k, v in data["needed_by"].items()})


def _write_cached(path: Path, requirements: list[str], resolution: Resolution) -> None:
    body = {
        "python": _interpreter(),
        "requirements": requirements,
        "packages": resolution.packages,
        "needed_by": resolution.needed_by,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(body, indent=1, sort_keys=True))
        os.replace(partial, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next deploy a resolution


def _interpreter() -> str:
    return f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-{sys.platform}"


def resolved_clashes(
    resolution: Resolution,
    requirements: Iterable[str],
    platform: Callable[[], dict[str, str]] | None = None,
) -> list[Clash]:
    """The resolved distributions the platform runs at another version, each with the
    requirement line that brings it in."""
    own = _own_lines(requirements)

    def via(name: str) -> str:
        """The own line that needs ``name``, following the "needed by" links upwards."""
        seen = {name}
        queue = deque([name])
        while queue:
            current = queue.popleft()
            if current in own:
                return own[current]
            for parent in resolution.needed_by.get(current, []):
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
        return "a dependency"

    return _version_clashes(resolution.packages, via, platform)


def env_clashes(
    env_path: Path, platform: Callable[[], dict[str, str]] | None = None
) -> list[Clash]:
    """The clashes of an installed environment folder, read from its ``.dist-info``."""
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=[str(env_path)])
        if dist.metadata["Name"]
    }
    return _version_clashes(installed, lambda name: f"{name} (installed)", platform)


def _version_clashes(
    packages: Mapping[str, str],
    via: Callable[[str], str],
    platform: Callable[[], dict[str, str]] | None,
) -> list[Clash]:
    versions = (platform or platform_packages)()
    clashes = []
    for name, version in sorted(packages.items()):
        have = versions.get(name)
        if have is not None and not _same_version(have, version):
            clashes.append(Clash(via(name), name, have, version))
    return clashes


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _own_lines(requirements: Iterable[str]) -> dict[str, str]:
    own = {}
    for line in requirements:
        try:
            own[canonicalize_name(Requirement(line).name)] = line.strip()
        except InvalidRequirement:
            continue
    return own


# -- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IsolationDecision:
    """How a version runs: in the executor's process, or in an isolated worker process."""

    requested: str  # the manifest's ``isolation``: auto, process or in-process
    isolated: bool
    clashes: list[Clash] = field(default_factory=list)
    resolved: bool = True  # every installed distribution was checked, not only own lines
    note: str | None = None  # why they were not

    @property
    def mode(self) -> str:
        return "process" if self.isolated else "in-process"

    def summary(self) -> str:
        """One sentence: the choice and its reason."""
        found = "; ".join(c.describe() for c in self.clashes)
        if self.requested == "process":
            why = "the manifest asks for it" + (f" (and {found})" if found else "")
            return f"runs in an isolated worker process: {why}"
        if self.requested == "in-process":
            risk = f", despite: {found}" if found else ""
            return f"runs in the executor's process: the manifest asks for it{risk}"
        if self.isolated:
            return f"runs in an isolated worker process because {found}"
        checked = "its resolved packages" if self.resolved else "its own requirement lines"
        return f"runs in the executor's process: {checked} do not clash with the platform's"

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "mode": self.mode,
            "clashes": [c.to_json() for c in self.clashes],
            "resolved": self.resolved,
            "note": self.note,
            "summary": self.summary(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IsolationDecision:
        return cls(
            requested=str(data.get("requested", "auto")),
            isolated=data.get("mode") == "process",
            clashes=[Clash.from_json(c) for c in data.get("clashes") or []],
            resolved=bool(data.get("resolved", False)),
            note=data.get("note"),
        )


def decide_isolation(
    requirements: list[str],
    requested: str = "auto",
    *,
    resolver: Callable[[list[str]], Resolution] | None = None,
    platform: Callable[[], dict[str, str]] | None = None,
) -> IsolationDecision:
    """Isolated when the manifest asks for it, or (``auto``) when anything the requirements
    install clashes with the platform. Without a ``resolver``, or when it fails, only the
    requirement lines themselves are checked, and ``note`` says so."""
    note = None
    resolved = True
    if not requirements:
        clashes: list[Clash] = []
    elif resolver is None:
        clashes, resolved, note = platform_clashes(requirements, platform), False, "not resolved"
    else:
        try:
            clashes = resolved_clashes(resolver(requirements), requirements, platform)
        except ResolveError as exc:
            clashes = platform_clashes(requirements, platform)
            resolved, note = False, f"could not resolve the requirements: {exc}"
    isolated = requested == "process" or (requested == "auto" and bool(clashes))
    return IsolationDecision(requested, isolated, clashes, resolved, note)
