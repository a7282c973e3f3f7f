"""The router actor: a thin shell that wires its parts and runs their loops.

* :class:`~fxray.router.intake.Intake` consumes the events topic, applies backpressure and
  commits offsets;
* :class:`~fxray.router.routing.Routing` turns each polled batch into runs;
* :class:`~fxray.router.dispatch.Dispatcher` queues the runs, sends them to executors in
  batches and completes them;
* :func:`~fxray.router.ticks.publish_ticks` publishes cron ticks (first router of a process).

The data path of one batch is :meth:`Router._route`: records -> routing -> offsets tracked ->
events recorded -> runs admitted (and dispatched at once).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from fxray import ops
from fxray.actors.executor import tune_gc
from fxray.actors.pool import ExecutorPools
from fxray.bus import EventBus, Record
from fxray.cluster.envstore import env_archives, node_home
from fxray.cluster.placement import NodeView, current_node_id, resume_if_restarted
from fxray.events.cloudevent import EventLimits
from fxray.kv import KVStore
from fxray.ops.metrics import RunMetrics
from fxray.packages import PackageStore
from fxray.router.dispatch import Dispatcher
from fxray.router.intake import Intake
from fxray.router.records import OpsRunRecords, RunRecords
from fxray.router.routing import ActiveRun, Routing
from fxray.router.ticks import publish_ticks
from fxray.router.writer import RecordWriter
from fxray.settings import Settings
from fxray.store import StateStore, database_unavailable, describe_error

log = logging.getLogger("fxray.router")

GIL_SWITCH_INTERVAL_S = 0.0005
GAUGES_EVERY_S = 0.2
EXECUTOR_GAUGES_EVERY_TICKS = 5
LOOP_RESTART_DELAY_S = 0.5
ROUTE_RETRY_S = 1.0
MAX_ERRORS_KEPT = 50


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
        self.counters: Counter[str] = Counter()
        self.errors: list[str] = []
        self.metrics = RunMetrics(router_id)
        self.tasks: list[asyncio.Task[None]] = []
        self.batch_tasks: set[asyncio.Task[None]] = set()
        self.running = False
        # in cluster mode this node's own folders (FXRAY_NODE_HOME), as each executor's
        home = node_home(self.settings.home) if self.settings.cluster_mode else self.settings.home
        self.pools = ExecutorPools(
            package_store=package_store,
            kv=kv,
            cache_dir=home / "cache" / "packages",
            envs_dir=home / "envs",
            executor_cpus=self.settings.executor_cpus,
            max_per_version=self.settings.executors_max_per_version,
            min_per_version=self.settings.executors_min_per_version,
            max_total=self.settings.executors_max_total,
            idle_s=self.settings.executor_idle_s,
            env_backend=self.settings.env_backend,
            pip_index_url=self.settings.pip_index_url,
            ops=ops.OpsConfig.from_settings(self.settings, bus),
            event_limits=EventLimits.from_settings(self.settings),
            target_backlog=self.settings.executor_target_backlog,
            executor_resources=self.settings.executor_resources,
            node_view=NodeView(self.settings.cluster_node_types),
            env_archives=(
                env_archives(package_store)
                if self.settings.cluster_mode and self.settings.env_backend == "fxray"
                else None
            ),
            home=self.settings.home,
            start_timeout_s=self.settings.executor_start_timeout_s,
        )
        self.writer = RecordWriter(store, counters=self.counters, report=self._note_error)
        ops_config = self.pools.ops  # on if the ops sink is
        self.records: RunRecords = (
            RunRecords(self.writer)
            if ops_config is None
            else OpsRunRecords(
                self.writer, bus, ops_config, self.counters, self._note_error, self._spawn
            )
        )
        self.routing = Routing(
            self.settings, bus, store, self.metrics, self.counters, self._note_error
        )
        self.dispatcher = Dispatcher(
            self.settings,
            bus,
            self.pools,
            self.records,
            snapshot=lambda: self.routing.snapshot,
            ended=self._runs_ended,
            spawn=self._spawn,
            metrics=self.metrics,
            counters=self.counters,
            note_error=self._note_error,
        )
        self.intake = Intake(
            self.settings,
            bus,
            router_id,
            in_flight=self.dispatcher.in_flight,
            route=self._route,
            counters=self.counters,
            note_error=self._note_error,
        )
        # Ray restarts a router whose node died (max_restarts): it rejoins the consumer group
        # and resumes from the committed offsets; the events its former self had not finished
        # are delivered again (at-least-once), and runs already recorded are skipped.
        self.restarted = resume_if_restarted()
        if self.restarted:
            self.counters["restarts"] += 1
            log.warning("%s restarted by Ray on node %s", router_id, current_node_id())

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        if self.running:
            return self.router_id
        self.running = True
        tune_gc()
        # The consumer, the record writer and Ray's own threads hand work to the event loop;
        # with CPython's default 5 ms switch interval each hand-off can wait up to 5 ms for
        # the GIL while another thread computes. 0.5 ms keeps those waits short.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            await asyncio.to_thread(self.intake.open)
        except BaseException:
            self.running = False  # a later start() tries again
            raise
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self.intake.consume_loop,
            self.dispatcher.loop,
            self.intake.commit_loop,
            self._refresh_loop,
            self.dispatcher.reap_loop,
            self._gauges_loop,
        ]
        if self.run_scheduler:
            loops.append(self._schedule_loop)
        self.tasks = [asyncio.create_task(self._guard(loop)) for loop in loops]
        return self.router_id

    async def stop(self) -> dict[str, int]:
        """Stop consuming, let dispatched runs finish briefly, commit, and leave the group."""
        self.running = self.intake.running = self.dispatcher.running = False
        self.dispatcher.wakeup.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.intake.close()
        self.pools.shutdown()
        self.writer.close()
        return dict(self.counters)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.batch_tasks.add(task)
        task.add_done_callback(self.batch_tasks.discard)

    async def _guard(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while self.running:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep routing; report what broke
                log.exception("router loop %s failed; restarting it", loop.__name__)
                self.counters["loop_restarts"] += 1
                self._note_error(f"{loop.__name__}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(LOOP_RESTART_DELAY_S)

    def _note_error(self, text: str) -> None:
        log.warning("%s", text)
        self.errors.append(text)
        del self.errors[:-MAX_ERRORS_KEPT]

    # -- the data path --------------------------------------------------------------------------

    async def _route(self, records: list[Record]) -> None:
        # A record that breaks routing is dead-lettered by routing itself; what fails here is
        # the bus or the database. The batch is tried again, never dropped: a later batch must
        # not commit past records that were never routed.
        while True:
            try:
                routed = await self.routing.route(records, self.dispatcher.runs)
                break
            except Exception as exc:
                self.counters["route_retries"] += 1
                self._note_error(f"routing {len(records)} records: {describe_error(exc)}")
                await asyncio.sleep(ROUTE_RETRY_S)
                if not self.running:
                    return  # untracked, so uncommitted: the next owner reads them again
        for record, runs in routed.per_record:
            self.intake.track(record, len(runs))
        # The writer keeps order, so these rows are durable before any later update of the
        # same runs, and offsets are committed only after those updates: no need to wait here.
        self.writer.submit("events", routed.events)
        self.dispatcher.admit(routed.runs)

    def _runs_ended(self, runs: list[ActiveRun]) -> None:
        self.intake.runs_ended((run.tp, run.offset) for run in runs if run.tp is not None)

    # -- background loops -----------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while self.running:
            await asyncio.sleep(self.settings.trigger_refresh_s)
            try:
                await self.routing.refresh()
            except Exception as exc:  # the database is away: routing goes on as it was
                if not database_unavailable(exc):
                    raise
                self.counters["refresh_failures"] += 1
                if self.counters["refresh_failures"] % 30 == 1:  # not every second
                    self._note_error(f"refreshing triggers: {describe_error(exc)}")

    async def _gauges_loop(self) -> None:
        ticks = 0
        while self.running:
            await asyncio.sleep(GAUGES_EVERY_S)
            ticks += 1
            self.metrics.set_in_flight(self.dispatcher.in_flight())
            if ticks % EXECUTOR_GAUGES_EVERY_TICKS == 0:
                pools = list(self.pools.pools.values())
                self.metrics.set_executors(
                    {(p.version.service, p.version.id): len(p.slots) for p in pools},
                    {(p.version.service, p.version.id): p.wanted() for p in pools},
                )

    async def _schedule_loop(self) -> None:
        await publish_ticks(
            self.settings,
            self.bus,
            self.store,
            lambda: self.routing.snapshot,
            self.counters,
            self._note_error,
            lambda: self.running,
        )

    # -- operator calls -------------------------------------------------------------------------

    async def refresh(self) -> int:
        """Reload routing state if it changed; returns the revision in force."""
        return await self.routing.refresh()

    async def cancel(self, run_id: str) -> str:
        """Cancel a queued, waiting or running run; returns what happened."""
        return await self.dispatcher.cancel(run_id)

    async def set_priority(self, run_id: str, priority: int) -> bool:
        """Re-prioritise a queued run (1 highest .. 10 lowest)."""
        return await self.dispatcher.set_priority(run_id, priority)

    def queued(self) -> list[dict[str, Any]]:
        return self.dispatcher.queued()

    def stats(self) -> dict[str, Any]:
        dispatcher = self.dispatcher
        return {
            "router": self.router_id,
            "node": current_node_id(),
            "restarted": self.restarted,
            "revision": self.routing.table.revision,
            "active_runs": dispatcher.in_flight(),
            "queued": len(dispatcher.queue),
            "waiting_retry": len(dispatcher.delayed),
            "paused": self.intake.paused,
            "consuming": self.running,
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
