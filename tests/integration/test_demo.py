"""The demo runs end to end on a local platform and reports success."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxray import demo


@pytest.mark.integration
@pytest.mark.slow
def test_demo_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert demo.main(home=str(home)) == 0
    out = capsys.readouterr().out
    assert "demo passed" in out
    assert "shop.invoice.ready" in out
    assert "demo-token-4f9a1c" not in out
    assert not home.exists()  # removed at the end unless keep=True


@pytest.mark.integration
def test_demo_refuses_a_home_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    assert demo.main(home=str(tmp_path)) == 2
    assert (tmp_path / "something").exists()
