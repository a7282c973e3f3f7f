"""The router actor: consume events, match triggers, queue runs by priority, dispatch, record.

One asyncio event loop runs these tasks:

* **consume** polls the bus in batches, decodes CloudEvents (bad records go to the dead-letter
  topic), matches triggers, records the pending runs, and queues them. When the queue holds
  ``router_max_in_flight`` runs it waits for room; if none comes within
  ``router_pause_after_s`` it pauses its partitions (and keeps polling, so it stays in its
  consumer group) until the backlog drains.
* **dispatch** takes runs in priority order for versions with a free executor and sends them in
  batches, sized from each version's measured run time so that a batch takes ~20 ms.
* **commit** commits, per partition, up to the lowest offset whose runs are not all finished
  and recorded (at-least-once).
* **refresh** reloads triggers, services and versions when their revision changes (late
  linking), and **reap** retires idle executors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from fxray import ops
from fxray.actors.envs import EnvBuildError
from fxray.actors.executor import BatchOutcome, tune_gc
from fxray.actors.pool import ExecutorCrashed, ExecutorPools, VersionPool
from fxray.bus import EventBus, OutgoingRecord, Record, TopicPartition
from fxray.events import cloudevent as ev
from fxray.kv import KVStore
from fxray.ops.metrics import RunMetrics
from fxray.packages import PackageStore
from fxray.router.offsets import OffsetTracker
from fxray.router.queue import DelayQueue, RunQueue
from fxray.router.records import OpsRunRecords, RunRecords
from fxray.router.triggers import Match, TriggerTable
from fxray.router.writer import RecordWriter
from fxray.runtime.runs import RunResult, RunSpec, RunStatus
from fxray.settings import Settings
from fxray.store import StateStore, TriggerRecord, VersionRecord

log = logging.getLogger("fxray.router")

RUN_NAMESPACE = uuid.UUID("5b0c1d2e-8f3a-4c6b-9d7e-0a1b2c3d4e5f")
TARGET_BATCH_S = 0.02
GIL_SWITCH_INTERVAL_S = 0.0005
RUNNING_RECORD_AFTER_S = 0.25
MANUAL_TRIGGER = "manual"
SCHEDULE_TRIGGER = "schedule"


_RUN_NAMESPACE_BYTES = RUN_NAMESPACE.bytes


def run_id_for(event_id: str, trigger_id: str) -> str:
    """Runs are named by (event, trigger), so a redelivered event maps to the same run.

    ``str(uuid.uuid5(RUN_NAMESPACE, f"{event_id}\\x00{trigger_id}"))``, computed without the
    ``UUID`` object (less than half the time; this runs for every routed event).
    """
    name = f"{event_id}\x00{trigger_id}".encode()
    digest = bytearray(hashlib.sha1(_RUN_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class _Run:
    spec: RunSpec
    tp: TopicPartition | None
    offset: int
    max_retries: int
    backoff_s: float
    isolate: bool = False
    dispatched: bool = False
    cancel_requested: bool = False
    order_key: tuple[str, str] | None = None  # (trigger, partition key) of an ordered trigger
    logs: list[Any] = field(default_factory=list)
    queued_at: float = field(default_factory=time.time)  # created, or its retry due


class Router:
    """The router; each runs as a Ray actor started by :meth:`fxray.Platform.add_router`."""

    def __init__(
        self,
        settings: dict[str, Any],
        bus: EventBus,
        store: StateStore,
        kv: KVStore,
        package_store: PackageStore,
        *,
        router_id: str = "router-0",
        run_scheduler: bool = True,
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = Settings(**settings)
        self.bus = bus
        self.store = store
        self.router_id = router_id
        self.run_scheduler = run_scheduler
        self.pools = ExecutorPools(
            package_store=package_store,
            kv=kv,
            cache_dir=self.settings.home / "cache" / "packages",
            envs_dir=self.settings.envs_dir,
            executor_cpus=self.settings.executor_cpus,
            max_per_version=self.settings.executors_max_per_version,
            min_per_version=self.settings.executors_min_per_version,
            max_total=self.settings.executors_max_total,
            idle_s=self.settings.executor_idle_s,
            env_backend=self.settings.env_backend,
            pip_index_url=self.settings.pip_index_url,
            ops=ops.OpsConfig.from_settings(self.settings, bus),
        )
        self.queue: RunQueue[_Run] = RunQueue()
        self.delayed: DelayQueue[_Run] = DelayQueue()
        self.runs: dict[str, _Run] = {}
        self.ordered: dict[tuple[str, str], deque[_Run]] = {}  # per key: head runs, rest wait
        self.assigned: set[TopicPartition] = set()
        self.tracker = OffsetTracker()
        self.table = TriggerTable(store.routing_snapshot())
        self.writer = RecordWriter(store)
        self.avg_run_s: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self.wakeup = asyncio.Event()
        self.room_freed = asyncio.Event()  # set when runs end, for a router waiting for room
        self.tasks: list[asyncio.Task[None]] = []
        self.batch_tasks: set[asyncio.Task[None]] = set()
        self.consumer: Any = None
        self._next_poll: asyncio.Future[list[Record]] | None = None
        self.paused = False
        self.running = False
        self.errors: list[str] = []
        self.metrics = RunMetrics(router_id)
        ops_config = self.pools.ops  # on if the ops sink is
        self.records: RunRecords = (
            RunRecords(self.writer)
            if ops_config is None
            else OpsRunRecords(
                self.writer, bus, ops_config, self.counters, self._note_error, self._spawn
            )
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> str:
        if self.running:
            return self.router_id
        self.running = True
        tune_gc()
        # The consumer, the record writer and Ray's own threads hand work to the event loop;
        # with CPython's default 5 ms switch interval each hand-off can wait up to 5 ms for
        # the GIL while another thread computes. 0.5 ms keeps those waits short.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        await asyncio.to_thread(self._open_consumer)
        loops = [self._consume_loop, self._dispatch_loop, self._commit_loop, self._refresh_loop]
        loops.append(self._reap_loop)
        if self.run_scheduler:
            loops.append(self._schedule_loop)
        self.tasks = [asyncio.create_task(self._guard(loop)) for loop in loops]
        return self.router_id

    def _open_consumer(self) -> None:
        self.bus.ensure_topic(self.settings.events_topic, self.settings.bus_partitions)
        self.bus.ensure_topic(self.settings.deadletter_topic, 1)
        member = (
            f"{self.settings.instance}.{self.router_id}"
            if self.settings.router_static_membership
            else None
        )
        self.consumer = self.bus.consumer(
            self.settings.router_group, [self.settings.events_topic], member_id=member
        )

    async def stop(self) -> dict[str, int]:
        """Stop consuming, let dispatched runs finish briefly, commit, and leave the group."""
        self.running = False
        self.wakeup.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._commit()
        if self.consumer is not None:
            await self.consumer.close_async()
        self.pools.shutdown()
        self.writer.close()
        return dict(self.counters)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.batch_tasks.add(task)
        task.add_done_callback(self.batch_tasks.discard)

    async def _guard(self, loop: Any) -> None:
        while self.running:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep routing; report what broke
                log.exception("router loop %s failed; restarting it", loop.__name__)
                self._note_error(f"{loop.__name__}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    # -- consume ------------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        while self.running:
            if self._next_poll is None:
                if self._room() <= 0 and not self.paused:
                    await self._wait_for_room(self.settings.router_pause_after_s)
                self._apply_backpressure()
                self._next_poll = self._poll(max(1, self._room()))
            records = await self._next_poll
            self._next_poll = None
            await self._note_assignment()
            if not records:
                continue
            # Fetch the next batch while this one is routed (the poll waits in librdkafka, off
            # the GIL): a record that arrives meanwhile is not held up by the routing. A fetch
            # outlives a restart of this loop, so no polled record is dropped; at stop() its
            # records are left untracked, so uncommitted, and come again to the next owner.
            room = self._room() - len(records)
            if room > 0:
                self._next_poll = self._poll(room)
            await self._route(records)

    def _room(self) -> int:
        return self.settings.router_max_in_flight - len(self.runs)

    async def _wait_for_room(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for runs to end, without polling.

        A full router that runs short runs has room again within milliseconds. Pausing for that
        would cost more than it saves: a pause drops what the consumer has prefetched, and after
        a resume librdkafka's fetcher wakes up to ~1 s later (its idle wait, which no setting
        shortens). So only a router that stays full this long pauses its partitions; not polling
        meanwhile is safe, as it is far below ``max.poll.interval.ms``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.running and self._room() <= 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.room_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room_freed.wait(), remaining)

    def _poll(self, room: int) -> asyncio.Future[list[Record]]:
        limit = min(self.settings.router_poll_max, room)
        return asyncio.ensure_future(self.consumer.poll_async(limit, 0.1))

    async def _note_assignment(self) -> None:
        """Track rebalances: forget revoked partitions (their runs still finish), and keep
        newly assigned ones paused while the router is full."""
        assigned = set(self.consumer.assignment())
        revoked = self.assigned - assigned
        if revoked:
            self.tracker.forget(sorted(revoked))
            self.counters["partitions_revoked"] += len(revoked)
        added = assigned - self.assigned
        if added and self.paused:
            self.consumer.pause(sorted(added))
        self.assigned = assigned

    def _apply_backpressure(self) -> None:
        full = len(self.runs) >= self.settings.router_max_in_flight
        if full and not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
            self.counters["backpressure_pauses"] += 1
        elif not full and self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    async def _route(self, records: list[Record]) -> None:
        events: list[dict[str, Any]] = []
        new_runs: list[_Run] = []
        dead: list[OutgoingRecord] = []
        per_record: list[tuple[Record, list[_Run]]] = []
        for record in records:
            try:
                event = ev.from_record(record.value, record.headers, self.settings.max_event_bytes)
            except ev.InvalidEvent as exc:
                dead.append(_dead_letter(record, str(exc)))
                per_record.append((record, []))
                continue
            events.append(event)
            runs = self._runs_for(event, record)
            per_record.append((record, runs))
            new_runs.extend(runs)
        self.counters["events"] += len(events)
        self.metrics.observe_events(len(events))
        if dead:
            self.counters["dead_lettered"] += len(dead)
            self.metrics.observe_dead_letters("bad_record", len(dead))
            await self.bus.produce_async(self.settings.deadletter_topic, dead)
        # mapped events are on the bus before these records' offsets can be committed
        mapped = self._mapped_events(events)
        if mapped:
            self.counters["mapped"] += len(mapped)
            await self.bus.produce_async(self.settings.events_topic, mapped)
        # a redelivered record, or the same event published twice: runs that already finished
        # are not run again (one indexed lookup per poll)
        finished = await self._already_finished([r.spec.run_id for r in new_runs])
        live: list[_Run] = []
        taken = set(finished)  # an event twice in one poll (a client's retry): its runs once
        for record, runs in per_record:
            tp = (record.topic, record.partition)
            fresh = []
            for run in runs:
                if run.spec.run_id not in taken and run.spec.run_id not in self.runs:
                    taken.add(run.spec.run_id)
                    fresh.append(run)
            self.tracker.track(tp, record.offset, len(fresh))
            live.extend(fresh)
        self.counters["duplicates_skipped"] += len(new_runs) - len(live)
        # The writer keeps order, so these rows are durable before any later update of the
        # same runs, and offsets are committed only after those updates: no need to wait here.
        self.writer.submit("events", events)
        self.records.created([r.spec for r in live])
        for run in live:
            self.runs[run.spec.run_id] = run
            self._enqueue(run)
        if live:
            self._dispatch()  # now, not on the dispatch loop's next turn: latency

    def _mapped_events(self, events: list[dict[str, Any]]) -> list[OutgoingRecord]:
        """The events the active mapping rules make of ``events`` (none of shadow events).

        The rules are indexed by source type once per routing snapshot.
        """
        from fxray.events.mappings import FieldMap, MappingRule, mapped_event

        snapshot = self.table.snapshot
        cached = getattr(self, "_mapping_index", None)
        if cached is None or cached[0] is not snapshot:
            index: dict[str, list[MappingRule]] = {}
            for m in getattr(snapshot, "mappings", ()):
                try:
                    rule = MappingRule(
                        id=m.id,
                        source_type=m.source_type,
                        target_type=m.target_type,
                        fields=[FieldMap.model_validate(f) for f in m.fields],
                        map_all=m.map_all,
                    )
                except ValueError as exc:
                    self._note_error(f"mapping {m.id} is invalid, skipped: {exc}")
                    continue
                index.setdefault(rule.source_type, []).append(rule)
            cached = self._mapping_index = (snapshot, index)
        index = cached[1]
        if not index:
            return []
        mode = self.settings.event_output_mode
        out = []
        for event in events:
            rules = index.get(event["type"])
            if not rules or event.get(ev.SHADOW):
                continue
            for rule in rules:
                try:
                    out.append(_outgoing(mapped_event(rule, event), mode))
                except (ValueError, TypeError) as exc:  # InvalidEvent is a ValueError
                    self.counters["mapping_errors"] += 1
                    self._note_error(f"mapping {rule.id} of event {event['id']}: {exc}")
        return out

    def _enqueue(self, run: _Run) -> None:
        """Queue a new run; a run of an ordered trigger waits behind its key's earlier runs."""
        if run.order_key is not None:
            line = self.ordered.setdefault(run.order_key, deque())
            line.append(run)
            if len(line) > 1:
                return
        self.queue.push(run.spec.run_id, run.spec.priority, run, run.spec.version_id)

    def _release_next(self, run: _Run) -> None:
        """After a final run of an ordered key, queue the key's next run."""
        if run.order_key is None:
            return
        line = self.ordered.get(run.order_key)
        if not line:
            return
        was_head = line[0] is run
        if run in line:
            line.remove(run)
        if line and was_head:
            head = line[0]
            self.queue.push(head.spec.run_id, head.spec.priority, head, head.spec.version_id)
        elif not line:
            del self.ordered[run.order_key]

    async def _already_finished(self, run_ids: list[str]) -> set[str]:
        if not run_ids:
            return set()
        if len(run_ids) <= 64 and self.store.engine.dialect.name == "sqlite":
            # a few indexed lookups in a local file take less than a hop to a thread
            return self.store.finished_run_ids(run_ids)
        return await asyncio.to_thread(self.store.finished_run_ids, run_ids)

    def _runs_for(self, event: dict[str, Any], record: Record) -> list[_Run]:
        if event.get(ev.SHADOW):
            return []  # events from shadow runs are recorded, never routed onward
        targeted = event["type"] in ev.PLATFORM_TYPES or bool(event.get(ev.REPLAY_OF))
        matches = self._target_matches(event) if targeted else None
        if matches is None:
            matches = [(m, None) for m in self.table.match(event)]
        runs = []
        for match, priority in matches:
            version = self.table.snapshot.versions[match.version_id]
            run = self._new_run(event, record, match.trigger.id, version, priority)
            if match.trigger.ordered:
                key = record.key.decode("utf-8", "replace") if record.key else ""
                run.order_key = (match.trigger.id, key or f"partition-{record.partition}")
            runs.append(run)
            shadow = match.trigger.shadow_version
            if shadow and shadow in self.table.snapshot.versions and shadow != match.version_id:
                shadow_version = self.table.snapshot.versions[shadow]
                run = self._new_run(
                    event, record, f"{match.trigger.id}:shadow", shadow_version, priority
                )
                run.spec.shadow = True
                runs.append(run)
        return runs

    def _target_matches(self, event: dict[str, Any]) -> list[tuple[Match, int | None]] | None:
        """Manual runs, cron ticks and replays name their service (and maybe version)
        directly; a replay (``fxreplayof``) runs that service only, whatever its type."""
        service_name = event.get(ev.TARGET)
        if not service_name:
            return None
        snapshot = self.table.snapshot
        service = snapshot.services.get(service_name)
        if service is None or not service.active:
            self.counters["target_skipped"] += 1
            return []
        version_id = event.get(ev.VERSION) or snapshot.latest.get(service_name)
        version = snapshot.versions.get(version_id)
        if version is None or version.service != service_name:
            self.counters["target_skipped"] += 1
            return []
        if event.get(ev.REPLAY_OF):
            trigger_id = ev.REPLAY_TRIGGER
        elif event["type"] == ev.MANUAL_RUN:
            trigger_id = MANUAL_TRIGGER
        else:
            trigger_id = SCHEDULE_TRIGGER
        pseudo = TriggerRecord(
            trigger_id, event["type"], service_name, {}, {}, None, False, True, 0, 0
        )
        raw = str(event.get(ev.PRIORITY) or "")
        priority = int(raw) if raw.isdigit() and 1 <= int(raw) <= 10 else None
        return [(Match(pseudo, version_id), priority)]

    def _new_run(
        self,
        event: dict[str, Any],
        record: Record,
        trigger_id: str,
        version: VersionRecord,
        priority: int | None,
    ) -> _Run:
        manifest = version.manifest
        service = self.table.snapshot.services[version.service]
        retries = manifest.get("retries") or {}
        spec = RunSpec(
            run_id=run_id_for(event["id"], trigger_id),
            service=version.service,
            version_id=version.id,
            package_hash=version.content_hash,
            steps=version.steps,
            event=event,
            correlation_id=ev.correlation_id(event),
            trigger_id=trigger_id,
            priority=priority or service.priority,
            timeout_s=float(manifest.get("timeout_s") or self.settings.default_timeout_s),
            created_at=time.time(),
        )
        return _Run(
            spec,
            (record.topic, record.partition),
            record.offset,
            int(retries.get("max", 0)),
            float(retries.get("backoff_s", 1.0)),
        )

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while self.running:
            due = self.delayed.next_due()
            timeout = 0.5 if due is None else max(0.0, min(0.5, due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            self.wakeup.clear()
            for run in self.delayed.pop_due(time.time()):
                if run.spec.run_id in self.runs:
                    self.queue.push(run.spec.run_id, run.spec.priority, run, run.spec.version_id)
            self._dispatch()

    def _dispatch(self) -> None:
        """Send queued runs to free executors: best runs first, one batch per free actor."""
        for version_id in self.queue.groups_by_priority():
            pool = self._pool(version_id)
            free = pool.free_capacity()
            if free <= 0:
                continue
            per_batch = self._batch_size(version_id)
            runs = self.queue.pop_group(version_id, free * per_batch)
            for batch in self._batches(runs, free, per_batch):
                for run in batch:
                    run.dispatched = True
                pool.reserved += 1
                self.counters["batches"] += 1
                self._spawn(self._run_batch(pool, batch))

    def _pool(self, version_id: str) -> VersionPool:
        version = self.table.snapshot.versions[version_id]
        service = self.table.snapshot.services.get(version.service)
        limit = service.max_concurrency if service else None
        return self.pools.pool(version, limit)

    def _batch_size(self, version_id: str) -> int:
        """Runs per executor call: enough to fill ~20 ms, from the version's mean run time."""
        avg = self.avg_run_s.get(version_id)
        if avg is None:
            return 1
        return max(1, min(self.settings.executor_batch_size, int(TARGET_BATCH_S / max(avg, 1e-6))))

    @staticmethod
    def _batches(runs: list[_Run], free: int, per_batch: int) -> list[list[_Run]]:
        """Spread runs over up to ``free`` batches; a run being isolated goes alone."""
        isolated = [[r] for r in runs if r.isolate]
        rest = [r for r in runs if not r.isolate]
        slots = max(1, free - len(isolated))
        size = max(1, min(per_batch, math.ceil(len(rest) / slots))) if rest else 1
        return isolated + [rest[i : i + size] for i in range(0, len(rest), size)]

    async def _run_batch(self, pool: VersionPool, batch: list[_Run]) -> None:
        started = time.time()
        running_record: asyncio.TimerHandle | None = None
        if len(batch) == 1:
            # A "running" record is written only for a run still going after a moment: for the
            # many runs of a few ms it would be stale before anyone could read it, and writing
            # it costs the database (and the router's GIL) a statement per run. Batches of
            # several runs only form for runs of a few ms, so they never get one.
            running_record = asyncio.get_running_loop().call_later(
                RUNNING_RECORD_AFTER_S, self._record_running, batch[0], started
            )
        specs = [r.spec for r in batch]
        try:
            try:
                outcome: BatchOutcome = await pool.run_batch(specs)
            finally:  # before any result is recorded: the writer keeps order
                if running_record is not None:
                    running_record.cancel()
        except ExecutorCrashed as exc:
            if len(batch) == 1:
                now = time.time()
                await self._complete(
                    batch[0],
                    RunResult(batch[0].spec.run_id, RunStatus.FAILED, started, now, error=str(exc)),
                )
            else:  # find the culprit: run each again on its own
                self.counters["crash_isolations"] += 1
                for run in batch:
                    self._requeue(run, isolate=True)
            return
        except EnvBuildError as exc:
            now = time.time()
            for run in batch:
                await self._complete(
                    run,
                    RunResult(
                        run.spec.run_id, RunStatus.FAILED, started, now, error=f"environment: {exc}"
                    ),
                )
            return
        except Exception as exc:
            log.exception("executor call failed")
            now = time.time()
            for run in batch:
                await self._complete(
                    run,
                    RunResult(
                        run.spec.run_id,
                        RunStatus.FAILED,
                        started,
                        now,
                        error=f"executor error: {type(exc).__name__}: {exc}",
                    ),
                )
            return
        self._dispatch()  # the executor is free again: refill it before recording
        by_id = {r.spec.run_id: r for r in batch}
        durations = [r.finished_at - r.started_at for r in outcome.results]
        if durations:
            mean = sum(durations) / len(durations)
            prev = self.avg_run_s.get(pool.version.id)
            self.avg_run_s[pool.version.id] = mean if prev is None else 0.7 * prev + 0.3 * mean
        await self._complete_many([(by_id[r.run_id], r) for r in outcome.results])
        for run_id in outcome.unstarted:
            self._requeue(by_id[run_id])
        self.wakeup.set()

    def _record_running(self, run: _Run, started: float) -> None:
        if run.spec.run_id in self.runs:
            self.records.running(run.spec, started)

    def _requeue(self, run: _Run, isolate: bool = False) -> None:
        run.dispatched = False
        run.isolate = run.isolate or isolate
        self.queue.push(run.spec.run_id, run.spec.priority, run, run.spec.version_id)
        self.wakeup.set()

    # -- completion ---------------------------------------------------------------------------

    async def _complete(self, run: _Run, result: RunResult) -> None:
        """Complete a run with a result the router made itself (no executor reported it)."""
        await self.records.ended_in_router(run.spec, result)
        await self._complete_many([(run, result)])

    async def _complete_many(self, done: list[tuple[_Run, RunResult]]) -> None:
        finals: list[tuple[_Run, RunResult]] = []
        self.metrics.observe_queue_waits(
            (run.spec, result.started_at - run.queued_at) for run, result in done if run.dispatched
        )
        for run, result in done:
            run.logs.extend(result.logs)
            retry = (
                result.status in (RunStatus.FAILED, RunStatus.TIMED_OUT)
                and not run.cancel_requested
                and run.spec.attempt <= run.max_retries
            )
            if retry:
                delay = run.backoff_s * (2 ** (run.spec.attempt - 1))
                note = f"attempt {run.spec.attempt} {result.status.value}: {result.error}"
                run.logs.append([time.time(), "WARNING", "", f"{note}; retrying in {delay:g}s"])
                run.spec.attempt += 1
                self.records.retrying(run.spec, result.error, run.logs)
                run.dispatched = False
                run.isolate = False
                run.queued_at = time.time() + delay
                self.delayed.push(run.queued_at, run)
                self.counters["retries"] += 1
            else:
                finals.append((run, result))
        emitted = [e for run, result in finals for e in result.emitted]
        if emitted:
            records = [_outgoing(e, self.settings.event_output_mode) for e in emitted]
            await self.bus.produce_async(self.settings.events_topic, records)
            self.counters["emitted"] += len(emitted)
        failed = [
            _failed_run_letter(run, result)
            for run, result in finals
            if result.status in (RunStatus.FAILED, RunStatus.TIMED_OUT) and not run.spec.shadow
        ]
        if failed and self.settings.deadletter_failed_runs:
            await self.bus.produce_async(self.settings.deadletter_topic, failed)
            self.counters["runs_dead_lettered"] += len(failed)
            self.metrics.observe_dead_letters("failed_run", len(failed))
        await self.records.finished([(run.spec, result, run.logs) for run, result in finals])
        self.metrics.observe_finished((run.spec, result, run.dispatched) for run, result in finals)
        for run, result in finals:
            self.runs.pop(run.spec.run_id, None)
            if run.tp is not None:
                self.tracker.done(run.tp, run.offset)
            self._release_next(run)
            self.counters[f"runs_{result.status.value}"] += 1
        if finals:
            self.room_freed.set()
        if self.delayed:
            self.wakeup.set()

    # -- commit, refresh, reap, schedule ------------------------------------------------------

    async def _commit_loop(self) -> None:
        ticks = 0
        while self.running:
            await asyncio.sleep(0.2)
            ticks += 1
            self.metrics.set_in_flight(len(self.runs))
            if ticks % 5 == 0:
                self.metrics.set_executors(
                    {
                        (p.version.service, p.version.id): p.stats().actors
                        for p in self.pools.pools.values()
                    }
                )
            if ticks % 25 == 0:  # every 5 s, commit again what may have been dropped
                self.tracker.recommit()
            await self._commit()

    async def _commit(self) -> None:
        """Commit what is done; a failed commit is retried on the next tick (the offsets only
        advance), and if it never lands the events are redelivered and recognised as done."""
        offsets = self.tracker.committable()
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit_async(offsets)
        except Exception as exc:
            self.counters["commit_failures"] += 1
            self._note_error(f"commit: {exc}")
            return
        self.tracker.mark_committed(offsets)

    def _note_error(self, text: str) -> None:
        log.warning("%s", text)
        self.errors.append(text)
        del self.errors[:-50]

    async def _refresh_loop(self) -> None:
        while self.running:
            await asyncio.sleep(self.settings.trigger_refresh_s)
            await self.refresh()

    async def refresh(self) -> int:
        """Reload routing state if it changed; returns the revision in force."""
        revision = await asyncio.to_thread(self.store.revision)
        if revision != self.table.revision:
            snapshot = await asyncio.to_thread(self.store.routing_snapshot)
            self.table = TriggerTable(snapshot)
        return self.table.revision

    async def _reap_loop(self) -> None:
        while self.running:
            await asyncio.sleep(min(5.0, self.settings.executor_idle_s / 2))
            self.counters["executors_reaped"] += self.pools.reap()

    async def _schedule_loop(self) -> None:
        """Every 0.5 s, claim the due schedule ticks in the database and publish them.

        The claim is a conditional UPDATE, so with several platform processes on one database
        each tick goes to one of them. Ticks of inactive services are consumed without firing;
        ticks claimed but not yet taken by the bus are kept and sent again on the next turn.
        """
        from fxray.events.schedules import tick_event

        unsent: list[dict[str, Any]] = []
        while self.running:
            try:
                claimed = await asyncio.to_thread(self.store.claim_due_ticks, time.time())
                services = self.table.snapshot.services
                for schedule, fire_at in claimed:
                    service = services.get(schedule.service)
                    if service is not None and not service.active:
                        self.counters["schedule_ticks_skipped"] += 1
                        continue
                    unsent.append(
                        tick_event(
                            schedule.service,
                            fire_at,
                            schedule_id=schedule.id,
                            params=schedule.params,
                        )
                    )
                if unsent:
                    mode = self.settings.event_output_mode
                    await self.bus.produce_async(
                        self.settings.events_topic, [_outgoing(t, mode) for t in unsent]
                    )
                    self.counters["schedule_ticks"] += len(unsent)
                    unsent = []
            except Exception as exc:  # the database or the bus is away: try again shortly
                self._note_error(f"schedules: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)

    # -- operator calls -----------------------------------------------------------------------

    async def cancel(self, run_id: str) -> str:
        """Cancel a queued, waiting or running run; returns what happened."""
        run = self.runs.get(run_id)
        if run is None:
            return "not_active"
        run.cancel_requested = True
        line = self.ordered.get(run.order_key) if run.order_key is not None else None
        waiting = bool(line) and line[0] is not run and run in line
        queued = (
            self.queue.remove(run_id)
            or (self.delayed.remove(lambda r: r.spec.run_id == run_id) or [None])[0]
            or (run if waiting else None)
        )
        if queued is not None and not run.dispatched:
            now = time.time()
            await self._complete(
                run,
                RunResult(run_id, RunStatus.CANCELLED, now, now, error="cancelled while queued"),
            )
            return "cancelled"
        pool = self.pools.pools.get(run.spec.version_id)
        answers = await pool.cancel(run_id) if pool is not None else []
        log.info("cancel %s: executors answered %s", run_id, answers)
        return "cancelling"

    async def set_priority(self, run_id: str, priority: int) -> bool:
        """Re-prioritise a queued run (1 highest .. 10 lowest)."""
        if not 1 <= priority <= 10:
            raise ValueError("priority must be between 1 and 10")
        run = self.runs.get(run_id)
        if run is None or not self.queue.reprioritise(run_id, priority):
            return False
        run.spec.priority = priority
        await self.records.reprioritised(run.spec)
        self.wakeup.set()
        return True

    def queued(self) -> list[dict[str, Any]]:
        return [
            {"run_id": r.spec.run_id, "service": r.spec.service, "priority": r.spec.priority}
            for r in self.queue
        ]

    def stats(self) -> dict[str, Any]:
        return {
            "router": self.router_id,
            "revision": self.table.revision,
            "active_runs": len(self.runs),
            "queued": len(self.queue),
            "waiting_retry": len(self.delayed),
            "paused": self.paused,
            "counters": dict(self.counters),
            "executors": [
                s.__dict__ if hasattr(s, "__dict__") else _slots(s) for s in self.pools.stats()
            ],
            "errors": list(self.errors[-10:]),
        }

    def run_metrics(self) -> dict[str, Any]:
        """What this router recorded as metrics (see :class:`fxray.ops.metrics.RunMetrics`)."""
        return self.metrics.snapshot()

    def ping(self) -> str:
        return self.router_id


def _slots(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _outgoing(event: dict[str, Any], mode: str) -> OutgoingRecord:
    value, headers = ev.to_record(event, mode)
    return OutgoingRecord(value, key=_key(event), headers=headers)


def _key(event: dict[str, Any]) -> bytes | None:
    key = event.get("partitionkey")
    return str(key).encode() if key else None


def _failed_run_letter(run: _Run, result: RunResult) -> OutgoingRecord:
    """The triggering event of a run that failed for good, with why, for the dead-letter topic."""
    spec = run.spec
    headers = [
        ("content-type", b"application/cloudevents+json"),
        ("fxray_dlq_reason", f"run {result.status.value}: {result.error}".encode()),
        ("fxray_dlq_run_id", spec.run_id.encode()),
        ("fxray_dlq_service", spec.service.encode()),
        ("fxray_dlq_version", spec.version_id.encode()),
        ("fxray_dlq_attempts", str(spec.attempt).encode()),
        ("fxray_dlq_time", str(time.time()).encode()),
    ]
    if run.tp is not None:
        headers += [
            ("fxray_dlq_topic", run.tp[0].encode()),
            ("fxray_dlq_partition", str(run.tp[1]).encode()),
            ("fxray_dlq_offset", str(run.offset).encode()),
        ]
    return OutgoingRecord(ev.to_json(spec.event), key=_key(spec.event), headers=headers)


def _dead_letter(record: Record, reason: str) -> OutgoingRecord:
    headers = [
        *record.headers,
        ("fxray_dlq_reason", reason.encode()),
        ("fxray_dlq_topic", record.topic.encode()),
        ("fxray_dlq_partition", str(record.partition).encode()),
        ("fxray_dlq_offset", str(record.offset).encode()),
        ("fxray_dlq_time", str(time.time()).encode()),
    ]
    return OutgoingRecord(record.value, key=record.key, headers=headers)
