"""``fxray deadletters``: the list shows each letter's mark (the marks the web UI and the API
write), and ``replay`` marks what it requeues and leaves handled letters alone. The bus is the
embedded bus's log (no Ray); the marks a local KV in a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fxray.bus import OutgoingRecord
from fxray.bus.embedded import EmbeddedLog
from fxray.cli import app
from fxray.cli import deadletters as cli
from fxray.events import deadletters as dl
from fxray.kv.local import LocalKV
from fxray.settings import Settings


def _documents(text: str) -> list[dict]:
    """The JSON documents printed one after another (each may span lines)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        item, at = decoder.raw_decode(text, at)
        found.append(item)
    return found


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, EmbeddedLog]:
    settings = Settings(home=tmp_path / "home", instance="cli-test")
    log = EmbeddedLog(default_partitions=1)
    headers = [("fxray_dlq_reason", b"not a CloudEvent")]
    log.produce(settings.deadletter_topic, [OutgoingRecord(b"x", headers=headers)] * 3)
    monkeypatch.setattr(cli, "_bus_from_settings", lambda: (settings, log))
    return settings, log


def test_the_list_shows_marks_and_replay_makes_them(
    installation: tuple[Settings, EmbeddedLog],
) -> None:
    settings, log = installation
    settings.home.mkdir(parents=True)
    kv = LocalKV(settings.kv_path)
    mark = {"action": "discarded", "by": "k1", "at": 1.0}
    kv.put(dl.mark_key(settings.deadletter_topic, "0:1"), json.dumps(mark).encode())

    listed = CliRunner().invoke(app, ["deadletters", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert "[open]" in lines[0] and "[discarded]" in lines[1] and "[open]" in lines[2]
    as_json = CliRunner().invoke(app, ["deadletters", "list", "--json"])
    assert [item["mark"] for item in _documents(as_json.output)] == [None, mark, None]

    replayed = CliRunner().invoke(app, ["deadletters", "replay", "0:0", "0:1"])
    assert replayed.exit_code == 1, replayed.output
    assert "0:0 -> re-sent as it was" in replayed.output
    assert "0:1: already discarded" in replayed.output
    assert len(log.read(settings.events_topic, 0, 0, 10)) == 1
    marks = dl.read_marks(kv, settings.deadletter_topic)
    assert marks["0:0"]["action"] == "requeued" and marks["0:0"]["by"] == "cli"


def test_without_a_key_value_store_nothing_is_created(
    installation: tuple[Settings, EmbeddedLog],
) -> None:
    settings, _ = installation
    listed = CliRunner().invoke(app, ["deadletters", "list"])
    assert listed.exit_code == 0 and listed.output.count("[open]") == 3, listed.output
    replayed = CliRunner().invoke(app, ["deadletters", "replay", "0:2"])
    assert replayed.exit_code == 0 and "re-sent as it was" in replayed.output
    assert not settings.kv_path.exists()
