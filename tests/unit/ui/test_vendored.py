"""The vendored front-end files are the ones their manifest names, byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[3] / "fxray" / "ui" / "static"
TEMPLATES = STATIC.parent / "templates"
OWN = {"ui.css", "ui.js", "triggers.js", "VENDORED.json"}


def _manifest() -> list[dict[str, str]]:
    return json.loads((STATIC / "VENDORED.json").read_text())["files"]


@pytest.mark.parametrize("entry", _manifest(), ids=lambda e: e["file"])
def test_each_vendored_file_matches_its_checksum(entry: dict[str, str]) -> None:
    data = (STATIC / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
    assert entry["source"].startswith("https://registry.npmjs.org/")
    assert entry["version"] in entry["source"]
    assert entry["license"]


def test_every_static_file_is_vendored_with_a_checksum_or_our_own() -> None:
    listed = {e["file"] for e in _manifest()}
    present = {p.name for p in STATIC.iterdir() if p.is_file()}
    assert present == listed | OWN


def test_htmx_is_version_2() -> None:
    htmx = next(e for e in _manifest() if e["name"] == "htmx.org")
    assert htmx["version"].startswith("2.")
    assert 'version:"' + htmx["version"] + '"' in (STATIC / htmx["file"]).read_text()


def test_pages_load_scripts_only_from_the_static_folder() -> None:
    base = (TEMPLATES / "base.html").read_text()
    sources = re.findall(r'<script src="/static/([^"]+)"', base)
    assert set(sources) == {"htmx.min.js", "sse.min.js", "ui.js"}
    for source in sources:
        assert (STATIC / source).is_file()
