"""The executor actor: runs one service version's scripts, a batch of runs per call.

Each actor serves exactly one version, in its own worker process with that version's
runtime_env, so A/B versions never share imported modules or dependencies. Runs execute one at
a time on a worker thread, so the actor can enforce each run's timeout and take cancellations
while a script runs. A script that hangs past its timeout (or ignores cancellation) cannot be
stopped from Python, so the actor reports it and marks itself *poisoned*: the pool replaces it.
A script that kills the process ends the call with ``RayActorError``; the pool handles that.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from fxray import runner
from fxray.kv import KVStore, ServiceState, config_key, get_json, secrets_key
from fxray.packages import PackageStore, materialize
from fxray.runs import RunResult, RunSpec, RunStatus

CANCEL_GRACE_S = 2.0


@dataclass(slots=True)
class BatchOutcome:
    """What came of one ``execute_batch`` call."""

    results: list[RunResult] = field(default_factory=list)
    unstarted: list[str] = field(default_factory=list)  # run ids handed back, never begun
    poisoned: bool = False  # a script thread is stuck: retire this actor


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
    ) -> None:
        self.service = service
        self.version_id = version_id
        self.package_dir = materialize(package_store, package_hash, Path(cache_dir))
        self._package_config = _read_json_file(self.package_dir / "config.json")
        self._package_secrets = _read_json_file(self.package_dir / "secrets.json")
        self.kv = kv
        self.state = ServiceState(kv, service)
        self.codes = runner.CodeCache()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fxray-run")
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._current: tuple[str, int] | None = None  # (run id, thread id)
        self._runs_done = 0
        runner.install_capture()

    def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": self.version_id,
            "runs": self._runs_done,
            "sys_path_head": sys.path[:3],
        }

    def execute_batch(
        self, specs: list[RunSpec], cancelled: list[str] | None = None
    ) -> BatchOutcome:
        """Run ``specs`` in order, skipping ``cancelled``; hand the rest back if a script hangs."""
        outcome = BatchOutcome()
        with self._lock:
            self._cancelled.update(cancelled or ())
        config, secrets = self._load_config()
        for index, spec in enumerate(specs):
            with self._lock:
                cancelled = spec.run_id in self._cancelled
                self._cancelled.discard(spec.run_id)
            if cancelled:
                now = time.time()
                outcome.results.append(
                    RunResult(spec.run_id, RunStatus.CANCELLED, now, now, error="cancelled")
                )
                continue
            result, stuck = self._execute_one(spec, config, secrets)
            outcome.results.append(result)
            self._runs_done += 1
            if stuck:
                outcome.poisoned = True
                outcome.unstarted = [s.run_id for s in specs[index + 1 :]]
                break
        return outcome

    def cancel(self, run_id: str) -> str:
        """Cancel a run of this actor's current batch: ``interrupted`` if it was running."""
        with self._lock:
            current = self._current
            if current is not None and current[0] == run_id:
                _raise_in_thread(current[1], runner.RunCancelled)
                return "interrupted"
            self._cancelled.add(run_id)
            return "marked"

    def _execute_one(
        self, spec: RunSpec, config: dict[str, Any], secrets: dict[str, Any]
    ) -> tuple[RunResult, bool]:
        started = time.time()
        begun = threading.Event()
        future: Future[RunResult] = self._worker.submit(
            self._in_worker, spec, config, secrets, begun
        )
        try:
            return future.result(timeout=spec.timeout_s), False
        except FutureTimeout:
            with self._lock:
                current = self._current
            if current is not None and current[0] == spec.run_id:
                _raise_in_thread(current[1], runner.RunCancelled)
            try:
                future.result(timeout=CANCEL_GRACE_S)
            except FutureTimeout:
                stuck = True
            else:
                stuck = False
            error = f"timed out after {spec.timeout_s:g}s"
            return RunResult(
                spec.run_id, RunStatus.TIMED_OUT, started, time.time(), error=error
            ), stuck

    def _in_worker(
        self, spec: RunSpec, config: dict[str, Any], secrets: dict[str, Any], begun: threading.Event
    ) -> RunResult:
        with self._lock:
            self._current = (spec.run_id, threading.get_ident())
        try:
            return runner.execute(
                spec,
                self.package_dir,
                config=config,
                secrets=secrets,
                state=self.state,
                code_cache=self.codes,
                started=begun,
            )
        except runner.RunCancelled:
            now = time.time()
            return RunResult(spec.run_id, RunStatus.CANCELLED, now, now, error="cancelled")
        finally:
            with self._lock:
                self._current = None

    def _load_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The version's own config and secrets, with the service's live KV overrides on top."""
        config = {**self._package_config, **(get_json(self.kv, config_key(self.service)) or {})}
        secrets = {
            **self._package_secrets,
            **(get_json(self.kv, secrets_key(self.service)) or {}),
        }
        return config, secrets


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
