"""The Kafka event bus on confluent-kafka: :class:`KafkaBus` and :class:`KafkaConsumer`.

Semantics match the embedded bus (:mod:`fxray.bus.embedded`):

* Keys are placed by librdkafka's default ``consistent_random`` partitioner, which is
  ``zlib.crc32(key) % partitions`` like the embedded bus; records without a key go to a random
  (sticky, per ``linger.ms`` batch) partition rather than round-robin.
* A committed offset is the offset of the *next* record to read.
* A partition (re)assigned to a member is read from the group's committed offset
  (``auto.offset.reset=earliest`` when there is none): at-least-once. A member that keeps a
  partition across a rebalance keeps its position (and its pause), although the default eager
  protocol revokes everything on every rebalance.
* Commits for partitions the member does not own (any more) are logged and dropped.
* Producing to a missing topic creates it with ``default_partitions``; topics are never
  auto-created by metadata requests (``allow.auto.create.topics=false`` everywhere).

Every librdkafka client is created lazily in the process that uses it, so a :class:`KafkaBus`
pickles as its configuration and can be handed to Ray tasks and actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import TopicPartition as _RdTopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic, OffsetSpec

from fxray.bus import OutgoingRecord, Record, TopicPartition

__all__ = ["BusError", "KafkaBus", "KafkaConsumer"]

log = logging.getLogger(__name__)
_rdlog = logging.getLogger(__name__ + ".librdkafka")

_T = TypeVar("_T")

# Errors a consumer reports for a subscribed topic that does not exist (yet): like the embedded
# bus, its partitions are assigned once it is created.
_MISSING_TOPIC = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}
# Commit errors that mean "this member no longer owns these partitions" (a rebalance happened).
_NOT_OWNER = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.STALE_MEMBER_EPOCH,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}


class BusError(RuntimeError):
    """The Kafka bus failed: a delivery report, an admin request or the consumer reported an
    error that is not retried."""


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _log_error(client: str) -> Callable[[KafkaError], None]:
    def error_cb(err: KafkaError) -> None:
        level = logging.ERROR if err.fatal() else logging.WARNING
        log.log(level, "kafka %s: %s", client, err)

    return error_cb


# --------------------------------------------------------------------- producer


class _Delivery:
    """Tracks the delivery reports of one produce call."""

    __slots__ = ("_future", "_lock", "_loop", "_remaining", "done", "errors", "failed")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._remaining = count
        self._lock = threading.Lock()
        self._loop = loop
        self._future: asyncio.Future[None] | None = loop.create_future() if loop else None
        self.errors: list[str] = []  # the first few
        self.failed = 0
        self.done = threading.Event()
        if count == 0:
            self._finish()

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery callback (called from the producer's poll thread)."""
        with self._lock:
            if err is not None:
                self._fail(1, f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            self._remaining -= 1
            finished = self._remaining == 0
        if finished:
            self._finish()

    def fail_unsent(self, count: int, reason: str) -> None:
        """``count`` records were never enqueued (produce() raised)."""
        with self._lock:
            self._fail(count, reason)
            self._remaining -= count
            finished = self._remaining <= 0
        if finished:
            self._finish()

    def _fail(self, count: int, reason: str) -> None:
        self.failed += count
        if len(self.errors) < 5:
            self.errors.append(reason)

    def _finish(self) -> None:
        self.done.set()
        if self._loop is not None and self._future is not None:
            fut = self._future
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))

    async def wait_async(self) -> None:
        assert self._future is not None
        await self._future

    def raise_errors(self, topic: str, total: int) -> None:
        if self.failed:
            shown = "; ".join(self.errors)
            raise BusError(f"kafka: {self.failed} of {total} records to {topic!r} failed: {shown}")


