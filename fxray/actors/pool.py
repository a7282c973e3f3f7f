"""Warm executor actors per version, scaled between a minimum and a maximum with load.

The router owns one :class:`ExecutorPools`. A version's actors are created on demand (after
its dependency environment is ready), kept warm while busy, and reaped after sitting idle;
how many it wants is its scaling policy's decision (:mod:`fxray.actors.scaling`), and where
they run is its service's resources' (:mod:`fxray.cluster.placement`). A batch goes to one
idle actor at a time; an actor whose script got stuck, or whose process died, is replaced; an
actor lost with its node hands its batch back (:class:`ExecutorLost`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from fxray.actors.envs import EnvBuildError, ensure_env, runtime_env_for
from fxray.actors.executor import BatchOutcome, RemoteExecutor
from fxray.actors.scaling import Decision, ScalingPolicy, decide, policy_for
from fxray.cluster.envstore import EnvArchives, NodeSetup, ensure_shared_env
from fxray.cluster.placement import (
    NodeView,
    ResourceRequest,
    Unplaceable,
    executor_options,
    executor_request,
    lost_with_its_node,
)
from fxray.events.cloudevent import DEFAULT_LIMITS, EventLimits
from fxray.kv import KVStore
from fxray.ops import OpsConfig
from fxray.packages import PackageStore
from fxray.runtime.runs import RunSpec
from fxray.services.clashes import ISOLATION_KEY, env_clashes
from fxray.store import VersionRecord

log = logging.getLogger("fxray.pool")


class ExecutorCrashed(RuntimeError):
    """The executor process died during a batch (a script may have killed it)."""


class ExecutorLost(ExecutorCrashed):
    """The executor was lost with its node (or the way to it) during a batch: no script is to
    blame, and its runs go back to the queue."""


START_CHECK_EVERY_S = 5.0  # while an executor waits to be placed, the cluster is checked again


@dataclass(slots=True)
class _Slot:
    handle: Any
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)
    node: str | None = None  # the Ray node it runs on


@dataclass(slots=True)
class PoolStats:
    version_id: str
    actors: int
    busy: int
    cold_start_s: float | None
    env_cached: bool | None
    reserved: int = 0
    free: int = 0
    isolated: bool | None = None  # runs in an isolated worker process (None: not decided yet)
    min: int = 0  # the scaling policy's bounds, and what it wants for the backlog now
    max: int = 0
    desired: int = 0
    backlog: int = 0  # runs of the version queued or running in this router
    decision: str = ""
    started: int = 0  # executors started and retired since the router started
    retired: int = 0
    nodes: dict[str, int] = field(default_factory=dict)  # executors per node (id prefix)
    resources: str = ""  # what each executor asks for


class VersionPool:
    """The executor actors of one version."""

    def __init__(
        self,
        version: VersionRecord,
        pools: ExecutorPools,
        max_actors: int,
        policy: ScalingPolicy | None = None,
    ) -> None:
        self.version = version
        self.pools = pools
        self.policy = policy or ScalingPolicy(
            min_executors=min(pools.min_per_version, max_actors),
            max_executors=max_actors,
            idle_timeout_s=pools.idle_s,
        )
        self.max_actors = self.policy.max_executors
        self.request: ResourceRequest = pools.request_for(version)
        self.backlog = 0  # set by the dispatcher: runs queued or running
        self.decision: Decision | None = None
        self.started = 0
        self.retired = 0
        self.slots: list[_Slot] = []
        self.creating = 0
        self.reserved = 0  # batches dispatched that have not taken an actor yet
        self.cancelled: set[str] = set()  # runs cancelled before their batch reached an actor
        self.idle = asyncio.Condition()
        self.env_error: str | None = None
        self.cold_start_s: float | None = None
        self.env_cached: bool | None = None
        self._runtime_env: dict[str, Any] | None = None
        self.isolated: bool | None = None
        self._env_path: Path | None = None
        self._env_lock = asyncio.Lock()
        self._growing: set[asyncio.Task[None]] = set()

    @property
    def size(self) -> int:
        return len(self.slots) + self.creating

    def set_policy(self, version: VersionRecord, policy: ScalingPolicy) -> None:
        """Take a refreshed version record and its policy (an operator's override changed)."""
        self.version = version
        if policy != self.policy:
            log.info("%s scales by %s", version.id, policy)
            self.policy = policy
            self.max_actors = policy.max_executors

    def wanted(self) -> int:
        """Executors the policy wants now: for the backlog the dispatcher reported, and at
        least one per batch dispatched (a lower bound of the backlog)."""
        busy = sum(1 for s in self.slots if s.busy)
        return self.policy.desired(max(self.backlog, busy + self.reserved))

    def free_capacity(self) -> int:
        """How many more batches could start now (idle actors plus actors we may add)."""
        idle = sum(1 for s in self.slots if not s.busy)
        growable = max(0, min(self.max_actors, max(self.wanted(), 1)) - self.size)
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
            if lost_with_its_node(exc):
                raise ExecutorLost(f"executor lost with its node ({slot.node or '?'})") from exc
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
                if self.size < max(self.wanted(), 1) and self.pools.can_grow():
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
            await asyncio.to_thread(self.pools.check_placement, self.request, self.version.id)
            runtime_env = await self._ensure_runtime_env()
            handle = RemoteExecutor.options(
                **executor_options(self.request),
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
                **self._isolation_args(),
                **self._node_args(),
            )
            node = await self._wait_started(handle)
        finally:
            self.creating -= 1
        if self.cold_start_s is None:
            self.cold_start_s = time.monotonic() - started
        slot = _Slot(handle, busy=True, node=node)
        self.slots.append(slot)
        self.started += 1
        log.info("started executor for %s in %.2fs", self.version.id, time.monotonic() - started)
        return slot

    async def _wait_started(self, handle: Any) -> str | None:
        """Wait until the new executor answers; its node's id. While it waits to be placed the
        cluster is checked again (a node type may have gone), and past the start timeout it is
        given up: :class:`Unplaceable` either way, never a wait for good."""
        answered = asyncio.wrap_future(handle.__ray_call__.remote(_started_on).future())
        deadline = time.monotonic() + self.pools.start_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({answered}, timeout=START_CHECK_EVERY_S)
                if done:
                    return answered.result()
                await asyncio.to_thread(self.pools.check_placement, self.request, self.version.id)
                if time.monotonic() > deadline:
                    raise Unplaceable(
                        f"{self.version.id}: no node started its executor within "
                        f"{self.pools.start_timeout_s:g}s (it asks for {self.request.describe()})"
                    )
        except RayActorError as exc:
            ray.kill(handle, no_restart=True)
            if lost_with_its_node(exc):  # placed on a node that went away: try again elsewhere
                raise ExecutorLost(f"new executor lost with its node: {exc}") from exc
            raise
        except BaseException:
            answered.cancel()
            ray.kill(handle, no_restart=True)
            raise

    def _node_args(self) -> dict[str, Any]:
        """In cluster mode: what the executor prepares on its own node (package cache, and the
        dependency environment fetched from the package store)."""
        if self.pools.env_archives is None:
            return {}
        with_env = self._env_path is not None  # built here with fxray's backend
        return {
            "node": NodeSetup(
                home=str(self.pools.home),
                requirements=tuple(self.version.requirements) if with_env else (),
                requirements_hash=self.version.requirements_hash if with_env else "",
                index_url=self.pools.pip_index_url,
                archives=self.pools.env_archives,
            )
        }

    def _isolation_args(self) -> dict[str, Any]:
        if not self.isolated:
            return {}
        return {"isolated": True, "env_path": str(self._env_path) if self._env_path else None}

    async def _ensure_runtime_env(self) -> dict[str, Any]:
        """The version's runtime_env, its dependency folder built first; decides isolation.

        An isolated version's folder is not on the executor's PYTHONPATH (its packages would
        replace the platform's there): only its worker process imports from it.
        """
        async with self._env_lock:
            if self._runtime_env is not None:
                return self._runtime_env
            reqs = self.version.requirements
            requested = self.version.manifest.get("isolation", "auto")
            recorded = self.version.manifest.get(ISOLATION_KEY) or {}
            isolated = requested == "process" or (
                requested == "auto" and recorded.get("mode") == "process"
            )
            env_path: Path | None = None
            if reqs and (self.pools.env_backend == "fxray" or isolated):
                try:
                    build = await asyncio.to_thread(
                        self.pools.ensure_env, reqs, self.version.requirements_hash
                    )
                except EnvBuildError as exc:
                    self.env_error = str(exc)
                    raise
                env_path, self.env_cached = build.path, build.cached
            if requested == "auto" and not isolated and env_path is not None:
                # what was installed is the truth: a clash the deploy could not see (no
                # resolution then, or a newer release since) still isolates the version
                clashes = await asyncio.to_thread(env_clashes, env_path)
                if clashes:
                    isolated = True
                    log.warning(
                        "%s runs isolated: %s",
                        self.version.id,
                        "; ".join(c.describe() for c in clashes),
                    )
            self.isolated, self._env_path = isolated, env_path
            if isolated:
                reqs, env_path = [], None  # the executor itself keeps the platform's packages
            if self.pools.env_archives is not None:
                env_path = None  # cluster mode: each executor finds it on its own node
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

    def reap(self) -> int:
        """Apply the scaling decision: retire idle executors it names, and start executors in
        the background up to ``min_executors`` (kept warm); returns how many were retired."""
        now = time.monotonic()
        idle = [slot for slot in self.slots if not slot.busy]
        decision = decide(
            self.policy,
            size=self.size,
            backlog=self.backlog,
            idle_for=[now - slot.last_used for slot in idle],
        )
        self.decision = decision
        for index in decision.retire:
            self._retire(idle[index])
            self.retired += 1
        warm_room = self.pools.total() < self.pools.max_total  # never evicts for warmth
        if self.size < self.policy.min_executors and warm_room and not self.env_error:
            self._grow_in_background()
        return len(decision.retire)

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
            isolated=self.isolated,
            min=self.policy.min_executors,
            max=self.policy.max_executors,
            desired=self.wanted(),
            backlog=self.backlog,
            decision=self.decision.reason if self.decision else "",
            started=self.started,
            retired=self.retired,
            nodes=dict(Counter((s.node or "?")[:12] for s in self.slots)),
            resources=self.request.describe(),
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
        target_backlog: int = 1,
        executor_resources: Mapping[str, float] | None = None,
        node_view: NodeView | None = None,
        env_archives: EnvArchives | None = None,
        home: Path | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        """``node_view``: check placements against the cluster (None: no check);
        ``env_archives``: cluster mode, where dependency environments are shared and
        executors prepare their own node (``home``: the platform's home path)."""
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
        self.target_backlog = target_backlog
        self.executor_resources = dict(executor_resources or {})
        self.node_view = node_view
        self.env_archives = env_archives
        self.home = home if home is not None else envs_dir.parent
        self.start_timeout_s = start_timeout_s
        self.pools: dict[str, VersionPool] = {}

    def pool(self, version: VersionRecord, max_concurrency: int | None = None) -> VersionPool:
        pool = self.pools.get(version.id)
        if pool is None:
            limit = min(self.max_per_version, max_concurrency or self.max_per_version)
            policy = self.policy(version, max_concurrency)
            pool = VersionPool(version, self, limit, policy)
            self.pools[version.id] = pool
        elif pool.version is not version:  # the routing state was refreshed
            pool.set_policy(version, self.policy(version, max_concurrency))
        return pool

    def policy(self, version: VersionRecord, max_concurrency: int | None = None) -> ScalingPolicy:
        """The version's scaling policy: these pools' defaults, its manifest, its override."""
        return policy_for(
            version.manifest,
            min_executors=self.min_per_version,
            max_executors=self.max_per_version,
            target_backlog=self.target_backlog,
            idle_timeout_s=self.idle_s,
            max_concurrency=max_concurrency,
        )

    def request_for(self, version: VersionRecord) -> ResourceRequest:
        """What each executor of the version asks Ray for."""
        return executor_request(
            version.manifest.get("resources"),
            default_cpus=self.executor_cpus,
            extra=self.executor_resources,
        )

    def check_placement(self, request: ResourceRequest, version_id: str) -> None:
        """:class:`Unplaceable` if no node could ever run an executor asking for ``request``
        (blocking: it may ask Ray's GCS)."""
        if self.node_view is not None:
            self.node_view.check(request, f"an executor of {version_id}")

    def ensure_env(self, requirements: list[str], requirements_hash: str) -> Any:
        """The version's dependency environment on this node: built with pip, or in cluster
        mode fetched from the package store when another node built it (and archived there
        when built here)."""
        if self.env_archives is not None:
            return ensure_shared_env(
                requirements,
                requirements_hash,
                self.envs_dir,
                self.env_archives,
                index_url=self.pip_index_url,
            )
        return ensure_env(
            requirements, requirements_hash, self.envs_dir, index_url=self.pip_index_url
        )

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
        return sum(p.reap() for p in self.pools.values())

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()

    def stats(self) -> list[PoolStats]:
        return [p.stats() for p in self.pools.values()]


def _started_on(actor: Any) -> str:
    """Runs in a new executor (``__ray_call__``): the id of its node, once it is up."""
    return str(ray.get_runtime_context().get_node_id())


def _crash_reason(exc: RayActorError) -> str:
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else "executor died"
    return f"executor process died during the run ({first[:200]})"
