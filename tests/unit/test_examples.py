"""The sample services in ``examples/`` are valid, and their README commands work."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fxray import load_package
from fxray.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FOLDERS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith("bad_"))
COMMAND = re.compile(r"^\s*(fxray (?:validate|run-local)\b.*)$", re.MULTILINE)


def readme_commands() -> list[tuple[str, str]]:
    """``(example, command line)`` for every ``fxray validate/run-local`` line of a README."""
    found = []
    for folder in FOLDERS:
        readme = folder / "README.md"
        for line in COMMAND.findall(readme.read_text()) if readme.exists() else []:
            found.append((folder.name, line.strip()))
    return found


def test_there_are_examples() -> None:
    names = {p.name for p in FOLDERS}
    assert {"order-intake", "fraud-score", "fraud-score-v2", "invoice"} <= names


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_example_loads_without_problems(folder: Path) -> None:
    package = load_package(folder)
    assert package.steps
    assert (folder / "README.md").exists()


def test_fraud_score_versions_share_a_name_but_not_content() -> None:
    v1 = load_package(EXAMPLES / "fraud-score")
    v2 = load_package(EXAMPLES / "fraud-score-v2")
    assert v1.name == v2.name == "fraud-score"
    assert v1.content_hash != v2.content_hash


def test_the_flow_is_linked_by_the_manifests() -> None:
    packages = {p.name: load_package(EXAMPLES / p.name) for p in FOLDERS}
    assert packages["order-intake"].manifest.trigger_events == ["shop.order.placed"]
    assert packages["fraud-score"].manifest.trigger_events == ["shop.order.accepted"]
    assert packages["invoice"].manifest.trigger_events == ["shop.order.scored"]
    assert packages["invoice"].requirements == ["humanize==4.9.0"]


def test_readmes_have_commands() -> None:
    commands = readme_commands()
    assert {name for name, _ in commands} == {p.name for p in FOLDERS}
    assert any("run-local" in line for _, line in commands)


@pytest.mark.parametrize(("example", "line"), readme_commands(), ids=lambda v: v)
def test_readme_command_works(
    example: str, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # README paths are relative to the repository
    monkeypatch.setenv("FXRAY_LOCAL_ENVS", str(tmp_path / "envs"))
    args = shlex.split(line)[1:]
    if args[0] == "run-local":
        args += ["--state", str(tmp_path / "state.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{line}\n{result.output}"
    assert "Traceback" not in result.output
    if args[0] == "run-local":
        manifest = json.loads((ROOT / args[1] / "manifest.json").read_text())
        for event_type in manifest.get("output_events", []):
            assert f"emitted {event_type}" in result.stdout
        assert "demo-token-4f9a1c" not in result.output