class _PolledProducer:
    """A confluent ``Producer`` with a daemon thread serving its delivery callbacks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fxray-kafka-producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.producer.poll(0.1)
            except Exception:  # a callback raised; keep serving the others
                log.exception("kafka producer: poll failed")

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout_s: float = 10.0, pid: int | None = None) -> None:
        """Stop the poll thread and flush; a no-op in a forked child (``pid`` not ours)."""
        if pid is not None and pid != os.getpid():
            return
        self._stop.set()
        self._thread.join(timeout_s)
        left = self.producer.flush(timeout_s)
        if left:
            log.warning("kafka producer: %d records undelivered at close", left)


# --------------------------------------------------------------------- consumer


def _tp(tp: _RdTopicPartition) -> TopicPartition:
    return (tp.topic, tp.partition)


def _to_record(msg: Message) -> Record:
    ts_type, ts = msg.timestamp()
    headers = msg.headers()
    return Record(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value() or b"",
        headers=[(k, v if v is not None else b"") for k, v in headers] if headers else [],
        timestamp_ms=0 if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
    )


class KafkaConsumer:
    """A consumer-group member on Kafka (implements :class:`fxray.bus.Consumer`).

    Polls are serialised with one lock; commits, pauses and resumes take another, so a commit
    or a pause never waits for a poll in progress (librdkafka is thread-safe; its maintainers
    endorse consuming on one thread while committing on another). :meth:`close` takes both.
    The async variants run the blocking calls on worker threads of their own: one for polls,
    one for commits.
    Rebalance callbacks keep :meth:`assignment` accurate and collect the partitions that moved
    away for :meth:`revoked_since_last_call`.
    """

    def __init__(self, config: dict[str, Any], group: str, topics: list[str]) -> None:
        self.group = group
        self.topics = list(dict.fromkeys(topics))
        conf = dict(config)
        conf["group.id"] = group
        strategy = str(conf.get("partition.assignment.strategy", "")).lower()
        self._incremental = "cooperative" in strategy or conf.get("group.protocol") == "consumer"
        self._lock = threading.Lock()  # polls (and close)
        self._control = threading.Lock()  # commits, pauses, resumes (and close)
        self._state = threading.Lock()  # the bookkeeping below
        self._assignment: set[TopicPartition] = set()
        self._revoked: set[TopicPartition] = set()
        self._pending: set[TopicPartition] = set()  # revoked by an eager rebalance, in flight
        self._positions: dict[TopicPartition, int] = {}  # their positions at revocation
        self._paused: set[TopicPartition] = set()
        self._error: KafkaError | None = None  # raised by the next poll
        self._missing_warned: set[str] = set()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._commit_executor: ThreadPoolExecutor | None = None
        self._consumer = _RdConsumer(conf)
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def __repr__(self) -> str:
        return f"KafkaConsumer(group={self.group!r}, topics={self.topics!r})"

    # rebalance callbacks (run inside poll()/close(), i.e. under self._lock) -------------------

    def _on_assign(self, consumer: _RdConsumer, partitions: list[_RdTopicPartition]) -> None:
        added = {_tp(p) for p in partitions}
        with self._state:
            if self._incremental:  # the library calls incremental_assign after us
                self._assignment |= added
                self._paused -= added
                return
            # Eager: the full new assignment. Partitions we keep resume at our own position.
            for p in partitions:
                pos = self._positions.get(_tp(p))
                if pos is not None:
                    p.offset = pos
            self._revoked |= self._pending - added
            self._pending.clear()
            self._positions.clear()
            self._assignment = added
            self._paused &= added
            paused = sorted(self._paused)
        consumer.assign(partitions)
        if paused:
            consumer.pause([_RdTopicPartition(t, p) for t, p in paused])
        log.info("kafka consumer %s: assigned %s", self.group, sorted(added))

    def _on_revoke(self, consumer: _RdConsumer, partitions: list[_RdTopicPartition]) -> None:
        gone = {_tp(p) for p in partitions}
        positions: dict[TopicPartition, int] = {}
        if not self._incremental and not self._closed and partitions:
            try:
                for p in consumer.position(partitions):
                    if p.error is None and p.offset >= 0:
                        positions[_tp(p)] = p.offset
            except KafkaException as exc:
                log.warning("kafka consumer %s: no positions at revocation: %s", self.group, exc)
        with self._state:
            self._assignment -= gone
            if self._incremental or self._closed:
                self._revoked |= gone
                self._paused -= gone
            else:
                self._pending |= gone
                self._positions.update(positions)
        log.info("kafka consumer %s: revoked %s", self.group, sorted(gone))

    def _on_lost(self, consumer: _RdConsumer, partitions: list[_RdTopicPartition]) -> None:
        gone = {_tp(p) for p in partitions}
        with self._state:
            self._assignment -= gone
            self._revoked |= gone | self._pending
            self._pending.clear()
            self._positions.clear()
            self._paused -= gone
        log.warning("kafka consumer %s: lost %s", self.group, sorted(gone))

    # sync API -----------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting up to ``timeout_s`` if none are ready.

        Raises :class:`BusError` on a consumer error that is neither retriable nor about a
        missing topic (after returning the records fetched with it).
        """
        with self._lock:
            self._check_open()
            if self._error is not None:
                err, self._error = self._error, None
                raise BusError(f"kafka consumer {self.group}: {err.str()}")
            if max_records <= 0:
                return []
            # consume(n, t) waits for n records or t seconds; poll returns with the first one,
            # then what else is already fetched is drained without waiting (low latency).
            first = self._consumer.poll(max(timeout_s, 0.0))
            msgs = [] if first is None else [first]
            if first is not None and max_records > 1:
                msgs.extend(self._consumer.consume(min(max_records - 1, 1_000_000), 0))
            out: list[Record] = []
            for msg in msgs:
                err = msg.error()
                if err is None:
                    out.append(_to_record(msg))
                else:
                    self._consumer_error(msg, err)
            if self._error is not None and not out:
                err, self._error = self._error, None
                raise BusError(f"kafka consumer {self.group}: {err.str()}")
            return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-offsets-to-read synchronously; partitions not owned are logged, dropped."""
        with self._control:
            self._check_open()
            if not offsets:
                return
            with self._state:
                owned = set(self._assignment)
            tps: list[_RdTopicPartition] = []
            refused: list[TopicPartition] = []
            for (topic, partition), offset in offsets.items():
                if (topic, partition) in owned and offset >= 0:
                    tps.append(_RdTopicPartition(topic, partition, int(offset)))
                else:
                    refused.append((topic, partition))
            if refused:
                log.warning(
                    "kafka consumer %s: commit dropped for partitions not owned: %s",
                    self.group,
                    sorted(refused),
                )
            if not tps:
                return
            try:
                result = self._consumer.commit(offsets=tps, asynchronous=False)
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is not None and err.code() in _NOT_OWNER:
                    log.warning(
                        "kafka consumer %s: commit dropped (%s) for %s",
                        self.group,
                        err.name(),
                        sorted(_tp(t) for t in tps),
                    )
                    return
                raise BusError(f"kafka consumer {self.group}: commit failed: {exc}") from exc
            failed = [t for t in result or [] if t.error is not None]
            if failed:
                codes = {t.error.code() for t in failed}
                detail = ", ".join(f"{t.topic}[{t.partition}]: {t.error}" for t in failed)
                if codes <= _NOT_OWNER:
                    log.warning("kafka consumer %s: commit dropped: %s", self.group, detail)
                else:
                    raise BusError(f"kafka consumer {self.group}: commit failed: {detail}")

    def assignment(self) -> list[TopicPartition]:
        """The partitions currently assigned (as of the last rebalance callback)."""
        with self._state:
            return sorted(self._assignment)

    def revoked_since_last_call(self) -> list[TopicPartition]:
        """Partitions taken from this member since the previous call (then forgets them).

        Partitions revoked and given straight back by the same rebalance are not included:
        they keep their position, so nothing is redelivered.
        """
        with self._state:
            out, self._revoked = sorted(self._revoked), set()
            return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching from these partitions until resumed; pauses drop on revocation."""
        with self._control:
            self._check_open()
            tps = {(t, p) for t, p in partitions}
            with self._state:
                self._paused |= tps
                owned = sorted(tps & self._assignment)
            if owned:
                self._consumer.pause([_RdTopicPartition(t, p) for t, p in owned])

    def resume(self, partitions: list[TopicPartition]) -> None:
        """Fetch from these partitions again."""
        with self._control:
            self._check_open()
            tps = {(t, p) for t, p in partitions}
            with self._state:
                self._paused -= tps
                owned = sorted(tps & self._assignment)
            if owned:
                self._consumer.resume([_RdTopicPartition(t, p) for t, p in owned])

    def paused(self) -> list[TopicPartition]:
        """The currently paused partitions."""
        with self._state:
            return sorted(self._paused)

    def close(self) -> None:
        """Leave the group (idempotent); its partitions go to the other members."""
        with self._lock, self._control:
            if self._closed:
                return
            self._closed = True
            try:
                self._consumer.close()
            finally:
                with self._state:
                    self._revoked |= self._pending | self._assignment
                    self._pending.clear()
                    self._assignment.clear()
                    self._paused.clear()
        for executor in (self._executor, self._commit_executor):
            if executor is not None:
                executor.shutdown(wait=False)

    # async API ----------------------------------------------------------------------------

    async def poll_async(self, max_records: int, timeout_s: float) -> list[Record]:
        """Like :meth:`poll`, on this consumer's worker thread."""
        return await self._in_thread(self.poll, max_records, timeout_s)

    async def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Like :meth:`commit`, on this consumer's worker thread."""
        if offsets:
            self._check_open()
            if self._commit_executor is None:
                self._commit_executor = ThreadPoolExecutor(
                    1, thread_name_prefix="fxray-kafka-commit"
                )
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._commit_executor, self.commit, offsets)

    async def close_async(self) -> None:
        """Like :meth:`close`, on this consumer's worker thread."""
        if not self._closed:
            await self._in_thread(self.close)

    # context manager ----------------------------------------------------------------------

    def __enter__(self) -> KafkaConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ----------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        self._check_open()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fxray-kafka-consumer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _consumer_error(self, msg: Message, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code in _MISSING_TOPIC:
            topic = msg.topic() or "?"
            if topic not in self._missing_warned:
                self._missing_warned.add(topic)
                log.warning("kafka consumer %s: topic %s not available yet", self.group, topic)
            return
        if err.fatal() or not err.retriable():
            log.error("kafka consumer %s: %s", self.group, err)
            if self._error is None:
                self._error = err
        else:
            log.warning("kafka consumer %s: %s", self.group, err)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")


# --------------------------------------------------------------------- the bus handle


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
