"""docs/api.md runs as written: its worked example against a live server, and its CLI block
is exactly the session ``tests/integration/cli/test_remote.py`` runs."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.integration.cli.test_remote import ERROR_EXAMPLES, EXAMPLES, Remote, remote

__all__ = ["remote"]  # the live-server fixture, shared with the CLI tests

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "api.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def test_cli_block_is_the_tested_session() -> None:
    (block,) = _blocks("sh")
    assert block.strip().splitlines() == EXAMPLES
    errors = _blocks("text")[-1]
    for command, _, message in ERROR_EXAMPLES:
        assert f"$ {command}\n{message}\n" in errors


def test_worked_example_runs_as_written(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = [block for block in _blocks("python") if "httpx.Client(" in block]
    expected = _blocks("text")[0].strip().splitlines()
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FXRAY_API_URL", remote.url)
    monkeypatch.setenv("FXRAY_API_KEY", remote.api.admin["Authorization"].removeprefix("Bearer "))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/api.md", "exec"), {"__name__": "__docs__"})
    assert out.getvalue().strip().splitlines() == expected
