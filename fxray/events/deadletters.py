"""Dead letters: writing them, reading them, and re-publishing them.

Two kinds of record land on the dead-letter topic, both with ``fxray_dlq_*`` headers saying why
and where from: records that are not valid CloudEvents (original bytes and headers kept), and the
events of runs that failed for good (the event as structured JSON, plus the run id).

Requeueing and discarding leave a mark per letter in the key/value store (see "marks" below),
which the web UI, the API and the CLI all read.

Re-publishing sends a record back to the events topic. A failed run's event goes back with a
new id (and ``fxreplayof`` naming the original, its correlation id kept), because a run is named
by its event id and trigger, and the original run is already recorded as failed. Other records
go back byte for byte, for when the producer's mistake was fixed on the way.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fxray.bus import EventBus, OutgoingRecord, Record, TopicPartition
from fxray.events import cloudevent as ev
from fxray.kv import KVStore
from fxray.runtime.runs import RunResult, RunSpec

DLQ_PREFIX = "fxray_dlq_"
REPLAY_OF = "fxreplayof"


def bad_record_letter(record: Record, reason: str) -> OutgoingRecord:
    """A record that is not a valid event, byte for byte, with why and where from."""
    headers = [
        *record.headers,
        ("fxray_dlq_reason", reason.encode()),
        *_source_headers((record.topic, record.partition), record.offset),
        ("fxray_dlq_time", str(time.time()).encode()),
    ]
    return OutgoingRecord(record.value, key=record.key, headers=headers)


def failed_run_letter(
    spec: RunSpec, result: RunResult, source: TopicPartition | None, offset: int
) -> OutgoingRecord:
    """The triggering event of a run that failed for good, with why and which run."""
    headers = [
        ("content-type", ev.STRUCTURED_CONTENT_TYPE.encode()),
        ("fxray_dlq_reason", f"run {result.status.value}: {result.error}".encode()),
        ("fxray_dlq_run_id", spec.run_id.encode()),
        ("fxray_dlq_service", spec.service.encode()),
        ("fxray_dlq_version", spec.version_id.encode()),
        ("fxray_dlq_attempts", str(spec.attempt).encode()),
        ("fxray_dlq_time", str(time.time()).encode()),
    ]
    if source is not None:
        headers += _source_headers(source, offset)
    return OutgoingRecord(ev.to_json(spec.event), key=ev.partition_key(spec.event), headers=headers)


def _source_headers(source: TopicPartition, offset: int) -> list[tuple[str, bytes]]:
    topic, partition = source
    return [
        ("fxray_dlq_topic", topic.encode()),
        ("fxray_dlq_partition", str(partition).encode()),
        ("fxray_dlq_offset", str(offset).encode()),
    ]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(DLQ_PREFIX + "reason") or "unknown"

    @property
    def run_id(self) -> str | None:
        return self.header(DLQ_PREFIX + "run_id")

    @property
    def position(self) -> str:
        """``partition:offset``, the name ``fxray deadletters replay`` takes."""
        return f"{self.partition}:{self.offset}"

    def summary(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "reason": self.reason,
            "run_id": self.run_id,
            "service": self.header(DLQ_PREFIX + "service"),
            "from": ":".join(
                h or "?"
                for h in (self.header(DLQ_PREFIX + n) for n in ("topic", "partition", "offset"))
            ),
            "bytes": len(self.value),
        }


def read(bus: EventBus, topic: str, limit: int = 100) -> list[DeadLetter]:
    """The newest ``limit`` dead letters of each partition, oldest first."""
    letters: list[DeadLetter] = []
    for partition, end in sorted(bus.end_offsets(topic).items()):
        start = max(0, end - limit)
        for record in bus.read(topic, partition, start, end - start):
            letters.append(
                DeadLetter(
                    record.partition, record.offset, record.value, record.key, record.headers
                )
            )
    return letters


def parse_position(text: str) -> tuple[int, int]:
    """``"0:17"`` -> (0, 17); raises ValueError with a clear message."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r} is not a dead-letter position (partition:offset, e.g. 0:17)")
    return int(partition), int(offset)


