"""The embedded bus through Ray: the broker actor, consumers in the driver and in actors."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
import ray

from fxray.bus import Consumer, EventBus, OutgoingRecord, Record, TopicPartition
from fxray.bus.embedded import EmbeddedBus, EmbeddedConsumer

pytestmark = pytest.mark.integration

T = "fx.events"


@pytest.fixture(scope="module")
def bus(ray_session: None) -> Iterator[EmbeddedBus]:
    """One broker for the module; tests keep apart by using their own topic and groups."""
    b = EmbeddedBus.start(name=f"bus-{uuid.uuid4().hex[:8]}", default_partitions=4)
    yield b
    b.shutdown()


@pytest.fixture
def topic() -> str:
    return f"fx.events.{uuid.uuid4().hex[:8]}"


def poll_until(
    consumer: EmbeddedConsumer, n: int, deadline_s: float = 30.0, max_records: int = 500
) -> list[Record]:
    """Poll until ``n`` records arrived (or fail after ``deadline_s``)."""
    out: list[Record] = []
    end = time.monotonic() + deadline_s
    while len(out) < n:
        assert time.monotonic() < end, f"only {len(out)} of {n} records arrived"
        out.extend(consumer.poll(max_records, 0.5))
    return out


def next_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out


def test_handle_is_picklable_and_implements_protocols(bus: EmbeddedBus, topic: str) -> None:
    assert isinstance(bus, EventBus)
    clone = pickle.loads(pickle.dumps(bus))
    clone.ensure_topic(topic, 3)
    assert bus.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
    assert EmbeddedBus.connect(bus.name or "").topics()[topic] == 3
    # start() on an existing name gets the same actor.
    assert EmbeddedBus.start(name=bus.name or "").topics()[topic] == 3
    c = bus.consumer("g", [topic])
    assert isinstance(c, Consumer)
    c.close()
    c.close()  # idempotent
    with pytest.raises(RuntimeError):
        c.poll(1, 0)
    with pytest.raises(ValueError):
        EmbeddedBus.connect("no-such-bus")


def test_round_trip_10000_records_in_order(bus: EmbeddedBus, topic: str) -> None:
    bus.ensure_topic(topic, 4)
    expected: dict[int, list[bytes]] = defaultdict(list)
    batch: list[OutgoingRecord] = []
    for i in range(10_000):
        batch.append(OutgoingRecord(value=b"%d" % i, key=b"k%d" % (i % 37), headers=[("n", b"1")]))
        if len(batch) == 500:
            for (p, _), rec in zip(bus.produce_offsets(topic, batch), batch, strict=True):
                expected[p].append(rec.value)
            batch = []
    assert sum(bus.end_offsets(topic).values()) == 10_000

    consumer = bus.consumer("round-trip", [topic])
    got = []
    while len(got) < 10_000:
        records = consumer.poll(500, 2.0)
        assert records, "poll timed out with records left"
        consumer.commit(next_offsets(records))
        got.extend(records)
    assert consumer.poll(500, 0.2) == []
    assert len(got) == 10_000
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for r in got:
        by_partition[r.partition].append(r)
    for p, values in expected.items():
        records = by_partition[p]
        assert [r.offset for r in records] == list(range(len(values)))
        assert [r.value for r in records] == values
    assert got[0].headers == [("n", b"1")]
    assert bus.lag("round-trip", topic) == 0
    assert bus.committed("round-trip", topic) == bus.end_offsets(topic)
    consumer.close()


def test_long_poll_returns_early_on_produce(bus: EmbeddedBus, topic: str) -> None:
    bus.ensure_topic(topic, 2)
    consumer = bus.consumer("lp", [topic])
    t0 = time.monotonic()
    assert consumer.poll(10, 0.4) == []
    assert time.monotonic() - t0 >= 0.35  # waited for the timeout

    result: list[Record] = []
    returned_at: list[float] = []

    def wait() -> None:
        result.extend(consumer.poll(10, 10.0))
        returned_at.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)
    produced_at = time.monotonic()
    bus.produce(topic, [OutgoingRecord(b"wake")])
    thread.join(10)
    assert not thread.is_alive()
    assert [r.value for r in result] == [b"wake"]
    assert returned_at[0] - produced_at < 1.0  # woke up on produce, not after 10 s
    consumer.close()


def test_two_consumers_split_partitions_and_take_over(bus: EmbeddedBus, topic: str) -> None:
    bus.ensure_topic(topic, 4)
    bus.produce(topic, [OutgoingRecord(b"%d" % i) for i in range(400)])  # round-robin: 100 each
    c1 = bus.consumer("split", [topic])
    c2 = bus.consumer("split", [topic])
    c2.assignment()  # wait until both joined
    first1 = poll_until(c1, 200)
    first2 = poll_until(c2, 200)
    a1, a2 = set(c1.assignment()), set(c2.assignment())
    assert len(a1) == len(a2) == 2
    assert a1 | a2 == {(topic, p) for p in range(4)}
    assert {(r.topic, r.partition) for r in first1} == a1
    assert {(r.topic, r.partition) for r in first2} == a2

    c1.commit(next_offsets(first1))
    # c2 processed only the first 50 records of each partition, then goes away.
    c2.commit({tp: 50 for tp in a2})
    c2.close()

    taken_over = poll_until(c1, 100)
    assert set(c1.assignment()) == {(topic, p) for p in range(4)}
    # Exactly c2's uncommitted records are redelivered: nothing lost, nothing extra.
    assert sorted((r.partition, r.offset) for r in taken_over) == sorted(
        (p, o) for _, p in a2 for o in range(50, 100)
    )
    c1.commit(next_offsets(taken_over))
    assert bus.committed("split", topic) == {0: 100, 1: 100, 2: 100, 3: 100}
    assert bus.lag("split", topic) == 0
    c1.close()


def test_new_consumer_resumes_after_commit(bus: EmbeddedBus, topic: str) -> None:
    bus.ensure_topic(topic, 2)
    bus.produce(topic, [OutgoingRecord(b"%d" % i) for i in range(100)])
    c1 = bus.consumer("resume", [topic])
    assert len(poll_until(c1, 100)) == 100
    c1.commit({(topic, 0): 20, (topic, 1): 30})
    c1.close()
    assert bus.lag("resume", topic) == 50

    c2 = bus.consumer("resume", [topic])
    got = poll_until(c2, 50)
    assert sorted((r.partition, r.offset) for r in got) == [(0, o) for o in range(20, 50)] + [
        (1, o) for o in range(30, 50)
    ]
    assert c2.poll(100, 0.2) == []
    c2.close()


def test_pause_resume_through_consumer(bus: EmbeddedBus, topic: str) -> None:
    bus.ensure_topic(topic, 2)
    bus.produce(topic, [OutgoingRecord(b"%d" % i) for i in range(20)])
    c = bus.consumer("pause", [topic])
    c.pause([(topic, 0)])
    got = c.poll(100, 0.5)
    assert {r.partition for r in got} == {1}
    assert c.poll(100, 0.2) == []
    c.resume([(topic, 0)])
    assert {r.partition for r in c.poll(100, 0.5)} == {0}
    c.close()


def test_silent_member_expires_and_partitions_move(ray_session: None) -> None:
    bus = EmbeddedBus.start(name=f"bus-{uuid.uuid4().hex[:8]}", session_timeout_s=1.0)
    try:
        bus.ensure_topic(T, 4)
        c1 = bus.consumer("exp", [T])
        c2 = bus.consumer("exp", [T])
        c1.poll(10, 0.1)
        c2.poll(10, 0.1)
        assert len(c1.assignment()) == 2
        # c1 keeps polling (long polls longer than the session timeout); c2 stays silent.
        c1.poll(10, 2.0)
        assert len(bus.members("exp")) == 1
        assert len(c1.assignment()) == 4
        # The silent member rejoins on its next poll, like a Kafka consumer.
        c2.poll(10, 0.1)
        assert len(c2.assignment()) == 2
    finally:
        bus.shutdown()


@ray.remote(num_cpus=0)
class AsyncWorker:
    """An async actor consuming with poll_async, like the router will."""

    async def ping(self) -> str:
        return "pong"

    async def consume(self, bus: EmbeddedBus, group: str, topic: str, n: int) -> list[bytes]:
        consumer = bus.consumer(group, [topic])
        values: list[bytes] = []
        try:
            while len(values) < n:
                records = await consumer.poll_async(100, 5.0)
                values.extend(r.value for r in records)
                await consumer.commit_async(next_offsets(records))
        finally:
            await consumer.close_async()
        return values


def test_consume_from_async_actor(bus: EmbeddedBus, topic: str) -> None:
    bus.ensure_topic(topic, 1)
    worker = AsyncWorker.remote()
    assert ray.get(worker.ping.remote()) == "pong"
    ref = worker.consume.remote(bus, "async", topic, 50)
    time.sleep(0.5)  # the worker is now inside a long poll
    t0 = time.monotonic()
    assert ray.get(worker.ping.remote(), timeout=5) == "pong"
    assert time.monotonic() - t0 < 1.0  # its event loop is not blocked by the poll
    bus.produce(topic, [OutgoingRecord(b"%d" % i) for i in range(50)])
    assert ray.get(ref, timeout=30) == [b"%d" % i for i in range(50)]
    assert bus.committed("async", topic) == {0: 50}
    ray.kill(worker)
