"""Throughput of the ops pipeline: Kafka ops topics -> ops sink actor(s) -> Elasticsearch
``_bulk`` and the run rows of the management database. Log records and run lifecycle records
are produced to the ops topics while the sink runs; the clock stops when every document is
searchable (counted after a refresh), and, for the runs, when every run row is final.

Run (Kafka and an Elasticsearch-API server, e.g. from ``scripts/testinfra.sh up``)::

    source .infra/env
    .venv/bin/python bench/ops.py [--logs 20000] [--runs 5000] [--sinks 1] \
        [--bootstrap HOST:PORT] [--es-url URL] [--es-compat opensearch|elasticsearch] \
        [--database-url URL]   # default: SQLite in a temporary folder
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
from elasticsearch import NotFoundError

from fxray import ops
from fxray.bus.kafka import KafkaBus
from fxray.ops.elastic import EsConfig
from fxray.ops.sink import start_sink
from fxray.platform import apply_ray_env_defaults
from fxray.runtime.runs import RunResult, RunSpec, RunStatus
from fxray.settings import Settings
from fxray.store import StateStore

BATCH = 1000
LINES_PER_RUN = 100


def _spec(run_id: str, i: int) -> RunSpec:
    event = {"id": f"ev-{run_id}", "type": "bench.ops", "source": "bench"}
    return RunSpec(
        run_id=run_id,
        service=f"svc{i % 5}",
        version_id=f"svc{i % 5}@bench",
        package_hash="bench",
        steps=["main.py"],
        event=event,
        correlation_id=event["id"],
        trigger_id="bench",
        created_at=time.time(),
    )


def _count(es: object, alias: str, query: dict[str, Any] | None = None) -> int:
    try:
        es.indices.refresh(index=alias)  # type: ignore[attr-defined]
        answer = es.count(index=alias, query=query or {"match_all": {}})  # type: ignore[attr-defined]
        return int(answer["count"])
    except NotFoundError:
        return 0


def _drain(
    es: object, alias: str, expected: int, timeout: float, query: dict[str, Any] | None = None
) -> float:
    """Seconds until ``expected`` documents (matching ``query``) are searchable in ``alias``."""
    t0 = time.perf_counter()
    while _count(es, alias, query) < expected:
        if time.perf_counter() - t0 > timeout:
            found = _count(es, alias, query)
            raise TimeoutError(f"{alias}: {found} of {expected} after {timeout}s")
        time.sleep(0.05)
    return time.perf_counter() - t0


def _rows_final(store: StateStore, expected: int, timeout: float) -> float:
    """Seconds (from now) until ``expected`` run rows are final (succeeded)."""
    t0 = time.perf_counter()
    while store.count_runs(status="succeeded") < expected:
        if time.perf_counter() - t0 > timeout:
            found = store.count_runs(status="succeeded")
            raise TimeoutError(f"run rows: {found} of {expected} final after {timeout}s")
        time.sleep(0.05)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logs", type=int, default=20_000, help="log records")
    parser.add_argument("--runs", type=int, default=5_000, help="runs (4 records each)")
    parser.add_argument("--sinks", type=int, default=1)
    parser.add_argument("--bootstrap", default=os.environ.get("FXRAY_KAFKA_BOOTSTRAP", ""))
    parser.add_argument("--es-url", default=os.environ.get("FXRAY_TEST_ES_URL", ""))
    parser.add_argument("--es-compat", default="opensearch")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--database-url", default="", help="the management database")
    args = parser.parse_args()
    if not args.bootstrap or not args.es_url:
        parser.error("needs --bootstrap and --es-url (or FXRAY_KAFKA_BOOTSTRAP/FXRAY_TEST_ES_URL)")

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="fxray-bench-ops-")),
        instance=f"b{tag}",
        event_bus="kafka",
        kafka_bootstrap=args.bootstrap,
        ops_runs_topic=f"bench.ops.runs.{tag}",
        ops_logs_topic=f"bench.ops.logs.{tag}",
        ops_sink="elasticsearch",
        ops_sinks=args.sinks,
        es_url=args.es_url,
        es_compat=args.es_compat,
        ops_index_prefix=f"bench{tag}",
        **({"database_url": args.database_url} if args.database_url else {}),
    )
    apply_ray_env_defaults()
    own_tmp = None
    if "RAY_TMPDIR" not in os.environ:
        own_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fxr", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    bus = KafkaBus(args.bootstrap, default_partitions=settings.bus_partitions)
    config = EsConfig.from_settings(settings)
    es = config.client(retries=2)
    store = StateStore(settings.database_url)
    try:
        for topic in (settings.ops_runs_topic, settings.ops_logs_topic):
            bus.ensure_topic(topic, settings.bus_partitions)
        sinks = [start_sink(settings, bus, i, store) for i in range(args.sinks)]
        # warm up: the templates are installed with the first write
        warm = _spec(f"warm-{tag}", 0)
        bus.produce(settings.ops_runs_topic, [ops.encode(ops.queued(warm))])
        _drain(es, config.runs_alias, 1, 60)

        rows = []
        # log lines
        logs = []
        for i in range(args.logs):
            spec = _spec(f"log-{tag}-{i // LINES_PER_RUN}", i // LINES_PER_RUN)
            line = (time.time(), "INFO", "main.py", f"bench line {i} of the ops pipeline")
            logs.append(ops.encode(ops.log_record(spec, i % LINES_PER_RUN, line)))
        t0 = time.perf_counter()
        for start in range(0, len(logs), BATCH):
            bus.produce(settings.ops_logs_topic, logs[start : start + BATCH])
        produced = time.perf_counter() - t0
        total = produced + _drain(es, config.logs_alias, args.logs, args.timeout)
        rows.append(("log lines", args.logs, args.logs, produced, total))

        # run lifecycle records: queued, started, finished (the executor's) and final (the
        # router's) per run; one summary doc per run, one row per run in the database
        records = []
        for i in range(args.runs):
            spec = _spec(f"run-{tag}-{i}", i)
            now = time.time()
            result = RunResult(spec.run_id, RunStatus.SUCCEEDED, now, now + 0.01)
            records += [
                ops.encode(ops.queued(spec)),
                ops.encode(ops.lifecycle(spec, ops.STARTED, status="running")),
                ops.encode(ops.finished(spec, result, log_lines=0)),
                ops.encode(ops.final(spec, result, logs=[])),
            ]
        t0 = time.perf_counter()
        for start in range(0, len(records), BATCH):
            bus.produce(settings.ops_runs_topic, records[start : start + BATCH])
        produced = time.perf_counter() - t0
        # done when every run's document holds its last state (finished)
        finished = {"term": {"state": "finished"}}
        searchable = _drain(es, config.runs_alias, args.runs, args.timeout, finished)
        rows.append(("run records", len(records), args.runs, produced, produced + searchable))
        # the database lane ran alongside: the wait goes on from where the search ended
        final = _rows_final(store, args.runs, args.timeout - searchable)
        total = produced + searchable + final
        rows.append(("run rows (database)", len(records), args.runs, produced, total))

        counters = [ray.get(s.stats.remote())["lanes"] for s in sinks]
        print(f"\nops pipeline into {args.es_url} ({args.sinks} sink(s), 4 partitions)\n")
        print("| what | records | documents/rows | produce s | until written s | records/s |")
        print("|---|---|---|---|---|---|")
        for what, n, docs, produce_s, total_s in rows:
            rate = n / total_s
            print(f"| {what} | {n} | {docs} | {produce_s:.2f} | {total_s:.2f} | {rate:,.0f} |")
        print(f"\nsink counters: {counters}")
        for sink in sinks:
            ray.get(sink.stop.remote())
    finally:
        for topic in (settings.ops_runs_topic, settings.ops_logs_topic):
            bus.delete_topic(topic)
        for alias in (config.runs_alias, config.logs_alias):
            try:
                es.indices.delete(index=f"{alias}-*")
                es.indices.delete_index_template(name=alias)
            except Exception:
                pass
        bus.close()
        store.close()
        ray.shutdown()
        shutil.rmtree(settings.home, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