def republish(
    bus: EventBus, deadletter_topic: str, events_topic: str, positions: list[tuple[int, int]]
) -> list[str]:
    """Send the dead letters at ``positions`` back to ``events_topic``; what each became."""
    records: list[OutgoingRecord] = []
    outcome: list[str] = []
    for partition, offset in positions:
        found = bus.read(deadletter_topic, partition, offset, 1)
        if not found or found[0].offset != offset:
            raise LookupError(f"no dead letter at {partition}:{offset}")
        letter = found[0]
        headers = [(k, v) for k, v in letter.headers if not k.startswith(DLQ_PREFIX)]
        if any(k == DLQ_PREFIX + "run_id" for k, _ in letter.headers):
            event = ev.from_record(letter.value, headers)
            replay = {**event, "id": str(uuid.uuid4()), REPLAY_OF: event["id"]}
            replay[ev.CORRELATION_ID] = ev.correlation_id(event)
            value = json.dumps(replay).encode()
            headers = [(k, v) for k, v in headers if not k.startswith("ce_")]
            records.append(OutgoingRecord(value, key=letter.key, headers=headers))
            outcome.append(f"{partition}:{offset} -> event {replay['id']}")
        else:
            records.append(OutgoingRecord(letter.value, key=letter.key, headers=headers))
            outcome.append(f"{partition}:{offset} -> re-sent as it was")
    if records:
        bus.produce(events_topic, records)
    return outcome


# -- marks: which letters were requeued or discarded ----------------------------------------
#
# The topic is a log that cannot be edited, so handling a letter leaves a mark in the platform's
# key/value store, one key per letter: ``fxray/ui/deadletters/<topic>/<partition>-<offset>``
# holding ``{"action": "requeued" | "discarded", "by": <API key id or "cli">, "at": <time>}``.
# (The ``ui`` segment is where the web UI kept them first; the layout is unchanged, so earlier
# marks still count.) The UI, the API and the CLI read and write them through these functions.

MARKS_PREFIX = "fxray/ui/deadletters/"
ACTIONS = {"requeue": "requeued", "discard": "discarded"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of requeueing or discarding one letter."""

    position: str
    ok: bool
    text: str


def mark_key(topic: str, position: str) -> str:
    partition, offset = parse_position(position)
    return f"{MARKS_PREFIX}{topic}/{partition}-{offset}"


def read_marks(kv: KVStore, topic: str) -> dict[str, dict[str, Any]]:
    """``{position: mark}`` of the handled letters of ``topic``."""
    prefix = f"{MARKS_PREFIX}{topic}/"
    found = {}
    for entry in kv.list(prefix):
        partition, _, offset = entry.key[len(prefix) :].partition("-")
        try:
            mark = json.loads(entry.value)
        except ValueError:
            continue
        if isinstance(mark, dict):
            found[f"{partition}:{offset}"] = mark
    return found


def handle(
    bus: EventBus,
    kv: KVStore,
    deadletter_topic: str,
    events_topic: str,
    positions: list[str],
    action: str,
    by: str,
) -> list[Outcome]:
    """Requeue (send back to ``events_topic``) or discard the letters at ``positions`` and mark
    them; a letter already marked, or not on the topic, is refused on its own. A mark is
    written only if none is there (compare-and-set), so two callers cannot both requeue."""
    if action not in ACTIONS:
        raise ValueError(f"action must be requeue or discard, not {action!r}")
    outcomes = []
    for position in positions:
        parsed = parse_position(position)
        key = mark_key(deadletter_topic, position)
        entry = kv.get(key)
        if entry is not None:
            outcomes.append(Outcome(position, False, f"already {_action(entry.value)}"))
            continue
        found = bus.read(deadletter_topic, parsed[0], parsed[1], 1)
        if not found or found[0].offset != parsed[1]:
            outcomes.append(Outcome(position, False, f"no dead letter at {position}"))
            continue
        mark = {"action": ACTIONS[action], "by": by, "at": time.time()}
        if not kv.put(key, json.dumps(mark).encode(), cas=0):
            outcomes.append(Outcome(position, False, "already handled"))
            continue
        try:
            text = (
                republish(bus, deadletter_topic, events_topic, [parsed])[0]
                if action == "requeue"
                else "discarded"
            )
        except Exception:
            kv.delete(key)  # not requeued after all: leave it open
            raise
        outcomes.append(Outcome(position, True, text))
    return outcomes


def _action(value: bytes) -> str:
    """What a stored mark says was done ("handled" if it cannot tell)."""
    try:
        mark = json.loads(value)
    except ValueError:
        return "handled"
    return str(mark.get("action", "handled")) if isinstance(mark, dict) else "handled"
