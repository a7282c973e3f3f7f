"""The ops sink: a Ray actor that consumes the ops topics, bulk-writes Elasticsearch and keeps
the run summaries in the management database current.

Sinks scale like routers. A sink has two **lanes**, each its own consumer group, so one
destination being away never holds up the other:

* ``elasticsearch`` (group ``fxray-ops-sink.<instance>``): run and log records into the daily
  indices (:mod:`fxray.ops.elastic`);
* ``database`` (group ``fxray-run-summaries.<instance>``): run lifecycle records into the runs
  table (:func:`fxray.ops.summary_row`), as rank-guarded upserts.

The database lane runs in a child actor of the sink (its own process and GIL; it lives and
dies with the sink). Each sink is a static member of both groups, named after its index, so a
sink that crashes and is started again under its index takes its partitions back at once. Per
lane, two tasks share the actor's event loop:

* **poll** appends records to the lane's buffer; it pauses the lane's partitions while its
  destination is away or the buffer is full, and keeps polling so the sink stays in the group;
* **write** takes up to a batch of records from the head of the buffer, writes them in one
  request (retrying with exponential back-off while the destination is unavailable), and only
  then commits their offsets: at-least-once, and the writes are idempotent (document ids and
  versions in Elasticsearch, ranks in the database), so nothing is lost or duplicated.

Routers and executors only produce to the bus, so a slow or absent Elasticsearch or database
never holds them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from elasticsearch import ApiError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential_jitter,
)

from fxray import ops
from fxray.bus import EventBus, Record, TopicPartition
from fxray.cluster.placement import platform_actor_options, resume_if_restarted
from fxray.events import cloudevent as ev
from fxray.ops import elastic
from fxray.settings import Settings
from fxray.store import StateStore, database_unavailable, describe_error

log = logging.getLogger("fxray.ops.sink")

BULK_MAX = 2000  # records per _bulk request (or database transaction)
MAX_BUFFER = 20_000  # records held before the sink pauses its partitions
POLL_MAX = 1000
GATHER_S = 0.05  # wait this long for a batch to fill before writing a small one
MAX_BACKOFF_S = 5.0
SKIP_REPORT_EVERY_S = 10.0
"""Records skipped for one reason are counted each, and reported at most this often."""


def sink_group(settings: Settings) -> str:
    return f"fxray-ops-sink.{settings.instance}"


def summaries_group(settings: Settings) -> str:
    return f"fxray-run-summaries.{settings.instance}"


_Batch = list[tuple[TopicPartition, int, "dict[str, Any] | None"]]


@dataclass(eq=False)
class _Lane:
    """One destination of the sink: a consumer group, its buffer and its write."""

    name: str
    group: str
    topics: list[str]
    member_id: str
    write: Callable[[list[dict[str, Any]]], Awaitable[None]]
    unavailable: Callable[[BaseException], bool]  # the destination is away: retry, don't skip
    consumer: Any = None
    buffer: _Batch = field(default_factory=list)
    has_data: asyncio.Event = field(default_factory=asyncio.Event)
    uncommitted: dict[TopicPartition, int] = field(default_factory=dict)
    down_since: float | None = None
    paused: bool = False
    counters: Counter[str] = field(default_factory=Counter)


class OpsSink:
    """One ops sink; runs as a Ray actor started by :func:`start_sink`.

    The sink runs the Elasticsearch lane; given a ``store``, it starts the database lane in a
    child actor of its own (``summaries=True``), so the two lanes don't share one process's
    GIL, and the child lives and dies with the sink. Without a ``store`` the database lane is
    off.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        bus: EventBus,
        es: elastic.EsConfig,
        *,
        index: int = 0,
        store: StateStore | None = None,
        summaries: bool = False,
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = Settings(**settings)
        self.bus = bus
        self.es = es
        self.store = store
        self.index = index
        self.sink_id = f"ops-sink-{index}"
        self.client = es.client()
        self.templates_ok = False
        self.running = False
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []
        self.skips_reported: dict[str, float] = {}  # reason -> when last reported (monotonic)
        self.summaries: Any = None  # the child actor with the database lane
        s = self.settings
        member = f"{s.instance}.{self.sink_id}"
        if summaries:
            lane = _Lane(
                "database",
                summaries_group(s),
                [s.ops_runs_topic],
                f"{member}.summaries",
                self._write_summaries,
                database_unavailable,
            )
        else:
            lane = _Lane(
                "elasticsearch",
                sink_group(s),
                [s.ops_runs_topic, s.ops_logs_topic],
                member,
                self._write_elasticsearch,
                lambda exc: isinstance(exc, elastic.Unavailable),
            )
        self.lane = lane
        # Ray restarts a sink whose node died (max_restarts): it rejoins its consumer group and
        # writes again what its former self had not committed (documents are written by id).
        self.restarted = summaries is False and resume_if_restarted()

    @property
    def counters(self) -> Counter[str]:
        """This actor's lane's counters."""
        return self.lane.counters

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> str:
        if self.running:
            return self.sink_id
        self.running = True
        if self.store is not None and self.lane.name == "elasticsearch":
            self.summaries = (
                ray.remote(OpsSink)
                .options(num_cpus=0, max_concurrency=100)
                .remote(
                    self.settings.public_dict(),
                    self.bus,
                    self.es,
                    index=self.index,
                    store=self.store,
                    summaries=True,
                )
            )
            await self.summaries.start.remote()
        await asyncio.to_thread(self._open_consumer)
        self.tasks = [
            asyncio.create_task(self._guard(self._poll_loop)),
            asyncio.create_task(self._guard(self._write_loop)),
        ]
        return self.sink_id

    def _open_consumer(self) -> None:
        s, lane = self.settings, self.lane
        for topic in (s.ops_runs_topic, s.ops_logs_topic):
            self.bus.ensure_topic(topic, s.bus_partitions)
        lane.consumer = self.bus.consumer(lane.group, lane.topics, member_id=lane.member_id)

    async def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Stop polling, write what is buffered (within ``timeout_s``), commit, leave."""
        self.running = False
        deadline = time.monotonic() + timeout_s
        poll, write = self.tasks or (None, None)
        if poll is not None:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
        if write is not None:
            self.lane.has_data.set()
            try:
                await asyncio.wait_for(write, timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception as exc:  # unwritten records are redelivered to the next sink
                self._note_error(f"stop: {type(exc).__name__}: {exc}")
        await self._commit()
        if self.lane.consumer is not None:
            await self.lane.consumer.close_async()
        if self.summaries is not None:
            await self.summaries.stop.remote(max(0.1, deadline - time.monotonic()))
        return dict(self.counters)

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        while self.running:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                name = getattr(loop, "__name__", "loop")
                log.exception("ops sink %s loop %s failed; restarting it", self.lane.name, name)
                self._note_error(f"{self.lane.name} {name}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    # poll ------------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        lane = self.lane
        while self.running:
            self._backpressure()
            records: list[Record] = await lane.consumer.poll_async(POLL_MAX, 0.1)
            if records:
                lane.counters["records_in"] += len(records)
                for r in records:  # a skipped record stays as None: its offset is committed
                    record, reason, detail = _decode(r.value)
                    if reason:
                        self._skipped(reason, f"{r.topic}:{r.partition}:{r.offset}: {detail}")
                    lane.buffer.append(((r.topic, r.partition), r.offset, record))
                lane.has_data.set()

    def _skipped(self, reason: str, detail: str) -> None:
        """Count a record skipped for ``reason``; report it (at most every
        :data:`SKIP_REPORT_EVERY_S` per reason)."""
        counters = self.lane.counters
        counters[reason] += 1
        now = time.monotonic()
        last = self.skips_reported.get(reason)
        if last is None or now - last >= SKIP_REPORT_EVERY_S:
            self.skips_reported[reason] = now
            self._note_error(
                f"{self.lane.name}: skipped a record ({reason}; {counters[reason]} so far): "
                f"{detail}"
            )

    def _backpressure(self) -> None:
        lane = self.lane
        """Pause while the destination is away or the buffer is full; keep polling meanwhile."""
        hold = lane.down_since is not None or len(lane.buffer) >= MAX_BUFFER
        assignment = lane.consumer.assignment()
        if hold:
            lane.consumer.pause(assignment)  # also partitions assigned since the last pause
            if not lane.paused:
                lane.paused = True
                lane.counters["pauses"] += 1
        elif lane.paused:
            lane.consumer.resume(assignment)
            lane.paused = False

    # write -----------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        lane = self.lane
        while self.running or lane.buffer:
            if not lane.buffer:
                lane.has_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.has_data.wait(), 0.5)
                continue
            if len(lane.buffer) < BULK_MAX and self.running:
                await asyncio.sleep(GATHER_S)
            batch = lane.buffer[:BULK_MAX]
            await self._write(batch)
            del lane.buffer[: len(batch)]
            for tp, offset, _ in batch:
                if offset + 1 > lane.uncommitted.get(tp, -1):
                    lane.uncommitted[tp] = offset + 1
            await self._commit()

    async def _write(self, batch: _Batch) -> None:
        await self._write_or_split([r for _, _, r in batch if r is not None])
        self.lane.counters["batches"] += 1

    async def _write_or_split(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` (waiting while the destination is away). Records it refuses in a
        way no retry helps are found by halving the batch; each is counted (``rejected``) and
        reported, and the loop goes on."""
        lane = self.lane
        try:
            await self._write_retrying(records)
            return
        except Exception as exc:
            if lane.unavailable(exc):
                raise  # stopping while the destination is away: redelivered to the next sink
            if len(records) > 1:
                lane.counters["batches_split"] += 1
                half = len(records) // 2
                await self._write_or_split(records[:half])
                await self._write_or_split(records[half:])
                return
            lane.counters["rejected"] += len(records)
            doc_id = str(records[0].get("doc_id"))[:80] if records else None
            self._note_error(f"{lane.name}: record {doc_id} refused: {describe_error(exc)}")

    async def _write_retrying(self, records: list[dict[str, Any]]) -> None:
        lane = self.lane

        def unavailable(state: RetryCallState) -> None:
            if lane.down_since is None:
                lane.down_since = time.monotonic()
            # what comes back may be a new, empty cluster: put the templates (idempotent) again
            self.templates_ok = False
            lane.counters["write_retries"] += 1
            exc = state.outcome.exception() if state.outcome else None
            self._note_error(f"{lane.name} unavailable (attempt {state.attempt_number}): {exc}")

        retrying = AsyncRetrying(
            retry=retry_if_exception(lane.unavailable),
            wait=wait_exponential_jitter(initial=0.2, max=MAX_BACKOFF_S),
            stop=self._stopping,
            before_sleep=unavailable,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await lane.write(records)
        if lane.down_since is not None:
            log.info("%s is back after %.1fs", lane.name, time.monotonic() - lane.down_since)
            lane.down_since = None

    async def _write_elasticsearch(self, records: list[dict[str, Any]]) -> None:
        if not self.templates_ok:
            try:
                await asyncio.to_thread(elastic.ensure_templates, self.client, self.es)
            except ApiError as exc:  # no record's fault: wait for an operator
                raise elastic.Unavailable(f"index templates refused: {exc}") from exc
            self.templates_ok = True
        outcome = await asyncio.to_thread(elastic.write, self.client, self.es, records)
        counters = self.lane.counters
        counters["written"] += outcome.written
        counters["stale"] += outcome.stale
        if outcome.rejected:
            counters["rejected"] += len(outcome.rejected)
            self._note_error(f"{len(outcome.rejected)} records rejected: {outcome.rejected[:3]}")
        for problem in outcome.malformed:
            self._skipped("malformed", problem)

    async def _write_summaries(self, records: list[dict[str, Any]]) -> None:
        """Upsert the newest summary of each run in ``records`` (rank-guarded)."""
        newest: dict[str, dict[str, Any]] = {}
        for record in records:
            if record.get("kind") != ops.RUN:
                continue
            try:
                row = ops.summary_row(record)
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
                self._skipped("malformed", f"{record.get('doc_id')!r:.80}: {exc!r:.200}")
                continue
            if row is not None and row["rank"] >= newest.get(row["id"], row)["rank"]:
                newest[row["id"]] = row
        if newest:
            await asyncio.to_thread(self._upsert_summaries, list(newest.values()))

    def _upsert_summaries(self, rows: list[dict[str, Any]]) -> None:
        assert self.store is not None
        counters = self.lane.counters
        try:
            self.store.upsert_runs(rows, ranked=True)
            counters["written"] += len(rows)
            return
        except Exception as exc:  # (a driver may refuse a value before the database sees it)
            if database_unavailable(exc):
                raise  # the database is away: the lane retries
            self._note_error(f"run summaries: batch refused ({describe_error(exc)}); one by one")
        for row in rows:
            try:
                self.store.upsert_runs([row], ranked=True)
                counters["written"] += 1
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                counters["rejected"] += 1
                self._note_error(
                    f"run summary of {str(row['id'])[:80]} refused: {describe_error(exc)}"
                )

    def _stopping(self, state: RetryCallState) -> bool:
        return not self.running

    async def _commit(self) -> None:
        lane = self.lane
        offsets, lane.uncommitted = lane.uncommitted, {}
        if not offsets or lane.consumer is None:
            return
        try:
            await lane.consumer.commit_async(offsets)
            lane.counters["commits"] += 1
        except Exception as exc:  # tried again with the next batch; else redelivered (harmless)
            lane.counters["commit_failures"] += 1
            self._note_error(f"{lane.name} commit: {type(exc).__name__}: {exc}")
            for tp, offset in offsets.items():
                lane.uncommitted[tp] = max(offset, lane.uncommitted.get(tp, 0))

    # operator calls --------------------------------------------------------------------------

    def _note_error(self, text: str) -> None:
        log.warning("%s", text)
        self.errors.append(text)
        del self.errors[:-50]

    async def stats(self) -> dict[str, Any]:
        """This lane's figures at the top level (``buffered``, ``paused``, ``es_down_s``,
        ``assignment``, ``counters``); every lane's, the child's too, under ``lanes``."""
        own = _lane_stats(self.lane)
        lanes = {self.lane.name: own}
        errors = list(self.errors[-10:])
        if self.summaries is not None:
            child = await self.summaries.stats.remote()
            lanes.update(child["lanes"])
            errors += child["errors"]
        return {
            "sink": self.sink_id,
            **own,
            "es_down_s": own["down_s"] if self.lane.name == "elasticsearch" else None,
            "lanes": lanes,
            "errors": errors,
        }

    def ping(self) -> str:
        return self.sink_id


def _lane_stats(lane: _Lane) -> dict[str, Any]:
    return {
        "buffered": len(lane.buffer),
        "paused": lane.paused,
        "down_s": None if lane.down_since is None else time.monotonic() - lane.down_since,
        "assignment": sorted(lane.consumer.assignment()) if lane.consumer else [],
        "counters": dict(lane.counters),
    }


OPS_RECORD_MAX_DEPTH = 600
"""Ops records carry results up to ``max_event_depth`` (at most 500) levels deep, a few
levels down; deeper is not a record of ours."""


def _decode(value: bytes | None) -> tuple[dict[str, Any] | None, str, str]:
    """(the ops record in ``value``, "", "") or (None, why it is skipped: ``undecodable``,
    ``unknown_kind`` or ``malformed``, and how)."""
    if not isinstance(value, bytes | bytearray):  # a tombstone (no value)
        return None, "undecodable", "a record without a value"
    try:
        record = ev.loads(value, OPS_RECORD_MAX_DEPTH, "ops record")
    except ev.InvalidEvent as exc:  # not JSON, or nested too deeply: not a record of ours
        return None, "undecodable", str(exc)[:200]
    problem = ops.record_problem(record)
    if problem is None:
        return record, "", ""
    if problem.startswith("unknown kind") or not isinstance(record, dict):
        reason = "unknown_kind" if isinstance(record, dict) else "undecodable"
        return None, reason, problem
    return None, "malformed", problem


def start_sink(
    settings: Settings, bus: EventBus, index: int, store: StateStore | None = None
) -> Any:
    """Start ops sink ``index`` as a Ray actor (keeping run summaries in ``store`` if given);
    returns its handle once it consumes."""
    handle = (
        ray.remote(OpsSink)
        .options(
            name=f"fxray-ops-sink.{settings.instance}.{index}.{uuid.uuid4().hex[:6]}",
            **platform_actor_options(settings),
            max_concurrency=100,
        )
        .remote(
            settings.public_dict(),
            bus,
            elastic.EsConfig.from_settings(settings),
            index=index,
            store=store,
        )
    )
    ray.get(handle.start.remote())
    return handle
