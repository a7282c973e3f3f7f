"""Dispatch: the router's queue, the batches it sends to executors, and what comes back.

Runs wait in a priority queue per version (runs of an ordered trigger also wait behind their
key's earlier runs). Versions are visited in the order of their best waiting run, and each
version's best runs go to its free executors in batches sized from the version's measured run
time so that a batch takes ~20 ms. Results are recorded, failed runs are retried after their
back-off, emitted events are published, runs that failed for good are dead-lettered, and the
runs' records are told when each run is final (so its event's offset can be committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tenacity import AsyncRetrying, wait_exponential

from fxray.actors.envs import EnvBuildError
from fxray.actors.executor import BatchOutcome
from fxray.actors.pool import ExecutorCrashed, ExecutorLost, ExecutorPools, VersionPool
from fxray.bus import EventBus
from fxray.cluster.placement import Unplaceable
from fxray.events import cloudevent as ev
from fxray.events.deadletters import failed_run_letter
from fxray.ops.metrics import RunMetrics
from fxray.router.queue import DelayQueue, RunQueue
from fxray.router.records import RunRecords
from fxray.router.routing import ActiveRun
from fxray.runtime.runs import RunResult, RunStatus, storable_text
from fxray.settings import Settings
from fxray.store import RoutingSnapshot

log = logging.getLogger("fxray.router")

TARGET_BATCH_S = 0.02
RUNNING_RECORD_AFTER_S = 0.25
IDLE_WAKEUP_S = 0.5


class Dispatcher:
    """Holds the router's active runs from their creation until they are final."""

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        pools: ExecutorPools,
        records: RunRecords,
        snapshot: Callable[[], RoutingSnapshot],
        ended: Callable[[list[ActiveRun]], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        metrics: RunMetrics,
        counters: Counter[str],
        note_error: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.note_error = note_error
        self.bus = bus
        self.pools = pools
        self.records = records
        self.snapshot = snapshot
        self.ended = ended
        self.spawn = spawn
        self.metrics = metrics
        self.counters = counters
        self.runs: dict[str, ActiveRun] = {}
        self.queue: RunQueue[ActiveRun] = RunQueue()
        self.delayed: DelayQueue[ActiveRun] = DelayQueue()
        self.ordered: dict[tuple[str, str], deque[ActiveRun]] = {}  # per key: head runs, rest wait
        self.avg_run_s: dict[str, float] = {}
        self.backlog: Counter[str] = Counter()  # active runs per version: its pool scales by it
        self.wakeup = asyncio.Event()
        self.running = True  # the loops' condition (see Intake.running)

    def in_flight(self) -> int:
        return len(self.runs)

    def admit(self, runs: list[ActiveRun]) -> None:
        """Take new runs: record them, queue them, and send what can go now."""
        self.records.created([r.spec for r in runs])
        for run in runs:
            self.runs[run.spec.run_id] = run
            self.backlog[run.spec.version_id] += 1
            self._enqueue(run)
        if runs:
            self.dispatch()  # now, not on the dispatch loop's next turn: latency

    # -- queue ----------------------------------------------------------------------------------

    def _enqueue(self, run: ActiveRun) -> None:
        """Queue a new run; a run of an ordered trigger waits behind its key's earlier runs."""
        if run.order_key is not None:
            line = self.ordered.setdefault(run.order_key, deque())
            line.append(run)
            if len(line) > 1:
                return
        self._push(run)

    def _push(self, run: ActiveRun) -> None:
        self.queue.push(run.spec.run_id, run.spec.priority, run, run.spec.version_id)

    def _release_next(self, run: ActiveRun) -> None:
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
            self._push(line[0])
        elif not line:
            del self.ordered[run.order_key]

    def _requeue(self, run: ActiveRun, isolate: bool = False) -> None:
        run.dispatched = False
        run.isolate = run.isolate or isolate
        self._push(run)
        self.wakeup.set()

    # -- dispatch -------------------------------------------------------------------------------

    async def loop(self) -> None:
        """Send retries when due, and whatever the executors have room for."""
        while self.running:
            due = self.delayed.next_due()
            timeout = (
                IDLE_WAKEUP_S if due is None else max(0.0, min(IDLE_WAKEUP_S, due - time.time()))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            self.wakeup.clear()
            for run in self.delayed.pop_due(time.time()):
                if run.spec.run_id in self.runs:
                    self._push(run)
            self.dispatch()

    def dispatch(self) -> None:
        """Send queued runs to free executors: best runs first, one batch per free actor."""
        for version_id in self.queue.groups_by_priority():
            pool = self._pool(version_id)
            pool.backlog = self.backlog[version_id]
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
                self.spawn(self._run_batch(pool, batch))

    def _pool(self, version_id: str) -> VersionPool:
        snapshot = self.snapshot()
        version = snapshot.versions[version_id]
        service = snapshot.services.get(version.service)
        limit = service.max_concurrency if service else None
        return self.pools.pool(version, limit)

    def _batch_size(self, version_id: str) -> int:
        """Runs per executor call: enough to fill ~20 ms, from the version's mean run time."""
        avg = self.avg_run_s.get(version_id)
        if avg is None:
            return 1
        return max(1, min(self.settings.executor_batch_size, int(TARGET_BATCH_S / max(avg, 1e-6))))

    @staticmethod
    def _batches(runs: list[ActiveRun], free: int, per_batch: int) -> list[list[ActiveRun]]:
        """Spread runs over up to ``free`` batches; a run being isolated goes alone."""
        isolated = [[r] for r in runs if r.isolate]
        rest = [r for r in runs if not r.isolate]
        slots = max(1, free - len(isolated))
        size = max(1, min(per_batch, math.ceil(len(rest) / slots))) if rest else 1
        return isolated + [rest[i : i + size] for i in range(0, len(rest), size)]

    async def _run_batch(self, pool: VersionPool, batch: list[ActiveRun]) -> None:
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
        except ExecutorLost as exc:  # its node went away: no run is to blame, all go again
            self.counters["runs_requeued_executor_lost"] += len(batch)
            log.warning("%s; %d runs queued again", exc, len(batch))
            for run in batch:
                self._requeue(run)
            return
        except Unplaceable as exc:
            await self.fail(batch, started, str(exc))
            return
        except ExecutorCrashed as exc:
            if len(batch) == 1:
                await self.fail(batch, started, str(exc))
            else:  # find the culprit: run each again on its own
                self.counters["crash_isolations"] += 1
                for run in batch:
                    self._requeue(run, isolate=True)
            return
        except EnvBuildError as exc:
            await self.fail(batch, started, f"environment: {exc}")
            return
        except Exception as exc:
            log.exception("executor call failed")
            await self.fail(batch, started, f"executor error: {type(exc).__name__}: {exc}")
            return
        self.dispatch()  # the executor is free again: refill it before recording
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

    def _record_running(self, run: ActiveRun, started: float) -> None:
        if run.spec.run_id in self.runs:
            self.records.running(run.spec, started)

    # -- completion -----------------------------------------------------------------------------

    async def fail(self, runs: list[ActiveRun], started: float, error: str) -> None:
        """End an attempt of each run as failed, for a reason the router found itself."""
        now = time.time()
        error = storable_text(error) or "failed"
        for run in runs:
            await self._complete(
                run, RunResult(run.spec.run_id, RunStatus.FAILED, started, now, error=error)
            )

    async def _complete(self, run: ActiveRun, result: RunResult) -> None:
        """Complete a run with a result the router made itself (no executor reported it)."""
        await self.records.ended_in_router(run.spec, result)
        await self._complete_many([(run, result)])

    async def _complete_many(self, done: list[tuple[ActiveRun, RunResult]]) -> None:
        finals: list[tuple[ActiveRun, RunResult]] = []
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
                self._retry_later(run, result)
            else:
                finals.append((run, result))
        emitted = [e for run, result in finals for e in result.emitted]
        if emitted:
            mode = self.settings.event_output_mode
            records = [ev.to_outgoing(e, mode) for e in emitted]
            await self._persist(
                "emitted events",
                lambda: self.bus.produce_async(self.settings.events_topic, records),
            )
            self.counters["emitted"] += len(emitted)
        failed = [
            failed_run_letter(run.spec, result, run.tp, run.offset)
            for run, result in finals
            if result.status in (RunStatus.FAILED, RunStatus.TIMED_OUT) and not run.spec.shadow
        ]
        if failed and self.settings.deadletter_failed_runs:
            await self._persist(
                "dead letters",
                lambda: self.bus.produce_async(self.settings.deadletter_topic, failed),
            )
            self.counters["runs_dead_lettered"] += len(failed)
            self.metrics.observe_dead_letters("failed_run", len(failed))
        done = [(run.spec, result, run.logs) for run, result in finals]
        await self._persist("run records", lambda: self.records.finished(done))
        self.metrics.observe_finished((run.spec, result, run.dispatched) for run, result in finals)
        for run, result in finals:
            if self.runs.pop(run.spec.run_id, None) is not None:
                self.backlog[run.spec.version_id] -= 1
                if self.backlog[run.spec.version_id] <= 0:
                    del self.backlog[run.spec.version_id]
            self._release_next(run)
            self.counters[f"runs_{result.status.value}"] += 1
        if finals:
            self.ended([run for run, _ in finals])
        if self.delayed:
            self.wakeup.set()

    async def _persist(self, what: str, send: Callable[[], Awaitable[None]]) -> None:
        """``send()`` until it works: a bus or database outage delays these runs' completion,
        never loses it."""
        try:
            await send()
            return
        except Exception as exc:
            self.note_error(f"{what}: {type(exc).__name__}: {exc}; retrying")
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=lambda _: not self.running,
            reraise=True,
        ):
            with attempt:
                self.counters["persist_retries"] += 1
                await send()

    def _retry_later(self, run: ActiveRun, result: RunResult) -> None:
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

    # -- operator calls -------------------------------------------------------------------------

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

    async def reap_loop(self) -> None:
        """Apply the pools' scaling decisions: with each version's current policy (an override
        may have changed it) and backlog, retire executors idle for ``executor_idle_s`` and keep
        ``min_executors`` warm."""
        while self.running:
            await asyncio.sleep(min(5.0, self.settings.executor_idle_s / 2))
            versions = self.snapshot().versions
            for version_id, pool in list(self.pools.pools.items()):
                if version_id in versions:
                    self._pool(version_id)  # takes a refreshed policy
                pool.backlog = self.backlog.get(version_id, 0)
            self.counters["executors_reaped"] += self.pools.reap()
