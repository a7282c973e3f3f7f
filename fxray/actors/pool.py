"""Warm executor actors per version, scaled between a minimum and a maximum with load.

The router owns one :class:`ExecutorPools`. A version's actors are created on demand (after
its dependency environment is ready), kept warm while busy, and reaped after sitting idle.
A batch goes to one idle actor at a time; an actor whose script got stuck, or whose process
died, is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from fxray.actors.envs import EnvBuildError, ensure_env, runtime_env_for
from fxray.actors.executor import BatchOutcome, RemoteExecutor
from fxray.events.cloudevent import DEFAULT_LIMITS, EventLimits
from fxray.kv import KVStore
from fxray.ops import OpsConfig
from fxray.packages import PackageStore
from fxray.runtime.runs import RunSpec
from fxray.store import VersionRecord

log = logging.getLogger("fxray.pool")


class ExecutorCrashed(RuntimeError):
    """The executor process died during a batch (a script may have killed it)."""


@dataclass(slots=True)
class _Slot:
    handle: Any
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class PoolStats:
    version_id: str
    actors: int
    busy: int
    cold_start_s: float | None
    env_cached: bool | None
    reserved: int = 0
    free: int = 0


class VersionPool:
    """The executor actors of one version."""

    def __init__(self, version: VersionRecord, pools: ExecutorPools, max_actors: int) -> None:
        self.version = version
        self.pools = pools
        self.max_actors = max_actors
        self.slots: list[_Slot] = []
        self.creating = 0
        self.reserved = 0  # batches dispatched that have not taken an actor yet
        self.cancelled: set[str] = set()  # runs cancelled before their batch reached an actor
        self.idle = asyncio.Condition()
        self.env_error: str | None = None
        self.cold_start_s: float | None = None
        self.env_cached: bool | None = None
        self._runtime_env: dict[str, Any] | None = None
        self._env_lock = asyncio.Lock()
        self._growing: set[asyncio.Task[None]] = set()

    @property
    def size(self) -> int:
        return len(self.slots) + self.creating

    def free_capacity(self) -> int:
        """How many more batches could start now (idle actors plus actors we may add)."""
        idle = sum(1 for s in self.slots if not s.busy)
        growable = max(0, self.max_actors - self.size)
        if growable:
            growable = min(
                growable,
                max(self.pools.max_total - self.pools.total(), 0)
                or int(self.pools.has_idle_elsewhere(self)),
            )
        return max(0, idle + growable - self.reserved)

    async def run_batch(self, specs: list[RunSpec]) -> BatchOutcome:
        """Run a batch on an idle actor (starting one if allowed); raises ExecutorCrashed."""
        slot = await self._acquire()
        skip = [s.run_id for s in specs if s.run_id in self.cancelled]
        self.cancelled.difference_update(skip)
        try:
            outcome: BatchOutcome = await slot.handle.execute_batch.remote(specs, skip)
        except RayActorError as exc:
            self._retire(slot)
            raise ExecutorCrashed(_crash_reason(exc)) from exc
        finally:
            self.cancelled.difference_update(s.run_id for s in specs)
        if outcome.poisoned:
            self._retire(slot)
        else:
            slot.busy = False
            slot.last_used = time.monotonic()
        async with self.idle:
            self.idle.notify()
        return outcome

    async def cancel(self, run_id: str) -> list[str]:
        """Ask every busy executor of this version to cancel the run; their answers."""
        self.cancelled.add(run_id)
        answers = []
        for slot in list(self.slots):
            if slot.busy:
                try:
                    answers.append(await slot.handle.cancel.remote(run_id))
                except RayActorError:
                    answers.append("dead")
        return answers

    async def _acquire(self) -> _Slot:
        """Take an idle actor, or start one; a dispatched batch holds a reservation till then.

        The first actor is started by the batch that needs it (which gives its reservation up
        at once: the new actor counts in ``size``) and errors, such as an environment that
        does not build, reach that batch. With actors running but all busy, one more is
        started in the background and the batch takes whichever is free first: an actor
        finishing its batch in milliseconds, or the new one seconds later.
        """
        reserved = True
        try:
            while True:
                for slot in self.slots:
                    if not slot.busy:
                        slot.busy = True
                        return slot
                if self.size < self.max_actors and self.pools.can_grow():
                    if not self.slots:
                        self.reserved -= 1
                        reserved = False
                        return await self._start_actor()
                    self._grow_in_background()
                async with self.idle:
                    try:
                        await asyncio.wait_for(self.idle.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
        finally:
            if reserved:
                self.reserved -= 1

    def _grow_in_background(self) -> None:
        self.creating += 1  # counted in ``size`` from now: one start per shortage

        async def grow() -> None:
            try:
                slot = await self._start_actor(counted=True)
            except Exception as exc:  # the batches waiting keep the actors already running
                log.warning("could not add an executor for %s: %s", self.version.id, exc)
                return
            slot.busy = False
            slot.last_used = time.monotonic()
            async with self.idle:
                self.idle.notify()

        task = asyncio.get_running_loop().create_task(grow())
        self._growing.add(task)
        task.add_done_callback(self._growing.discard)

    async def _start_actor(self, *, counted: bool = False) -> _Slot:
        if not counted:
            self.creating += 1
        started = time.monotonic()
        try:
            runtime_env = await self._ensure_runtime_env()
            handle = RemoteExecutor.options(
                num_cpus=self.pools.executor_cpus,
                runtime_env=runtime_env,
                name=None,
            ).remote(
                self.version.service,
                self.version.id,
                self.version.content_hash,
                self.pools.package_store,
                self.pools.kv,
                str(self.pools.cache_dir),
                **({"ops": self.pools.ops} if self.pools.ops is not None else {}),
                event_limits=self.pools.event_limits,
            )
            await handle.ping.remote()
        finally:
            self.creating -= 1
        if self.cold_start_s is None:
            self.cold_start_s = time.monotonic() - started
        slot = _Slot(handle, busy=True)
        self.slots.append(slot)
        log.info("started executor for %s in %.2fs", self.version.id, time.monotonic() - started)
        return slot

    async def _ensure_runtime_env(self) -> dict[str, Any]:
        async with self._env_lock:
            if self._runtime_env is not None:
                return self._runtime_env
            reqs = self.version.requirements
            env_path: Path | None = None
            if reqs and self.pools.env_backend == "fxray":
                try:
                    build = await asyncio.to_thread(
                        ensure_env,
                        reqs,
                        self.version.requirements_hash,
                        self.pools.envs_dir,
                        index_url=self.pools.pip_index_url,
                    )
                except EnvBuildError as exc:
                    self.env_error = str(exc)
                    raise
                env_path, self.env_cached = build.path, build.cached
            self._runtime_env = runtime_env_for(
                self.version.id, reqs, env_path, self.pools.env_backend
            )
            return self._runtime_env

    def _retire(self, slot: _Slot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # already dead
            pass

    def reap(self, idle_s: float, keep: int) -> int:
        now = time.monotonic()
        reaped = 0
        for slot in list(self.slots):
            if len(self.slots) <= keep:
                break
            if not slot.busy and now - slot.last_used > idle_s:
                self._retire(slot)
                reaped += 1
        return reaped

    def shutdown(self) -> None:
        for task in list(self._growing):
            task.cancel()  # an actor being started is dropped with its handle
        for slot in list(self.slots):
            self._retire(slot)

    def stats(self) -> PoolStats:
        busy = sum(1 for s in self.slots if s.busy)
        return PoolStats(
            self.version.id,
            len(self.slots),
            busy,
            self.cold_start_s,
            self.env_cached,
            self.reserved,
            self.free_capacity(),
        )


class ExecutorPools:
    """All versions' pools, under one cap on the total number of executor actors."""

    def __init__(
        self,
        *,
        package_store: PackageStore,
        kv: KVStore,
        cache_dir: Path,
        envs_dir: Path,
        executor_cpus: float,
        max_per_version: int,
        min_per_version: int,
        max_total: int,
        idle_s: float,
        env_backend: str = "fxray",
        pip_index_url: str | None = None,
        ops: OpsConfig | None = None,
        event_limits: EventLimits = DEFAULT_LIMITS,
    ) -> None:
        self.package_store = package_store
        self.event_limits = event_limits  # what runs may emit and keep as their result
        self.ops = ops  # where executors publish ops records (None: the ops sink is off)
        self.kv = kv
        self.cache_dir = cache_dir
        self.envs_dir = envs_dir
        self.executor_cpus = executor_cpus
        self.max_per_version = max_per_version
        self.min_per_version = min_per_version
        self.max_total = max_total
        self.idle_s = idle_s
        self.env_backend = env_backend
        self.pip_index_url = pip_index_url
        self.pools: dict[str, VersionPool] = {}

    def pool(self, version: VersionRecord, max_concurrency: int | None = None) -> VersionPool:
        pool = self.pools.get(version.id)
        if pool is None:
            limit = min(self.max_per_version, max_concurrency or self.max_per_version)
            pool = VersionPool(version, self, limit)
            self.pools[version.id] = pool
        return pool

    def total(self) -> int:
        return sum(p.size for p in self.pools.values())

    def can_grow(self) -> bool:
        if self.total() < self.max_total:
            return True
        return self._evict_one_idle()

    def has_idle_elsewhere(self, pool: VersionPool) -> bool:
        return any(not s.busy for p in self.pools.values() if p is not pool for s in p.slots)

    def _evict_one_idle(self) -> bool:
        """Make room by retiring the least recently used idle actor of any version."""
        idle = [(s.last_used, p, s) for p in self.pools.values() for s in p.slots if not s.busy]
        if not idle:
            return False
        _, pool, slot = min(idle, key=lambda item: item[0])
        pool._retire(slot)
        return True

    def reap(self) -> int:
        return sum(p.reap(self.idle_s, self.min_per_version) for p in self.pools.values())

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()

    def stats(self) -> list[PoolStats]:
        return [p.stats() for p in self.pools.values()]


def _crash_reason(exc: RayActorError) -> str:
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else "executor died"
    return f"executor process died during the run ({first[:200]})"
