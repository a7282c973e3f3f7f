"""Hostile records mixed with good events, on the real buses (embedded and Kafka).

Property: whatever a batch holds, every good event runs, every bad record is dead-lettered
with its reason, the router never restarts a loop, and the backlog returns to 0.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxray import Platform
from fxray.bus import OutgoingRecord
from fxray.events import cloudevent as ev

BOOTSTRAP = os.environ.get("FXRAY_KAFKA_BOOTSTRAP", "")
MAX_BYTES = 100_000
GOOD_TYPE = "hostile.ok"
ECHO = "from fxray import context\ncontext.result = len(context.event['id'])\n"


@dataclass
class Case:
    """One record to produce; ``reason`` is a part of its dead letter's reason (None: it is a
    good event, which must run; "" : any reason will do)."""

    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    reason: str | None = ""
    event_id: str | None = None


def _envelope(**fields: Any) -> dict[str, Any]:
    body = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "tests/hostile"}
    body["type"] = GOOD_TYPE
    body.update(fields)
    return body


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_data(depth: int) -> Case:
    prefix = json.dumps(_envelope())[:-1]
    return Case(f'{prefix}, "data": {_nested(depth)}}}'.encode(), reason="nests deeper")


def _binary(value: bytes, **attributes: bytes) -> list[tuple[str, bytes]]:
    base = {"specversion": b"1.0", "id": str(uuid.uuid4()).encode(), "source": b"tests/hostile"}
    base["type"] = GOOD_TYPE.encode()
    base.update(attributes)
    return [("content-type", b"application/json")] + [(f"ce_{k}", v) for k, v in base.items()]


deep = st.integers(min_value=ev.MAX_EVENT_DEPTH, max_value=20_000)
hostile = st.one_of(
    deep.map(_deep_data),
    deep.map(lambda n: Case(_nested(n + 1).encode(), reason="nests deeper")),
    deep.map(lambda n: Case(_nested(n).encode(), headers=_binary(b""), reason="data nests deeper")),
    st.integers(256, 5_000).map(
        lambda n: Case(json.dumps(_envelope(id="x" * n)).encode(), reason="over the limit of 255")
    ),
    st.sampled_from(["type", "source", "id", "subject"]).map(
        lambda name: Case(json.dumps(_envelope(**{name: "a\u0000b"})).encode(), reason="NUL")
    ),
    st.just(Case(b"{}", headers=_binary(b"", type=b"\xff\xfe"), reason="not UTF-8")),
    st.integers(1, 1_000).map(
        lambda n: Case(
            json.dumps(_envelope(data="y" * (MAX_BYTES + n))).encode(), reason="over the"
        )
    ),
    st.binary(max_size=200).map(lambda b: Case(b"\xff" + b)),  # never UTF-8 JSON
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ).map(lambda v: Case(json.dumps({"not": "an event", "v": v}).encode())),
    st.sampled_from(
        [{"id": 5}, {"type": ["t"]}, {"specversion": "0.3"}, {"time": "yesterday"}]
    ).map(lambda f: Case(json.dumps(_envelope(**f)).encode())),
)


def _good(i: int, depth: int) -> Case:
    """A good event whose data nests ``depth`` + 1 levels (the limit counts the event too)."""
    data: Any = {"i": i}
    for _ in range(depth):
        data = {"in": data}
    event = ev.new_event(GOOD_TYPE, data, source="tests/hostile")
    return Case(ev.to_json(event), reason=None, event_id=event["id"])


good = st.builds(_good, st.integers(0, 1_000_000), st.integers(0, ev.MAX_EVENT_DEPTH - 3))
batches = st.lists(st.one_of(hostile, good), min_size=1, max_size=12)

PROPERTY = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


Produce = Callable[[list[tuple[bytes, list[tuple[str, bytes]]]]], None]


def _check_batch(platform: Platform, cases: list[Case], produce: Produce) -> None:
    tag = uuid.uuid4().hex
    produce([(case.value, [*case.headers, ("fxtest", tag.encode())]) for case in cases])
    for case in cases:
        if case.reason is None:
            (run,) = platform.wait_for_runs(event_id=case.event_id, timeout=60)
            assert run.status == "succeeded", run.error
    platform.wait_idle(timeout=60)  # the backlog returns to 0
    letters = [
        letter for letter in platform.dead_letters(limit=10_000) if letter.header("fxtest") == tag
    ]
    expected = [case for case in cases if case.reason is not None]
    assert sorted(letter.value for letter in letters) == sorted(c.value for c in expected)
    for case in expected:
        reasons = [str(lt.header("fxray_dlq_reason")) for lt in letters if lt.value == case.value]
        assert reasons and all(case.reason in reason for reason in reasons), reasons
    stats = platform.stats()
    assert stats["counters"].get("loop_restarts", 0) == 0, stats["errors"]
    assert stats["counters"].get("route_errors", 0) == 0, stats["errors"]


@pytest.fixture
def hostile_platform(
    make_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> Iterator[Callable[..., Platform]]:
    def make(**overrides: Any) -> Platform:
        platform = make_platform(max_event_bytes=MAX_BYTES, **overrides)
        platform.deploy(service_dir("echo", {"e.py": ECHO}, trigger_events=[GOOD_TYPE]))
        return platform

    yield make


@pytest.mark.slow
def test_hostile_records_on_the_embedded_bus(hostile_platform: Callable[..., Platform]) -> None:
    platform = hostile_platform()

    def produce(records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
        outgoing = [OutgoingRecord(value, headers=headers) for value, headers in records]
        platform.bus.produce(platform.settings.events_topic, outgoing)

    @PROPERTY
    @given(batches)
    def check(cases: list[Case]) -> None:
        _check_batch(platform, cases, produce)

    check()


@pytest.mark.slow
def test_hostile_records_on_kafka(hostile_platform: Callable[..., Platform]) -> None:
    if not BOOTSTRAP:
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail("FXRAY_KAFKA_BOOTSTRAP is not set (run through `make test`)")
        pytest.skip("no Kafka broker: run through `make test`")
    from confluent_kafka import Producer

    tag = uuid.uuid4().hex[:8]
    platform = hostile_platform(
        event_bus="kafka",
        kafka_bootstrap=BOOTSTRAP,
        events_topic=f"fx.it.events.{tag}",
        deadletter_topic=f"fx.it.dlq.{tag}",
    )
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 1})

    def produce(records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
        for value, headers in records:
            producer.produce(platform.settings.events_topic, value, headers=headers)
        assert producer.flush(30) == 0

    @PROPERTY
    @given(batches)
    def check(cases: list[Case]) -> None:
        _check_batch(platform, cases, produce)

    check()
