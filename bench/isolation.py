"""Isolated runs against in-process runs, side by side in one run, on the same trivial service.

* ``executor_runs_per_s``: runs/s through an executor actor (one Ray call per batch of
  ``--batch`` runs, as the router sends them), in-process vs isolated, rounds interleaved;
* ``direct_runs_per_s``: the same without Ray: ``runner.execute`` in a loop vs
  ``IsolatedWorker.run_batch`` (the bare cost of a run on each path);
* ``warm_start_ms``: warm run start, from the executor handing a run over (the call of
  ``runner.execute`` / ``IsolatedWorker.execute``) to the script's first line, p50/p95; the
  script reads ``time.monotonic()``, one clock for every process on Linux;
* ``worker_start_ms``: starting an isolated worker process until it is ready (a cold run pays
  it once per executor, and again after a worker died or was killed).

Targets (issue 12): isolated >= 50% of in-process throughput, warm start < 5 ms.

Run: ``.venv/bin/python bench/isolation.py [--runs N] [--batch N] [--rounds N]`` (writes
``bench/results/isolation.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from fxray.actors.executor import RemoteExecutor
from fxray.events.cloudevent import new_event
from fxray.kv import ServiceState
from fxray.kv.local import InMemoryKV, LocalKV
from fxray.packages.local import LocalPackageStore
from fxray.platform import apply_ray_env_defaults
from fxray.runtime import runner
from fxray.runtime.isolated import IsolatedWorker
from fxray.runtime.runs import RunSpec
from fxray.services import load_package

RESULTS = Path(__file__).parent / "results"
SERVICE = "trivial"
# the first line stamps the start; then what the benchmarks' trivial services do
SCRIPT = (
    "import time\nstarted = time.monotonic()\nfrom fxray import context\n"
    "value = context.params.get('i')\ncontext.result = started\n"
)

apply_ray_env_defaults()


def _package(work: Path) -> tuple[Path, str, LocalPackageStore]:
    folder = work / "service"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"name": SERVICE, "entrypoint": "main.py"}))
    (folder / "main.py").write_text(SCRIPT)
    package = load_package(folder)
    store = LocalPackageStore(work / "packages")
    store.put(package.content_hash, package.to_zip())
    return folder, package.content_hash, store


def _spec(content_hash: str, i: int) -> RunSpec:
    return RunSpec(
        run_id=f"run-{uuid.uuid4().hex}",
        service=SERVICE,
        version_id=f"{SERVICE}@{content_hash[:12]}",
        package_hash=content_hash,
        steps=["main.py"],
        event=new_event("bench.tick", {"i": i}, source="bench"),
        correlation_id="bench",
    )


def _cpu_s(child: int | None) -> float:
    """CPU seconds of this process and of the worker process ``child`` (Linux /proc)."""
    own = time.process_time()
    if child is None:
        return own
    fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
    return own + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_direct(folder: Path, content_hash: str, runs: int) -> dict[str, Any]:
    """Both paths in this process, no Ray: throughput and warm start latency."""
    state = ServiceState(InMemoryKV(), SERVICE)
    codes = runner.CodeCache()
    runner.install_capture()
    worker = IsolatedWorker(folder, None)
    starts = []
    for _ in range(5):
        began = time.perf_counter()
        worker.start()
        starts.append((time.perf_counter() - began) * 1000)
        worker.close()

    def in_process(spec: RunSpec) -> Any:
        return runner.execute(
            spec, folder, config={}, secrets={}, state=state, code_cache=codes
        ).result

    def isolated(spec: RunSpec) -> Any:
        return worker.execute(spec, config={}, secrets={}, state=state).result

    figures: dict[str, Any] = {"worker_start_ms": {"p50": statistics.median(starts)}}
    rates: dict[str, list[float]] = {"in_process": [], "isolated": []}
    cpu: dict[str, list[float]] = {"in_process": [], "isolated": []}
    latency: dict[str, list[float]] = {"in_process": [], "isolated": []}
    paths = {"in_process": in_process, "isolated": isolated}
    for execute in paths.values():  # warm-up: code compiled, worker started
        for i in range(50):
            execute(_spec(content_hash, i))
    batches = {
        "in_process": lambda specs: [in_process(spec) for spec in specs],
        "isolated": lambda specs: list(
            worker.run_batch(specs, config={}, secrets={}, state=state)
        ),  # runs handed over ahead of time, as an executor does with a batch
    }
    for _ in range(3):  # rounds interleaved: the machine drifts
        for name, execute in paths.items():
            for spec in [_spec(content_hash, i) for i in range(runs // 4)]:
                handed = time.monotonic()  # one run at a time: nothing waits in the pipe
                started = execute(spec)
                latency[name].append((started - handed) * 1000)
            specs = [_spec(content_hash, i) for i in range(runs)]
            cpu_before = _cpu_s(worker.pid)
            began = time.perf_counter()
            batches[name](specs)
            rates[name].append(runs / (time.perf_counter() - began))
            cpu[name].append((_cpu_s(worker.pid) - cpu_before) / runs * 1e6)
    worker.close()
    for name in paths:
        figures[name] = {
            "runs_per_s": statistics.median(rates[name]),
            "cpu_us_per_run": statistics.median(cpu[name]),
            "warm_start_ms_p50": _percentile(latency[name], 0.50),
            "warm_start_ms_p95": _percentile(latency[name], 0.95),
        }
    return figures


def bench_executor(
    work: Path, store: LocalPackageStore, content_hash: str, batch: int, rounds: int
) -> dict[str, Any]:
    """Both paths through executor actors: one Ray call per batch, as the router does."""
    kv = LocalKV(work / "kv.db")
    actors = {
        name: RemoteExecutor.options(num_cpus=0.1).remote(
            SERVICE,
            f"{SERVICE}@{content_hash[:12]}",
            content_hash,
            store,
            kv,
            str(work / f"cache-{name}"),
            isolated=name == "isolated",
        )
        for name in ("in_process", "isolated")
    }
    ray.get([a.ping.remote() for a in actors.values()])
    for actor in actors.values():  # warm-up
        ray.get(actor.execute_batch.remote([_spec(content_hash, i) for i in range(batch)]))
    rates: dict[str, list[float]] = {name: [] for name in actors}
    for _ in range(rounds):
        for name, actor in actors.items():
            specs = [_spec(content_hash, i) for i in range(batch)]
            began = time.perf_counter()
            outcome = ray.get(actor.execute_batch.remote(specs))
            elapsed = time.perf_counter() - began
            failed = [r.error for r in outcome.results if r.status != "succeeded"]
            if failed or len(outcome.results) != batch:
                raise RuntimeError(f"{name}: runs failed: {failed[:3]}")
            rates[name].append(batch / elapsed)
    pings = {name: ray.get(a.ping.remote()) for name, a in actors.items()}
    for actor in actors.values():
        ray.kill(actor)
    return {
        name: {
            "runs_per_s": statistics.median(rates[name]),
            "runs_per_s_best": max(rates[name]),
            "worker_starts": pings[name]["worker_starts"],
        }
        for name in actors
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs per direct round")
    parser.add_argument("--batch", type=int, default=256, help="runs per executor call")
    parser.add_argument("--rounds", type=int, default=20, help="executor calls per path")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fxray-bench-isolation-"))
    own_tmp = None
    if "RAY_TMPDIR" not in os.environ:
        own_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fxb", dir="/tmp")
    try:
        folder, content_hash, store = _package(work)
        direct = bench_direct(folder, content_hash, args.runs)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            executor = bench_executor(work, store, content_hash, args.batch, args.rounds)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)
    ratio_executor = executor["isolated"]["runs_per_s"] / executor["in_process"]["runs_per_s"]
    ratio_direct = direct["isolated"]["runs_per_s"] / direct["in_process"]["runs_per_s"]
    results = {
        "executor": executor,
        "direct": direct,
        "isolated_share_of_in_process_throughput": {
            "executor": ratio_executor,
            "direct": ratio_direct,
        },
        "targets_met": {
            "throughput_at_least_half": ratio_executor >= 0.5,
            "warm_start_under_5ms": direct["isolated"]["warm_start_ms_p95"] < 5.0,
        },
        "batch": args.batch,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "isolation.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':34} {'in-process':>12} {'isolated':>12} {'isolated/in':>12}")
    rows = [
        ("runs/s, executor (batches)", executor, "runs_per_s", ratio_executor),
        ("runs/s, direct (no Ray)", direct, "runs_per_s", ratio_direct),
        ("CPU per run, direct, us (both procs)", direct, "cpu_us_per_run", None),
        ("warm start p50, ms", direct, "warm_start_ms_p50", None),
        ("warm start p95, ms", direct, "warm_start_ms_p95", None),
    ]
    for label, source, key, ratio in rows:
        a, b = source["in_process"][key], source["isolated"][key]
        share = f"{ratio:.0%}" if ratio is not None else ""
        print(f"{label:34} {a:12.3f} {b:12.3f} {share:>12}")
    print(f"isolated worker start (cold), p50: {direct['worker_start_ms']['p50']:.1f} ms")
    print("targets met:", results["targets_met"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
