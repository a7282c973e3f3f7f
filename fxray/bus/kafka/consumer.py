"""The Kafka bus's consumer: :class:`KafkaConsumer`, a consumer-group member, and librdkafka
messages as :class:`~fxray.bus.Record`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message
from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import TopicPartition as _RdTopicPartition

from fxray.bus import Record, TopicPartition
from fxray.bus.kafka.errors import _MISSING_TOPIC, _NOT_OWNER, BusError, _kafka_error

log = logging.getLogger("fxray.bus.kafka")

_T = TypeVar("_T")


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
