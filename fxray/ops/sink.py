"""The ops sink: a Ray actor that consumes the ops topics and bulk-writes Elasticsearch.

Sinks scale like routers: ``ops_sinks`` actors form one consumer group
(``fxray-ops-sink.<instance>``), each a static member named after its index, so a sink that
crashes and is started again under its index takes its partitions back at once.

Two tasks share one event loop:

* **poll** appends records to a buffer; it pauses its partitions while Elasticsearch is away or
  the buffer is full, and keeps polling so the sink stays in its group;
* **write** takes up to :data:`BULK_MAX` records from the head of the buffer, writes them in one
  ``_bulk`` request (retrying with exponential back-off while Elasticsearch is unavailable),
  and only then commits their offsets: at-least-once, and the documents' ids make a rewrite
  idempotent (see :mod:`fxray.ops.elastic`), so nothing is lost and nothing is duplicated.

Routers and executors only produce to the bus, so a slow or absent Elasticsearch never holds
them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

import ray
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from fxray import ops
from fxray.bus import EventBus, Record, TopicPartition
from fxray.ops import elastic
from fxray.settings import Settings

log = logging.getLogger("fxray.ops.sink")

BULK_MAX = 2000  # records per _bulk request
MAX_BUFFER = 20_000  # records held before the sink pauses its partitions
POLL_MAX = 1000
GATHER_S = 0.05  # wait this long for a batch to fill before writing a small one
MAX_BACKOFF_S = 5.0
_LOG_KEYS = ("doc_id", "run_id", "ts")
_RUN_KEYS = ("run_id", "rank", "created_ts")


def sink_group(settings: Settings) -> str:
    return f"fxray-ops-sink.{settings.instance}"


class OpsSink:
    """One ops sink; runs as a Ray actor started by :func:`start_sink`."""

    def __init__(
        self, settings: dict[str, Any], bus: EventBus, es: elastic.EsConfig, *, index: int = 0
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = Settings(**settings)
        self.bus = bus
        self.es = es
        self.index = index
        self.sink_id = f"ops-sink-{index}"
        self.client = es.client()
        self.consumer: Any = None
        self.buffer: list[tuple[TopicPartition, int, dict[str, Any] | None]] = []
        self.has_data = asyncio.Event()
        self.uncommitted: dict[TopicPartition, int] = {}
        self.templates_ok = False
        self.es_down_since: float | None = None
        self.paused = False
        self.running = False
        self.tasks: list[asyncio.Task[None]] = []
        self.counters: Counter[str] = Counter()
        self.errors: list[str] = []

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> str:
        if self.running:
            return self.sink_id
        self.running = True
        await asyncio.to_thread(self._open_consumer)
        self.tasks = [
            asyncio.create_task(self._guard(self._poll_loop)),
            asyncio.create_task(self._guard(self._write_loop)),
        ]
        return self.sink_id

    def _open_consumer(self) -> None:
        s = self.settings
        for topic in (s.ops_runs_topic, s.ops_logs_topic):
            self.bus.ensure_topic(topic, s.bus_partitions)
        self.consumer = self.bus.consumer(
            sink_group(s),
            [s.ops_runs_topic, s.ops_logs_topic],
            member_id=f"{s.instance}.{self.sink_id}",
        )

    async def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Stop polling, write what is buffered (within ``timeout_s``), commit, leave."""
        self.running = False
        poll, write = self.tasks or (None, None)
        if poll is not None:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
        if write is not None:
            self.has_data.set()
            try:
                await asyncio.wait_for(write, timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception as exc:  # unwritten records are redelivered to the next sink
                self._note_error(f"stop: {type(exc).__name__}: {exc}")
        await self._commit()
        if self.consumer is not None:
            await self.consumer.close_async()
        return dict(self.counters)

    async def _guard(self, loop: Any) -> None:
        while self.running:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("ops sink loop %s failed; restarting it", loop.__name__)
                self._note_error(f"{loop.__name__}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    # poll ------------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while self.running:
            self._backpressure()
            records: list[Record] = await self.consumer.poll_async(POLL_MAX, 0.1)
            if records:
                self.counters["records_in"] += len(records)
                self.buffer.extend(
                    ((r.topic, r.partition), r.offset, _decode(r.value)) for r in records
                )
                self.has_data.set()

    def _backpressure(self) -> None:
        """Pause while Elasticsearch is away or the buffer is full; keep polling meanwhile."""
        hold = self.es_down_since is not None or len(self.buffer) >= MAX_BUFFER
        assignment = self.consumer.assignment()
        if hold:
            self.consumer.pause(assignment)  # also partitions assigned since the last pause
            if not self.paused:
                self.paused = True
                self.counters["pauses"] += 1
        elif self.paused:
            self.consumer.resume(assignment)
            self.paused = False

    # write -----------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while self.running or self.buffer:
            if not self.buffer:
                self.has_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.has_data.wait(), 0.5)
                continue
            if len(self.buffer) < BULK_MAX and self.running:
                await asyncio.sleep(GATHER_S)
            batch = self.buffer[:BULK_MAX]
            await self._write(batch)
            del self.buffer[: len(batch)]
            for tp, offset, _ in batch:
                if offset + 1 > self.uncommitted.get(tp, -1):
                    self.uncommitted[tp] = offset + 1
            await self._commit()

    async def _write(self, batch: list[tuple[TopicPartition, int, dict[str, Any] | None]]) -> None:
        records = [r for _, _, r in batch if r is not None]
        self.counters["undecodable"] += len(batch) - len(records)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(elastic.Unavailable),
            wait=wait_exponential_jitter(initial=0.2, max=MAX_BACKOFF_S),
            stop=self._stopping,
            before_sleep=self._unavailable,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if not self.templates_ok:
                    await asyncio.to_thread(elastic.ensure_templates, self.client, self.es)
                    self.templates_ok = True
                outcome = await asyncio.to_thread(elastic.write, self.client, self.es, records)
        if self.es_down_since is not None:
            down = time.monotonic() - self.es_down_since
            log.info("elasticsearch is back after %.1fs", down)
            self.es_down_since = None
        self.counters["batches"] += 1
        self.counters["written"] += outcome.written
        self.counters["stale"] += outcome.stale
        if outcome.rejected:
            self.counters["rejected"] += len(outcome.rejected)
            self._note_error(f"{len(outcome.rejected)} records rejected: {outcome.rejected[:3]}")

    def _stopping(self, state: RetryCallState) -> bool:
        return not self.running

    def _unavailable(self, state: RetryCallState) -> None:
        if self.es_down_since is None:
            self.es_down_since = time.monotonic()
        # what comes back may be a new, empty cluster: put the templates (idempotent) again
        self.templates_ok = False
        self.counters["write_retries"] += 1
        exc = state.outcome.exception() if state.outcome else None
        self._note_error(f"elasticsearch unavailable (attempt {state.attempt_number}): {exc}")

    async def _commit(self) -> None:
        offsets, self.uncommitted = self.uncommitted, {}
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit_async(offsets)
            self.counters["commits"] += 1
        except Exception as exc:  # tried again with the next batch; else redelivered (harmless)
            self.counters["commit_failures"] += 1
            self._note_error(f"commit: {type(exc).__name__}: {exc}")
            for tp, offset in offsets.items():
                self.uncommitted[tp] = max(offset, self.uncommitted.get(tp, 0))

    # operator calls --------------------------------------------------------------------------

    def _note_error(self, text: str) -> None:
        log.warning("%s", text)
        self.errors.append(text)
        del self.errors[:-50]

    def stats(self) -> dict[str, Any]:
        return {
            "sink": self.sink_id,
            "buffered": len(self.buffer),
            "paused": self.paused,
            "es_down_s": None
            if self.es_down_since is None
            else time.monotonic() - self.es_down_since,
            "assignment": sorted(self.consumer.assignment()) if self.consumer else [],
            "counters": dict(self.counters),
            "errors": list(self.errors[-10:]),
        }

    def ping(self) -> str:
        return self.sink_id


def _decode(value: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(value)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    needed = _LOG_KEYS if record.get("kind") == ops.LOG else _RUN_KEYS
    return record if all(record.get(k) is not None for k in needed) else None


def start_sink(settings: Settings, bus: EventBus, index: int) -> Any:
    """Start ops sink ``index`` as a Ray actor; returns its handle once it consumes."""
    handle = (
        ray.remote(OpsSink)
        .options(
            name=f"fxray-ops-sink.{settings.instance}.{index}.{uuid.uuid4().hex[:6]}",
            num_cpus=0,
            max_concurrency=100,
        )
        .remote(settings.public_dict(), bus, elastic.EsConfig.from_settings(settings), index=index)
    )
    ray.get(handle.start.remote())
    return handle
