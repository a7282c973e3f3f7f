"""Requirements that exclude the version of a package the platform runs on."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fxray.services import clashes
from fxray.services.clashes import (
    IsolationDecision,
    Resolution,
    ResolveError,
    decide_isolation,
    env_clashes,
    platform_clashes,
    platform_packages,
    resolve,
    resolved_clashes,
)

PLATFORM = {"pydantic": "2.12.0", "protobuf": "5.29.1", "urllib3": "2.5.0", "ray": "2.60.0"}


def test_pins_the_platform_cannot_satisfy_are_clashes() -> None:
    lines = [
        "pydantic==1.10.13",
        "protobuf>=3,<4",
        "urllib3<1.27",
        "Ray==2.60.0",  # the platform's own version: no clash
        "pydantic>=2",
        "six==1.16.0",  # not a platform package
        "not a requirement ((",
    ]
    clashes = platform_clashes(lines, lambda: PLATFORM)
    assert [(c.requirement, c.package, c.platform_version) for c in clashes] == [
        ("pydantic==1.10.13", "pydantic", "2.12.0"),
        ("protobuf>=3,<4", "protobuf", "5.29.1"),
        ("urllib3<1.27", "urllib3", "2.5.0"),
    ]
    assert "the platform runs pydantic 2.12.0" in clashes[0].describe()


def test_the_platform_packages_are_what_fxray_runs_on_not_its_dev_tools() -> None:
    packages = platform_packages()
    for needed in ("ray", "pydantic", "confluent-kafka", "sqlalchemy", "protobuf"):
        assert needed in packages
    for dev_tool in ("pytest", "hypothesis", "ruff"):
        assert dev_tool not in packages


# -- resolution -------------------------------------------------------------------------------


def _item(name: str, version: str, requires: list[str], requested: bool = False) -> dict:
    return {
        "metadata": {"name": name, "version": version, "requires_dist": requires},
        "requested": requested,
    }


REPORT = {  # the shape of `pip install --dry-run --report` for requests==2.25.1
    "version": "1",
    "install": [
        _item(
            "requests",
            "2.25.1",
            [
                "chardet<5,>=3.0.2",
                "idna<3,>=2.5",
                "urllib3<1.27,>=1.21.1",
                "PySocks!=1.5.7,>=1.5.6; extra == 'socks'",
            ],
            requested=True,
        ),
        _item("chardet", "4.0.0", []),
        _item("idna", "2.10", []),
        _item("urllib3", "1.26.20", ["brotli>=1.0.9; extra == 'brotli'"]),
        _item("pydantic", "1.10.13", ["typing-extensions>=4.2.0"], requested=True),
        _item("typing_extensions", "4.16.0", []),
    ],
}


def test_what_the_requirements_pull_in_clashes_too_and_names_its_requirement() -> None:
    resolution = clashes._from_report(REPORT)
    assert resolution.packages["typing-extensions"] == "4.16.0"
    assert resolution.needed_by["urllib3"] == ["requests"]
    assert "pysocks" not in resolution.needed_by  # an extra nobody asked for
    platform = {**PLATFORM, "idna": "3.20", "typing-extensions": "4.16.0"}
    found = resolved_clashes(
        resolution, ["requests==2.25.1", "pydantic==1.10.13"], lambda: platform
    )
    assert [(c.requirement, c.package, c.version, c.platform_version) for c in found] == [
        ("requests==2.25.1", "idna", "2.10", "3.20"),
        ("pydantic==1.10.13", "pydantic", "1.10.13", "2.12.0"),
        ("requests==2.25.1", "urllib3", "1.26.20", "2.5.0"),
    ]
    assert found[2].describe() == (
        "requests==2.25.1 installs urllib3 1.26.20; the platform runs urllib3 2.5.0"
    )


def test_a_resolution_is_cached_by_requirements_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[list[str]] = []

    def fake_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        runs.append(command)
        report = Path(command[command.index("--report") + 1])
        report.write_text(json.dumps(REPORT))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(clashes.subprocess, "run", fake_pip)
    first = resolve(["requests==2.25.1"], cache_dir=tmp_path, index_url="http://idx/simple")
    again = resolve(["Requests == 2.25.1"], cache_dir=tmp_path)  # the same, normalised
    assert first == again and len(runs) == 1
    assert runs[0][-2:] == ["--", "requests==2.25.1"]
    assert "--dry-run" in runs[0] and "--ignore-installed" in runs[0]
    assert runs[0][runs[0].index("--index-url") + 1] == "http://idx/simple"


def test_a_failed_resolution_says_what_pip_said(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        stderr = "WARNING: retrying\nERROR: No matching distribution found for nope==9\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(clashes.subprocess, "run", failing)
    with pytest.raises(ResolveError, match="No matching distribution found for nope==9"):
        resolve(["nope==9"])


def test_an_installed_environment_is_read_from_its_dist_info(tmp_path: Path) -> None:
    for name, version in (("pydantic", "1.10.13"), ("six", "1.16.0"), ("Ray", "2.60.0")):
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    found = env_clashes(tmp_path, lambda: PLATFORM)
    assert [(c.package, c.version, c.platform_version) for c in found] == [
        ("pydantic", "1.10.13", "2.12.0")
    ]


# -- the decision -----------------------------------------------------------------------------


def _resolver(packages: dict[str, str]) -> Callable[[list[str]], Resolution]:
    return lambda requirements: Resolution(packages)


@pytest.mark.parametrize(
    ("requested", "packages", "isolated", "summary"),
    [
        ("auto", {"pydantic": "1.10.13"}, True, "runs in an isolated worker process because"),
        ("auto", {"six": "1.16.0"}, False, "its resolved packages do not clash"),
        ("auto", {"ray": "2.60.0"}, False, "do not clash"),  # the platform's own version
        ("process", {}, True, "the manifest asks for it"),
        ("in-process", {"pydantic": "1.10.13"}, False, "the manifest asks for it, despite: "),
    ],
)
def test_a_version_runs_isolated_when_it_clashes_or_asks_to(
    requested: str, packages: dict[str, str], isolated: bool, summary: str
) -> None:
    lines = [f"{name}=={version}" for name, version in packages.items()]
    decision = decide_isolation(
        lines, requested, resolver=_resolver(packages), platform=lambda: PLATFORM
    )
    assert decision.isolated is isolated
    assert decision.mode == ("process" if isolated else "in-process")
    assert summary in decision.summary()
    assert IsolationDecision.from_json(decision.to_json()) == decision


def test_without_a_resolution_only_the_lines_are_checked_and_the_decision_says_so() -> None:
    def unreachable(requirements: list[str]) -> Resolution:
        raise ResolveError("no index")

    decision = decide_isolation(
        ["pydantic<2", "requests==2.25.1"], resolver=unreachable, platform=lambda: PLATFORM
    )
    assert decision.isolated and not decision.resolved
    assert decision.note == "could not resolve the requirements: no index"
    assert [c.package for c in decision.clashes] == ["pydantic"]  # requests' urllib3 unseen
    offline = decide_isolation(["six"], platform=lambda: PLATFORM)
    assert (offline.isolated, offline.resolved, offline.note) == (False, False, "not resolved")
    assert "its own requirement lines do not clash" in offline.summary()
    nothing = decide_isolation([], resolver=unreachable)
    assert (nothing.isolated, nothing.resolved, nothing.clashes) == (False, True, [])
