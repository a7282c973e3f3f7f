"""The README's tour runs as written."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_tour_cli_commands_run(tmp_path: Path) -> None:
    commands = [
        line for block in _blocks("bash") for line in block.splitlines() if "fxray " in line
    ]
    assert commands, "the README shows fxray commands"
    for command in commands:
        args = command.split()
        args[0] = str(ROOT / args[0])
        args = [str(ROOT / a) if a.startswith("examples/") else a for a in args]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def test_tour_python_runs(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = [block for block in _blocks("python") if "fxray.Platform()" in block]
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FXRAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FXRAY_INSTANCE", f"readme{uuid.uuid4().hex[:6]}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    assert printed.startswith("succeeded greeter@")
    assert "[greet.py] STDOUT Hello, Ada! (greeting number 1)" in printed
    assert "event demo.greet" in printed and "run greeter" in printed
    assert "event demo.greeted" in printed
