"""Dead-letter marks (fxray.events.deadletters): requeue and discard mark each letter once, in
the key layout the web UI used first, and a marked letter is refused; no Ray (the embedded
bus's log and an in-memory KV)."""

from __future__ import annotations

import json

import pytest

from fxray.bus import OutgoingRecord
from fxray.bus.embedded import EmbeddedLog
from fxray.events import deadletters as dl
from fxray.kv.local import InMemoryKV

DLQ, EVENTS = "fx.dlq", "fx.events"


@pytest.fixture
def bus() -> EmbeddedLog:
    log = EmbeddedLog(default_partitions=1)
    log.ensure_topic(DLQ, 1)
    log.ensure_topic(EVENTS, 1)
    headers = [("fxray_dlq_reason", b"not a CloudEvent")]
    log.produce(DLQ, [OutgoingRecord(f"bad {n}".encode(), headers=headers) for n in range(3)])
    return log


def test_requeue_and_discard_mark_each_letter_once(bus: EmbeddedLog) -> None:
    kv = InMemoryKV()
    done = dl.handle(bus, kv, DLQ, EVENTS, ["0:0", "0:1"], "requeue", "key1")  # type: ignore[arg-type]
    assert [o.ok for o in done] == [True, True]
    assert "re-sent as it was" in done[0].text
    assert [r.value for r in bus.read(EVENTS, 0, 0, 10)] == [b"bad 0", b"bad 1"]

    again = dl.handle(bus, kv, DLQ, EVENTS, ["0:1", "0:2"], "discard", "key2")  # type: ignore[arg-type]
    assert again == [
        dl.Outcome("0:1", False, "already requeued"),
        dl.Outcome("0:2", True, "discarded"),
    ]
    assert len(bus.read(EVENTS, 0, 0, 10)) == 2  # neither refused nor discarded ones go out

    marks = dl.read_marks(kv, DLQ)
    assert {p: m["action"] for p, m in marks.items()} == {
        "0:0": "requeued",
        "0:1": "requeued",
        "0:2": "discarded",
    }
    assert marks["0:2"]["by"] == "key2" and marks["0:0"]["at"] > 0


def test_marks_keep_the_web_uis_key_layout(bus: EmbeddedLog) -> None:
    kv = InMemoryKV()
    earlier = {"action": "discarded", "by": "k0", "at": 1.0}  # written by an older UI
    kv.put(f"fxray/ui/deadletters/{DLQ}/0-2", json.dumps(earlier).encode())
    assert dl.read_marks(kv, DLQ) == {"0:2": earlier}
    (refused,) = dl.handle(bus, kv, DLQ, EVENTS, ["0:2"], "requeue", "k1")  # type: ignore[arg-type]
    assert refused == dl.Outcome("0:2", False, "already discarded")
    assert dl.mark_key(DLQ, "0:2") == f"fxray/ui/deadletters/{DLQ}/0-2"


def test_a_missing_letter_is_not_marked(bus: EmbeddedLog) -> None:
    kv = InMemoryKV()
    (missing,) = dl.handle(bus, kv, DLQ, EVENTS, ["0:9"], "discard", "k1")  # type: ignore[arg-type]
    assert missing == dl.Outcome("0:9", False, "no dead letter at 0:9")
    assert dl.read_marks(kv, DLQ) == {}
    with pytest.raises(ValueError, match="requeue or discard"):
        dl.handle(bus, kv, DLQ, EVENTS, ["0:0"], "delete", "k1")  # type: ignore[arg-type]
