"""The executor actor: runs one service version's scripts, a batch of runs per call.

Each actor serves exactly one version, in its own worker process with that version's
runtime_env, so A/B versions never share imported modules or dependencies. Runs execute one at
a time on a worker thread, so the actor can enforce each run's timeout and take cancellations
while a script runs. A script that hangs past its timeout (or ignores cancellation) cannot be
stopped from Python, so the actor reports it and marks itself *poisoned*: the pool replaces it.
A script that kills the process ends the call with ``RayActorError``; the pool handles that.

An *isolated* version (its requirements clash with what this process imports) runs its scripts
in a warm worker process of its own instead (:mod:`fxray.runtime.isolated`): a hung or
cancelled run there is stopped by signalling, then killing, that process, so this actor is
never poisoned by it, and a run that kills its process fails alone.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from fxray.events import cloudevent as ev
from fxray.kv import KVStore, ServiceState, config_key, get_json, secrets_key
from fxray.kv.watch import watch_overrides
from fxray.ops import OpsConfig
from fxray.ops import finished as ops_finished
from fxray.ops.publisher import OpsPublisher, RunOps
from fxray.packages import PackageStore, materialize
from fxray.runtime import runner
from fxray.runtime.isolated import IsolatedWorker, WorkerStartError
from fxray.runtime.runs import RunResult, RunSpec, RunStatus

if TYPE_CHECKING:
    from fxray.cluster.envstore import NodeSetup, SharedEnv

CANCEL_GRACE_S = 2.0
ISOLATED_KILL_WAIT_S = 5.0  # after the grace period: the worker process is killed by then
OPS_FLUSH_WAIT_S = 5.0


@dataclass(slots=True)
class BatchOutcome:
    """What came of one ``execute_batch`` call."""

    results: list[RunResult] = field(default_factory=list)
    unstarted: list[str] = field(default_factory=list)  # run ids handed back, never begun
    poisoned: bool = False  # a script thread is stuck: retire this actor


@dataclass(slots=True)
class _Current:
    """The run the worker thread is executing."""

    run_id: str
    thread_id: int
    started: float
    timeout_s: float
    deadline: float = 0.0
    timed_out: bool = False

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s


class ExecutorActor:
    """Hosts one version; created through :func:`executor_class` with a runtime_env."""

    def __init__(
        self,
        service: str,
        version_id: str,
        package_hash: str,
        package_store: PackageStore,
        kv: KVStore,
        cache_dir: str,
        ops: OpsConfig | None = None,
        event_limits: ev.EventLimits = ev.DEFAULT_LIMITS,
        isolated: bool = False,
        env_path: str | None = None,
        node: NodeSetup | None = None,
    ) -> None:
        """``isolated``: run the scripts in a worker process whose import path is
        ``env_path`` (the version's installed requirements), the shim and the stdlib.
        ``node`` (cluster mode): the package cache and the dependency environment are this
        node's own, the environment fetched from the package store if another node built it."""
        self.node_env: SharedEnv | None = None
        if node is not None:
            cache_dir = str(node.package_cache_dir())
            self.node_env = node.ensure_env()
            if self.node_env is not None and isolated:
                env_path = str(self.node_env.path)
            elif self.node_env is not None:
                sys.path.insert(0, str(self.node_env.path))
        self.service = service
        self.event_limits = event_limits
        self.version_id = version_id
        self.package_dir = materialize(package_store, package_hash, Path(cache_dir))
        self._package_config = _read_json_file(self.package_dir / "config.json")
        self._package_secrets = _read_json_file(self.package_dir / "secrets.json")
        self.kv = kv
        self.state = ServiceState(kv, service)
        # a KV that can watch (Consul) keeps the overrides cached and current; else read per batch
        self._overrides = watch_overrides(kv, service)
        self.codes = runner.CodeCache()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fxray-run")
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._current: _Current | None = None
        self._runs_done = 0
        self._ops = OpsPublisher(ops) if ops is not None else None  # the ops pipeline, if on
        self._run_ops: dict[str, RunOps] = {}
        self._isolated: IsolatedWorker | None = None
        if isolated:
            self._isolated = IsolatedWorker(self.package_dir, Path(env_path) if env_path else None)
            # started by the run thread, which lives as long as this actor: the worker
            # process is bound to its parent thread's life (PR_SET_PDEATHSIG)
            try:
                self._worker.submit(self._isolated.start).result()
            except WorkerStartError:
                pass  # the first run starts it again, and fails saying why if it cannot
        runner.install_capture()
        tune_gc()

    def ping(self) -> dict[str, Any]:
        isolated = self._isolated
        return {
            "pid": os.getpid(),
            "version": self.version_id,
            "runs": self._runs_done,
            "sys_path_head": sys.path[:3],
            "isolated": isolated is not None,
            "worker_pid": isolated.pid if isolated is not None else None,
            "worker_starts": isolated.starts if isolated is not None else 0,
            "worker_sys_path": isolated.sys_path if isolated is not None else None,
        }

    def execute_batch(
        self, specs: list[RunSpec], cancelled: list[str] | None = None
    ) -> BatchOutcome:
        """Run ``specs`` in order, skipping ``cancelled``; hand the rest back if a script hangs.

        The whole batch is one hand-off to the worker thread; this thread only watches the
        running run's deadline, so fast runs cost no thread switches.
        """
        with self._lock:
            self._cancelled.update(cancelled or ())
        config, secrets = self._load_config()
        results: list[RunResult] = []
        future = self._worker.submit(self._run_batch, specs, config, secrets, results)
        while True:
            with self._lock:
                current = self._current
            wait = max(0.01, current.deadline - time.monotonic()) if current else 0.05
            try:
                future.result(timeout=wait)
                self._finish_ops(specs, results)
                return BatchOutcome(results=results)
            except FutureTimeout:
                pass
            with self._lock:
                current = self._current
            if current is None or time.monotonic() < current.deadline:
                continue
            if self._stop_overdue(current, future):
                continue  # interrupted; the worker records it as timed out and goes on
            # stuck in C code: report what we know and let the pool replace this actor
            done = {r.run_id for r in results}
            now = time.time()
            error = f"timed out after {current.timeout_s:g}s"
            results.append(
                RunResult(current.run_id, RunStatus.TIMED_OUT, current.started, now, error=error)
            )
            unstarted = [
                s.run_id for s in specs if s.run_id not in done and s.run_id != current.run_id
            ]
            self._finish_ops(specs, results)
            return BatchOutcome(results=results, unstarted=unstarted, poisoned=True)

    def _stop_overdue(self, current: _Current, future: Future[None]) -> bool:
        """Interrupt the overdue run; True if its thread came back within the grace period
        (an isolated run always does: its worker process is killed if it must be)."""
        with self._lock:
            if self._current is not current:
                return True
            current.timed_out = True
            self._interrupt(current)
        wait = CANCEL_GRACE_S + (ISOLATED_KILL_WAIT_S if self._isolated is not None else 0.0)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._lock:
                if self._current is not current:
                    return True
            if future.done():
                return True
            time.sleep(0.01)
        return False

    def cancel(self, run_id: str) -> str:
        """Cancel a run of this actor's current batch: ``interrupted`` if it was running."""
        with self._lock:
            current = self._current
            if current is not None and current.run_id == run_id:
                self._interrupt(current)
                return "interrupted"
            self._cancelled.add(run_id)
            if self._isolated is not None:
                self._isolated.cancel_queued(run_id)  # handed to its worker already: skipped
            return "marked"

    def _interrupt(self, current: _Current) -> None:
        """Stop the running run (the caller holds the lock)."""
        if self._isolated is not None:
            self._isolated.interrupt(current.run_id, CANCEL_GRACE_S)
        else:
            _raise_in_thread(current.thread_id, runner.RunCancelled)

    def _run_batch(
        self,
        specs: list[RunSpec],
        config: dict[str, Any],
        secrets: dict[str, Any],
        results: list[RunResult],
    ) -> None:
        if self._isolated is not None:
            self._run_batch_isolated(specs, config, secrets, results)
            return
        for spec in specs:
            try:
                results.append(self._run_one(spec, config, secrets))
            except runner.RunCancelled:
                # an interrupt that landed outside the script; the run ends cancelled
                with self._lock:
                    self._current = None
                if not results or results[-1].run_id != spec.run_id:
                    now = time.time()
                    results.append(
                        RunResult(spec.run_id, RunStatus.CANCELLED, now, now, error="cancelled")
                    )

    def _run_one(self, spec: RunSpec, config: dict[str, Any], secrets: dict[str, Any]) -> RunResult:
        with self._lock:
            if spec.run_id in self._cancelled:
                self._cancelled.discard(spec.run_id)
                now = time.time()
                return RunResult(spec.run_id, RunStatus.CANCELLED, now, now, error="cancelled")
            current = _Current(spec.run_id, threading.get_ident(), time.time(), spec.timeout_s)
            self._current = current
        hooks = None
        if self._ops is not None:
            hooks = self._run_ops[spec.run_id] = self._ops.run_hooks(spec)
            hooks.started(current.started)
        result = runner.execute(
            spec,
            self.package_dir,
            config=config,
            secrets=secrets,
            state=self.state,
            code_cache=self.codes,
            hooks=hooks,
            limits=self.event_limits,
        )
        with self._lock:
            self._current = None
        if current.timed_out:
            result.mark_timed_out(spec.timeout_s)
        self._runs_done += 1
        return result

    def _run_batch_isolated(
        self,
        specs: list[RunSpec],
        config: dict[str, Any],
        secrets: dict[str, Any],
        results: list[RunResult],
    ) -> None:
        """The batch in the isolated worker process, its runs handed over ahead of time."""
        assert self._isolated is not None
        ended: dict[str, _Current] = {}

        def admit(spec: RunSpec) -> bool:
            with self._lock:
                if spec.run_id in self._cancelled:
                    self._cancelled.discard(spec.run_id)
                    return False
                return True

        def started(spec: RunSpec, when: float) -> None:
            with self._lock:
                current = self._current = _Current(
                    spec.run_id, threading.get_ident(), when, spec.timeout_s
                )
                ended[spec.run_id] = current
            hooks = self._run_ops.get(spec.run_id)
            if hooks is not None:
                hooks.started(when)

        def hooks_for(spec: RunSpec) -> RunOps | None:
            if self._ops is None:
                return None
            hooks = self._run_ops[spec.run_id] = self._ops.run_hooks(spec)
            return hooks

        for result in self._isolated.run_batch(
            specs,
            config=config,
            secrets=secrets,
            state=self.state,
            limits=self.event_limits,
            hooks_for=hooks_for,
            admit=admit,
            started=started,
        ):
            current = ended.pop(result.run_id, None)
            with self._lock:
                if self._current is current:
                    self._current = None
                self._cancelled.discard(result.run_id)
            if current is not None and current.timed_out:
                result.mark_timed_out(current.timeout_s)
            if current is not None:
                self._runs_done += 1
            results.append(result)

    def _finish_ops(self, specs: list[RunSpec], results: list[RunResult]) -> None:
        """Publish the batch's ``finished`` records and flush the ops records (bounded wait),
        so they are on the bus before the router hears of the results."""
        if self._ops is None:
            return
        by_id = {s.run_id: s for s in specs}
        for result in results:
            hooks = self._run_ops.pop(result.run_id, None)
            if hooks is not None:
                hooks.finished(result)
            elif result.run_id in by_id:
                self._ops.add(ops_finished(by_id[result.run_id], result, log_lines=0))
        self._ops.flush(OPS_FLUSH_WAIT_S)

    def _load_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The version's own config and secrets, with the service's live KV overrides on top."""
        if self._overrides is not None:
            live_config, live_secrets = self._overrides.get()
        else:
            live_config = get_json(self.kv, config_key(self.service))
            live_secrets = get_json(self.kv, secrets_key(self.service))
        config = {**self._package_config, **(live_config or {})}
        secrets = {**self._package_secrets, **(live_secrets or {})}
        return config, secrets


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in a long-lived worker that allocates per event:
    what is loaded at start-up is frozen out of collection, and young-generation collections
    run every 20,000 allocations instead of 700."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _read_json_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else {}


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Ask a thread to raise ``exc_type`` at its next bytecode (C calls are not interrupted)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


RemoteExecutor = ray.remote(max_concurrency=4, max_restarts=0, max_task_retries=0)(ExecutorActor)
