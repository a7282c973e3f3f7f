"""Requirements that clash with the packages the platform itself runs on.

A version's ``requirements.txt`` is installed into a folder that goes first on its executor's
import path. A requirement naming a package that the executor process imports too (Ray,
fxray and what they depend on) at a version the platform does not have replaces the
platform's copy in that process: ``pydantic==1.10.13`` makes Ray fail to start the executor.
:func:`platform_clashes` finds such requirements among a package's own lines (what they pull
in further is only known once pip has resolved them), so ``fxray validate`` can say so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

PLATFORM_DISTRIBUTION = "fxray"


@dataclass(frozen=True, slots=True)
class Clash:
    """A requirement the platform's own version of the package does not satisfy."""

    requirement: str
    package: str
    platform_version: str

    def describe(self) -> str:
        return (
            f"{self.requirement}: the platform runs {self.package} {self.platform_version}, "
            "which this requirement excludes"
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
