"""The Kafka bus handle, :class:`KafkaBus`: client settings, topics (admin client), produce,
the consumer factory, and offsets, lag and reads outside a consumer group."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as _RdTopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic, OffsetSpec

from fxray.bus import OutgoingRecord, Record
from fxray.bus.kafka.consumer import KafkaConsumer, _to_record
from fxray.bus.kafka.errors import _MISSING_TOPIC, BusError, _kafka_error, _log_error
from fxray.bus.kafka.producer import _Delivery, _PolledProducer

log = logging.getLogger("fxray.bus.kafka")
_rdlog = logging.getLogger("fxray.bus.kafka.librdkafka")


class KafkaBus:
    """A picklable handle on a Kafka cluster (implements :class:`fxray.bus.EventBus`).

    Holds configuration only; the producer (idempotent, ``acks=all``) and the admin client are
    created lazily, once per process. ``producer_config``/``consumer_config`` override the
    defaults key by key (librdkafka property names).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "fxray",
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        default_partitions: int = 4,
        replication_factor: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        if default_partitions < 1:
            raise ValueError("default_partitions must be >= 1")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.producer_config = dict(producer_config or {})
        self.consumer_config = dict(consumer_config or {})
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.timeout_s = timeout_s
        self._reset_clients()

    def _reset_clients(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._producer: _PolledProducer | None = None
        self._admin: AdminClient | None = None
        self._known_topics: set[str] = set()

    def __repr__(self) -> str:
        return f"KafkaBus(bootstrap={self.bootstrap!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "bootstrap": self.bootstrap,
            "client_id": self.client_id,
            "producer_config": self.producer_config,
            "consumer_config": self.consumer_config,
            "default_partitions": self.default_partitions,
            "replication_factor": self.replication_factor,
            "timeout_s": self.timeout_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_clients()

    # configuration -------------------------------------------------------------------------

    def _base_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            "allow.auto.create.topics": False,
        }

    def producer_settings(self) -> dict[str, Any]:
        """The librdkafka configuration of the producer."""
        return {
            **self._base_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "error_cb": _log_error("producer"),
            "logger": _rdlog,
            **self.producer_config,
        }

    def consumer_settings(self, group: str) -> dict[str, Any]:
        """The librdkafka configuration of a consumer of ``group``."""
        return {
            **self._base_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Eager range assignment: the test broker (noida-db) fails cooperative-sticky.
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10_000,
            # Answer fetches within 20 ms when there is little to read (Kafka's default, 500,
            # favours throughput; routing favours latency, and is never idle for long).
            "fetch.wait.max.ms": 20,
            "max.poll.interval.ms": 600_000,
            # Notice topics created after subscribing (and partitions added) within seconds.
            "topic.metadata.refresh.interval.ms": 5_000,
            "error_cb": _log_error(f"consumer {group}"),
            "logger": _rdlog,
            **self.consumer_config,
        }

    # lazily created clients -----------------------------------------------------------------

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's librdkafka threads are not here
            self._reset_clients()

    def _admin_client(self) -> AdminClient:
        self._check_pid()
        with self._lock:
            if self._admin is None:
                self._admin = AdminClient({**self._base_config(), "error_cb": _log_error("admin")})
            return self._admin

    def _polled_producer(self) -> _PolledProducer:
        self._check_pid()
        with self._lock:
            if self._producer is None or not self._producer.alive():
                self._producer = _PolledProducer(self.producer_settings())
                # Stop its poll thread when this handle is collected, or at exit.
                weakref.finalize(self, self._producer.close, 2.0, os.getpid())
            return self._producer

    def close(self) -> None:
        """Flush and stop this process's producer (clients are re-created on next use)."""
        self._check_pid()
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    # topics ---------------------------------------------------------------------------------

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count, or ``None`` if it does not exist."""
        md = self._admin_client().list_topics(topic=topic, timeout=self.timeout_s)
        tm = md.topics.get(topic)
        if tm is None or tm.error is not None:
            if tm is not None and tm.error.code() not in _MISSING_TOPIC:
                raise BusError(f"kafka: metadata for {topic!r}: {tm.error.str()}")
            return None
        return len(tm.partitions)

    def topics(self) -> dict[str, int]:
        """Topic names (internal ones excluded) and their partition counts."""
        md = self._admin_client().list_topics(timeout=self.timeout_s)
        return {
            name: len(tm.partitions)
            for name, tm in md.topics.items()
            if tm.error is None and not name.startswith("__")
        }

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create the topic, or grow it to ``partitions``; never shrinks. Returns once metadata
        shows it with leaders for all its partitions."""
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        admin = self._admin_client()
        current = self.partitions(topic)
        try:
            if current is None:
                new = NewTopic(topic, partitions, self.replication_factor)
                admin.create_topics([new], request_timeout=self.timeout_s)[topic].result()
                log.info("kafka: created topic %s (%d partitions)", topic, partitions)
            elif current < partitions:
                grow = NewPartitions(topic, partitions)
                admin.create_partitions([grow], request_timeout=self.timeout_s)[topic].result()
                log.info("kafka: grew topic %s to %d partitions", topic, partitions)
        except KafkaException as exc:
            err = _kafka_error(exc)
            ok = {KafkaError.TOPIC_ALREADY_EXISTS, KafkaError.INVALID_PARTITIONS}
            if err is None or err.code() not in ok:
                raise BusError(f"kafka: cannot create topic {topic!r}: {exc}") from exc
        self._wait_for_topic(topic, partitions)
        self._known_topics.add(topic)

    def _wait_for_topic(self, topic: str, partitions: int) -> None:
        admin = self._admin_client()
        deadline = time.monotonic() + self.timeout_s
        while True:
            md = admin.list_topics(topic=topic, timeout=self.timeout_s)
            tm = md.topics.get(topic)
            if (
                tm is not None
                and tm.error is None
                and len(tm.partitions) >= partitions
                and all(pm.leader >= 0 for pm in tm.partitions.values())
            ):
                return
            if time.monotonic() > deadline:
                raise BusError(f"kafka: topic {topic!r} did not appear in metadata")
            time.sleep(0.05)

    def delete_topic(self, topic: str) -> None:
        """Delete the topic and everything on it (no-op if missing); tests and ops."""
        admin = self._admin_client()
        try:
            admin.delete_topics([topic], request_timeout=self.timeout_s)[topic].result()
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is None or err.code() not in _MISSING_TOPIC:
                raise BusError(f"kafka: cannot delete topic {topic!r}: {exc}") from exc
        self._known_topics.discard(topic)
        deadline = time.monotonic() + self.timeout_s
        while self.partitions(topic) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    # produce --------------------------------------------------------------------------------

    def _topic_exists(self, topic: str) -> None:
        if topic not in self._known_topics:
            if self.partitions(topic) is None:
                self.ensure_topic(topic, self.default_partitions)
            self._known_topics.add(topic)

    @staticmethod
    def _enqueue(
        producer: Producer,
        topic: str,
        records: list[OutgoingRecord],
        start: int,
        delivery: _Delivery,
    ) -> int:
        """Enqueue records from ``start``; returns the index reached (< len on a full queue)."""
        i = start
        try:
            for i in range(start, len(records)):
                r = records[i]
                producer.produce(
                    topic,
                    value=r.value,
                    key=r.key,
                    headers=r.headers or None,
                    on_delivery=delivery.report,
                )
        except BufferError:
            return i
        except (KafkaException, TypeError, ValueError) as exc:
            delivery.fail_unsent(len(records) - i, f"cannot enqueue record {i}: {exc}")
            return len(records)
        return len(records)

    def produce(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Append records; returns once every one is acknowledged by the brokers (``acks=all``).

        Records of one key keep their order. Raises :class:`BusError` if any delivery failed.
        """
        if not records:
            return
        self._topic_exists(topic)
        pp = self._polled_producer()
        delivery = _Delivery(len(records))
        i = 0
        while i < len(records):
            i = self._enqueue(pp.producer, topic, records, i, delivery)
            if i < len(records):
                time.sleep(0.005)  # the local queue is full; the poll thread drains it
        while not delivery.done.wait(0.5):
            if not pp.alive():
                raise BusError("kafka: the producer's poll thread stopped")
        delivery.raise_errors(topic, len(records))

    async def produce_async(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Like :meth:`produce`, awaiting the delivery reports instead of blocking.

        Records are enqueued at once (without awaiting), so calls awaited one after the other,
        and even concurrent calls, keep their batches in call order.
        """
        if not records:
            return
        if topic not in self._known_topics:
            await asyncio.to_thread(self._topic_exists, topic)
        pp = self._polled_producer()
        delivery = _Delivery(len(records), asyncio.get_running_loop())
        i = 0
        while i < len(records):
            i = self._enqueue(pp.producer, topic, records, i, delivery)
            if i < len(records):
                await asyncio.sleep(0.005)
        await delivery.wait_async()
        delivery.raise_errors(topic, len(records))

    # consumers and offsets -------------------------------------------------------------------

    def consumer(
        self, group: str, topics: list[str], member_id: str | None = None
    ) -> KafkaConsumer:
        """A new member of ``group`` subscribed to ``topics``.

        A ``member_id`` makes it a *static* member (``group.instance.id``): a consumer that
        restarts with the same id takes its partitions back at once, without a rebalance.
        """
        settings = self.consumer_settings(group)
        if member_id:
            settings["group.instance.id"] = member_id
        return KafkaConsumer(settings, group, topics)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written (high watermark), per partition; empty if missing."""
        n = self.partitions(topic)
        if not n:
            return {}
        request = {_RdTopicPartition(topic, p): OffsetSpec.latest() for p in range(n)}
        try:
            futures = self._admin_client().list_offsets(request, request_timeout=self.timeout_s)
            return {tp.partition: f.result().offset for tp, f in futures.items()}
        except KafkaException as exc:
            raise BusError(f"kafka: cannot list offsets of {topic!r}: {exc}") from exc

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets, per partition (0 where nothing is committed)."""
        n = self.partitions(topic)
        if not n:
            return {}
        request = ConsumerGroupTopicPartitions(
            group, [_RdTopicPartition(topic, p) for p in range(n)]
        )
        try:
            futures = self._admin_client().list_consumer_group_offsets(
                [request], request_timeout=self.timeout_s
            )
            result = futures[group].result()
        except KafkaException as exc:
            raise BusError(f"kafka: cannot list offsets of group {group!r}: {exc}") from exc
        out = dict.fromkeys(range(n), 0)
        for tp in result.topic_partitions or []:
            if tp.topic == topic and tp.offset >= 0:
                out[tp.partition] = tp.offset
        return out

    def lag(self, group: str, topic: str) -> int:
        """Records of ``topic`` not yet committed by ``group``: sum of (end - committed)."""
        ends = self.end_offsets(topic)
        committed = self.committed(group, topic)
        return sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Read up to ``max_records`` from ``offset`` without a consumer group (tools, tests)."""
        n = self.partitions(topic)
        if n is None or not 0 <= partition < n or max_records <= 0:
            return []
        offset = max(offset, 0)
        conf = {
            **self.consumer_settings(f"fxray-read-{uuid.uuid4().hex}"),
            "enable.partition.eof": True,
            "error_cb": _log_error("reader"),
        }
        reader = _RdConsumer(conf)
        out: list[Record] = []
        try:
            tp = _RdTopicPartition(topic, partition)
            low, high = reader.get_watermark_offsets(tp, timeout=self.timeout_s)
            start = max(offset, low)
            stop = min(start + max_records, high)
            if start >= stop:
                return []
            reader.assign([_RdTopicPartition(topic, partition, start)])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for msg in reader.consume(min(stop - start, 1000), 0.2):
                    err = msg.error()
                    if err is None:
                        if msg.offset() < stop:
                            out.append(_to_record(msg))
                    elif err.code() != KafkaError._PARTITION_EOF:
                        raise BusError(f"kafka: reading {topic}[{partition}]: {err.str()}")
                if len(out) >= max_records or (out and out[-1].offset >= stop - 1):
                    break
                (pos,) = reader.position([tp])
                if pos.offset >= stop:
                    break
            return out[:max_records]
        finally:
            reader.close()
