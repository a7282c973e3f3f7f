"""The Kafka bus against a real Kafka-protocol broker (``FXRAY_KAFKA_BOOTSTRAP``).

``scripts/testinfra.sh up`` starts one (noida-db) and writes its address to ``.infra/env``; set
``FXRAY_KAFKA_BOOTSTRAP`` to use a real Apache Kafka instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import subprocess
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest
import ray

from fxray.bus import Consumer, EventBus, OutgoingRecord, Record, TopicPartition
from fxray.bus.embedded import EmbeddedLog
from fxray.bus.kafka import BusError, KafkaBus, KafkaConsumer
from fxray.events import cloudevent as ev

pytestmark = pytest.mark.integration

BOOTSTRAP = os.environ.get("FXRAY_KAFKA_BOOTSTRAP", "")
REQUIRE = bool(os.environ.get("FXRAY_REQUIRE_SERVERS"))


def _unavailable(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} (FXRAY_REQUIRE_SERVERS is set)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="module")
def bus() -> Iterator[KafkaBus]:
    if not BOOTSTRAP:
        _unavailable("FXRAY_KAFKA_BOOTSTRAP is not set (run scripts/testinfra.sh up)")
    b = KafkaBus(BOOTSTRAP, client_id="fxray-tests")
    yield b
    b.close()


@pytest.fixture
def make_topic(bus: KafkaBus) -> Iterator[Callable[[int], str]]:
    """Create uniquely named topics; they are deleted after the test."""
    made: list[str] = []

    def make(partitions: int = 4) -> str:
        name = f"fx.test.{uuid.uuid4().hex[:10]}"
        bus.ensure_topic(name, partitions)
        made.append(name)
        return name

    yield make
    for name in made:
        bus.delete_topic(name)


def group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def poll_until(
    consumer: KafkaConsumer, n: int, deadline_s: float = 60.0, max_records: int = 1000
) -> list[Record]:
    """Poll until at least ``n`` records arrived (or fail after ``deadline_s``)."""
    out: list[Record] = []
    end = time.monotonic() + deadline_s
    while len(out) < n:
        assert time.monotonic() < end, f"only {len(out)} of {n} records arrived"
        out.extend(consumer.poll(max_records, 0.5))
    return out


def poll_for(consumer: KafkaConsumer, seconds: float) -> list[Record]:
    """Everything delivered within ``seconds``."""
    out: list[Record] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.extend(consumer.poll(1000, 0.2))
    return out


def wait_assigned(consumer: KafkaConsumer, deadline_s: float = 30.0) -> list[Record]:
    """Poll until the consumer has partitions; returns what it fetched meanwhile."""
    out: list[Record] = []
    end = time.monotonic() + deadline_s
    while not consumer.assignment():
        assert time.monotonic() < end, "no partitions assigned"
        out.extend(consumer.poll(1000, 0.2))
    return out


def next_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out


def key_for_partition(partition: int, partitions: int, prefix: str = "k") -> bytes:
    """A key that the crc32 partitioner places on ``partition``."""
    for i in range(10_000):
        key = f"{prefix}{i}".encode()
        if zlib.crc32(key) % partitions == partition:
            return key
    raise AssertionError("no key found")


# --------------------------------------------------------------------- no broker needed


def test_handle_pickles_as_configuration() -> None:
    b = KafkaBus(
        "127.0.0.1:9",
        client_id="pickle-test",
        producer_config={"linger.ms": 1},
        consumer_config={"session.timeout.ms": 6000},
        default_partitions=3,
    )
    assert isinstance(b, EventBus)
    b._polled_producer()  # clients exist in this process; they must not travel
    b._admin_client()
    try:
        clone = pickle.loads(pickle.dumps(b))
    finally:
        b.close()
    assert clone.__getstate__() == b.__getstate__()
    assert clone._producer is None and clone._admin is None
    assert clone.producer_settings()["enable.idempotence"] is True
    assert clone.producer_settings()["acks"] == "all"
    assert clone.consumer_settings("g")["session.timeout.ms"] == 6000
    assert clone.consumer_settings("g")["partition.assignment.strategy"] == "range"


def test_handle_works_in_a_ray_task(
    ray_session: None, bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(2)

    @ray.remote
    def produce_and_count(b: KafkaBus, t: str) -> int:
        b.produce(t, [OutgoingRecord(b"%d" % i) for i in range(50)])
        return sum(b.end_offsets(t).values())

    assert ray.get(produce_and_count.remote(bus, topic)) == 50
    assert sum(bus.end_offsets(topic).values()) == 50


# --------------------------------------------------------------------- topics


def test_ensure_topic_is_idempotent_grows_and_deletes(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(2)
    bus.ensure_topic(topic, 2)
    bus.ensure_topic(topic, 1)  # never shrinks
    assert bus.partitions(topic) == 2
    bus.ensure_topic(topic, 3)
    assert bus.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
    assert bus.topics()[topic] == 3
    bus.delete_topic(topic)
    assert bus.partitions(topic) is None
    assert bus.end_offsets(topic) == {}
    bus.delete_topic(topic)  # no-op


def test_produce_creates_missing_topic_with_default_partitions(bus: KafkaBus) -> None:
    topic = f"fx.test.auto.{uuid.uuid4().hex[:8]}"
    try:
        bus.produce(topic, [OutgoingRecord(b"x")])
        assert bus.partitions(topic) == bus.default_partitions
        assert sum(bus.end_offsets(topic).values()) == 1
    finally:
        bus.delete_topic(topic)


def test_produce_failure_raises_bus_error(bus: KafkaBus, make_topic: Callable[[int], str]) -> None:
    topic = make_topic(1)
    too_big = b"x" * 2_000_000  # over librdkafka's message.max.bytes (1,000,000)
    with pytest.raises(BusError, match="1 of 2 records"):
        bus.produce(topic, [OutgoingRecord(b"ok"), OutgoingRecord(too_big)])
    bus.produce(topic, [OutgoingRecord(b"after")])  # the producer still works
    assert [r.value for r in bus.read(topic, 0, 0, 10)] == [b"ok", b"after"]


# --------------------------------------------------------------------- produce and consume


def test_round_trip_in_order_with_keys_and_headers(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(4)
    n, keys = 5000, 40
    for start in range(0, n, 1000):
        bus.produce(
            topic,
            [
                OutgoingRecord(
                    value=f"v{i}".encode(),
                    key=f"key-{i % keys}".encode(),
                    headers=[("ce_id", str(i).encode()), ("empty", b"")],
                )
                for i in range(start, start + 1000)
            ],
        )
    assert sum(bus.end_offsets(topic).values()) == n

    with bus.consumer(group(), [topic]) as consumer:
        assert isinstance(consumer, Consumer)
        records = poll_until(consumer, n)
        assert len(records) == n
        assert poll_for(consumer, 1.0) == []

    by_partition: dict[int, list[int]] = defaultdict(list)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for r in records:
        assert r.topic == topic and r.key is not None
        i = int(r.value[1:])
        assert r.headers == [("ce_id", str(i).encode()), ("empty", b"")]
        assert r.timestamp_ms > 0
        by_partition[r.partition].append(r.offset)
        by_key[r.key].append(i)
        partition_of[r.key].add(r.partition)
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))  # complete and in order per partition
    for key, values in by_key.items():
        assert values == sorted(values) and len(values) == n // keys, key
        assert len(partition_of[key]) == 1


def test_keyed_partitioning_matches_the_embedded_bus(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    keys = [b"a", b"order-17", b"customer/42", b"\x00\xff binary", "üñí".encode(), b"x" * 300]
    for partitions in (4, 7):
        topic = make_topic(partitions)
        bus.produce(topic, [OutgoingRecord(b"v", key=k) for k in keys])
        placed = {r.key: r.partition for p in range(partitions) for r in bus.read(topic, p, 0, 9)}
        embedded = EmbeddedLog(default_partitions=partitions)
        expected = embedded.produce(topic, [OutgoingRecord(b"v", key=k) for k in keys])
        assert placed == {k: p for k, (p, _) in zip(keys, expected, strict=True)}
        assert placed == {k: zlib.crc32(k) % partitions for k in keys}


def test_commit_close_and_resume_in_a_new_consumer(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic, g = make_topic(2), group()
    keys = [key_for_partition(p, 2) for p in range(2)]
    bus.produce(topic, [OutgoingRecord(f"{i}".encode(), key=keys[i % 2]) for i in range(100)])

    with bus.consumer(g, [topic]) as first:
        records = poll_until(first, 100)
        done = [r for r in records if r.offset < 30]  # the first 30 of each partition
        first.commit(next_offsets(done))
        first.commit({("no-such-topic", 0): 5})  # not owned: logged and dropped
    assert bus.committed(g, topic) == {0: 30, 1: 30}
    assert bus.committed(g, "no-such-topic") == {}
    assert bus.lag(g, topic) == 40

    with bus.consumer(g, [topic]) as second:
        again = poll_until(second, 40)
        assert poll_for(second, 1.0) == []
        assert sorted((r.partition, r.offset) for r in again) == [
            (p, o) for p in range(2) for o in range(30, 50)
        ]
        second.commit(next_offsets(again))
    assert bus.committed(g, topic) == {0: 50, 1: 50}
    assert bus.lag(g, topic) == 0


def test_two_consumers_split_partitions_and_one_takes_over(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic, g = make_topic(4), group()
    keys = [key_for_partition(p, 4) for p in range(4)]

    def produce(start: int, count: int) -> None:
        bus.produce(
            topic, [OutgoingRecord(f"{i}".encode(), key=keys[i % 4]) for i in range(start, count)]
        )

    produce(0, 400)
    seen: set[tuple[int, int]] = set()
    a = bus.consumer(g, [topic])
    b = bus.consumer(g, [topic])
    try:

        def step(consumer: KafkaConsumer) -> None:
            records = consumer.poll(1000, 0.2)
            seen.update((r.partition, r.offset) for r in records)
            consumer.commit(next_offsets(records))

        # Both members join; the range assignor gives each two partitions.
        end = time.monotonic() + 60
        while not (len(a.assignment()) == 2 and len(b.assignment()) == 2):
            assert time.monotonic() < end, (a.assignment(), b.assignment())
            step(a)
            step(b)
        assert sorted(a.assignment() + b.assignment()) == [(topic, p) for p in range(4)]
        # What a lost (if it had everything first) went to b.
        assert set(a.revoked_since_last_call()) <= set(b.assignment())

        for _ in range(10):
            step(a)
            step(b)
        a_had, b_had = a.assignment(), b.assignment()
        b.close()
        assert set(b.revoked_since_last_call()) == set(b_had)

        # The survivor gets every partition and everything produced, none lost.
        produce(400, 800)
        everything_committed = {p: 200 for p in range(4)}
        end = time.monotonic() + 60
        # A commit dropped in the rebalance (ILLEGAL_GENERATION) leaves records seen but not
        # committed; a reads them again from the committed offset, so step until both are done.
        while (
            len(a.assignment()) < 4
            or len(seen) < 800
            or bus.committed(g, topic) != everything_committed
        ):
            assert time.monotonic() < end, (a.assignment(), len(seen), bus.committed(g, topic))
            step(a)
        assert seen == {(p, o) for p in range(4) for o in range(200)}
        # a kept its own partitions, or (noida-db answers a commit during the rebalance with
        # ILLEGAL_GENERATION, so librdkafka declares them lost) got them back from the commits.
        assert set(a.revoked_since_last_call()) <= set(a_had)
        assert bus.committed(g, topic) == everything_committed
    finally:
        a.close()
        b.close()


def test_pause_stops_and_resume_restarts_delivery(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(2)
    keys = [key_for_partition(p, 2) for p in range(2)]
    with bus.consumer(group(), [topic]) as consumer:
        assert wait_assigned(consumer) == []
        consumer.pause([(topic, 0)])
        assert consumer.paused() == [(topic, 0)]
        bus.produce(topic, [OutgoingRecord(f"{i}".encode(), key=keys[i % 2]) for i in range(40)])
        got = poll_until(consumer, 20, deadline_s=30)
        got += poll_for(consumer, 2.0)
        assert {r.partition for r in got} == {1} and len(got) == 20

        consumer.resume([(topic, 0)])
        assert consumer.paused() == []
        resumed = poll_until(consumer, 20, deadline_s=30)
        assert [(r.partition, r.offset) for r in resumed] == [(0, o) for o in range(20)]


def test_read_at_an_offset(bus: KafkaBus, make_topic: Callable[[int], str]) -> None:
    topic = make_topic(1)
    bus.produce(topic, [OutgoingRecord(b"%d" % i, headers=[("i", b"%d" % i)]) for i in range(20)])
    records = bus.read(topic, 0, 5, 10)
    assert [r.offset for r in records] == list(range(5, 15))
    assert [r.value for r in records] == [f"{i}".encode() for i in range(5, 15)]
    assert records[0].headers == [("i", b"5")]
    assert [r.offset for r in bus.read(topic, 0, 15, 100)] == list(range(15, 20))
    assert bus.read(topic, 0, 20, 10) == []
    assert bus.read(topic, 1, 0, 10) == []  # no such partition
    assert bus.read(f"{topic}.missing", 0, 0, 10) == []
    assert bus.read(topic, 0, 0, 0) == []


def test_lag_and_committed(bus: KafkaBus, make_topic: Callable[[int], str]) -> None:
    topic, g = make_topic(3), group()
    keys = [key_for_partition(p, 3) for p in range(3)]
    bus.produce(topic, [OutgoingRecord(b"v", key=keys[i % 3]) for i in range(30)])
    assert bus.end_offsets(topic) == {0: 10, 1: 10, 2: 10}
    assert bus.committed(g, topic) == {0: 0, 1: 0, 2: 0}
    assert bus.lag(g, topic) == 30
    with bus.consumer(g, [topic]) as consumer:
        poll_until(consumer, 30)
        consumer.commit({(topic, 0): 10, (topic, 1): 4})
    assert bus.committed(g, topic) == {0: 10, 1: 4, 2: 0}
    assert bus.lag(g, topic) == 16


def test_kcat_records_arrive_with_cloudevents_headers(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        _unavailable("kcat is not installed (Debian package kafkacat)")
    topic = make_topic(1)
    event_id = uuid.uuid4().hex
    data = json.dumps({"order_id": "A-17", "amount": 120.5})
    subprocess.run(
        [
            kcat,
            "-P",
            "-b",
            BOOTSTRAP,
            "-t",
            topic,
            "-k",
            "order-A-17",
            "-H",
            "ce_specversion=1.0",
            "-H",
            "ce_type=shop.order.placed",
            "-H",
            f"ce_id={event_id}",
            "-H",
            "ce_source=tests/kcat",
            "-H",
            "content-type=application/json",
        ],
        input=data.encode(),
        check=True,
        timeout=30,
        capture_output=True,
    )
    with bus.consumer(group(), [topic]) as consumer:
        (record,) = poll_until(consumer, 1, deadline_s=30)
    assert record.key == b"order-A-17"
    assert json.loads(record.value) == json.loads(data)
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_type": b"shop.order.placed",
        "ce_id": event_id.encode(),
        "ce_source": b"tests/kcat",
        "content-type": b"application/json",
    }
    event = ev.from_record(record.value, record.headers)
    assert event["id"] == event_id and event["type"] == "shop.order.placed"
    assert event["data"] == {"order_id": "A-17", "amount": 120.5}

    # And the other way: what the bus produces, kcat reads with its headers.
    bus.produce(topic, [OutgoingRecord(b"from-fxray", key=b"k", headers=[("ce_id", b"x1")])])
    out = subprocess.run(
        [kcat, "-C", "-b", BOOTSTRAP, "-t", topic, "-o", "1", "-c", "1", "-e", "-f", "%k|%h|%s\\n"],
        check=True,
        timeout=30,
        capture_output=True,
    ).stdout
    assert out.strip() == b"k|ce_id=x1|from-fxray"


def test_async_poll_commit_and_produce(bus: KafkaBus, make_topic: Callable[[int], str]) -> None:
    topic, g = make_topic(4), group()

    async def main() -> list[Record]:
        await bus.produce_async(topic, [OutgoingRecord(f"{i}".encode()) for i in range(300)])
        consumer = bus.consumer(g, [topic])
        got: list[Record] = []
        ticks = 0

        async def ticker() -> None:  # the event loop stays free while polling
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        end = time.monotonic() + 60
        while len(got) < 300:
            assert time.monotonic() < end, len(got)
            records = await consumer.poll_async(100, 0.5)
            got.extend(records)
            await consumer.commit_async(next_offsets(records))
        task.cancel()
        await consumer.close_async()
        await consumer.close_async()  # idempotent
        assert ticks > 5
        return got

    got = asyncio.run(main())
    assert sorted(int(r.value) for r in got) == list(range(300))
    assert sum(bus.committed(g, topic).values()) == 300
    assert bus.lag(g, topic) == 0


def test_kept_partitions_keep_their_position_across_a_rebalance(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    """Like the embedded bus: no redelivery of uncommitted records to a member that keeps its
    partitions, although the eager protocol revokes everything on every rebalance."""
    topic, g = make_topic(4), group()
    keys = [key_for_partition(p, 4) for p in range(4)]
    bus.produce(topic, [OutgoingRecord(b"%d" % i, key=keys[i % 4]) for i in range(400)])
    with bus.consumer(g, [topic]) as a:
        first = poll_until(a, 400)  # nothing committed
        assert len(first) == 400 and len(a.assignment()) == 4
        with bus.consumer(g, [topic]) as b:
            from_a: list[Record] = []
            from_b: list[Record] = []
            end = time.monotonic() + 60
            while not (
                len(a.assignment()) == 2 and len(b.assignment()) == 2 and len(from_b) >= 200
            ):
                assert time.monotonic() < end, (a.assignment(), b.assignment(), len(from_b))
                from_a += a.poll(1000, 0.2)
                from_b += b.poll(1000, 0.2)
            from_a += poll_for(a, 1.0)
            assert from_a == []  # a resumed its two partitions where it was
            assert sorted(a.revoked_since_last_call()) == b.assignment()
            # b starts at the (absent) committed offsets of its partitions: at-least-once.
            assert sorted((r.partition, r.offset) for r in from_b) == [
                (p, o) for _, p in b.assignment() for o in range(100)
            ]


def test_pause_survives_a_rebalance_for_kept_partitions(
    bus: KafkaBus, make_topic: Callable[[int], str]
) -> None:
    topic, g = make_topic(4), group()
    keys = [key_for_partition(p, 4) for p in range(4)]
    with bus.consumer(g, [topic]) as a:
        wait_assigned(a)
        a.pause(a.assignment())  # like the router's backpressure
        bus.produce(topic, [OutgoingRecord(b"%d" % i, key=keys[i % 4]) for i in range(40)])
        with bus.consumer(g, [topic]) as b:
            from_b: list[Record] = []
            end = time.monotonic() + 60
            while not (len(a.assignment()) == 2 and len(from_b) >= 20):
                assert time.monotonic() < end, (a.assignment(), b.assignment(), len(from_b))
                assert a.poll(1000, 0.2) == []  # still paused
                from_b += b.poll(1000, 0.2)
            assert a.paused() == a.assignment()  # kept partitions stay paused; b's moved
            assert poll_for(a, 1.0) == []
            a.resume(a.assignment())
            from_a = poll_until(a, 20, deadline_s=30)
        assert {r.partition for r in from_a} | {r.partition for r in from_b} == set(range(4))
        assert len(from_a) == len(from_b) == 20
