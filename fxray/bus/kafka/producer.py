"""The Kafka bus's producing side: :class:`_Delivery` tracks the delivery reports of one
produce call, :class:`_PolledProducer` serves a confluent ``Producer``'s callbacks on a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from fxray.bus.kafka.errors import BusError

log = logging.getLogger("fxray.bus.kafka")


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
