"""fxray on a two-node Ray cluster: events/s end to end with one router and with two, and the
CPU each kind of process spends per event.

A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head with no
CPU and two worker nodes of 1 CPU, each offering room for one router), Kafka
(``FXRAY_KAFKA_BOOTSTRAP``) and PostgreSQL (``FXRAY_BENCH_DATABASE_URL`` or
``FXRAY_TEST_POSTGRES_URL``; a schema of its own per phase). Each phase starts a platform, deploys
the same trivial one-script service, then produces the same N events (one list, made once) to
its own topic and times them from the first produced to the last run recorded:

* ``1 router``: one router (on one worker), executors spread over both workers;
* ``2 routers``: two routers in one consumer group (one per worker), executors on both.

CPU per event is read from ``/proc/<pid>/stat`` before and after each phase, per kind of
process: routers, executors, Ray's own (raylets, GCS, workers' agents), the Kafka broker, this
PostgreSQL's backends of the phase (by ``application_name``), and this driver. On two cores the
throughput is bounded by the machine, so the per-event costs are what to read: the model at the
end predicts events/s for N nodes from them and names the limit.

Packages and service config stay on this machine's folders (``cluster_mode = false``: every
node shares them), which costs nothing per event: what is measured per event is routing,
executing, recording (PostgreSQL) and the broker.

Run: ``.venv/bin/python bench/cluster.py [--events 20000]``; writes
``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
import sqlalchemy
from confluent_kafka import Producer

from fxray import Platform, Settings
from fxray.events import cloudevent as ev
from fxray.platform import apply_ray_env_defaults

RESULTS = Path(__file__).parent / "results"
TRIVIAL = "from fxray import context\nvalue = context.params.get('i')\n"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
WORKER = {"fxray-platform": 1000.0, "fxray-executors": 1000.0}
PARTITIONS = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def two_node_cluster() -> Iterator[Any]:
    """A head with no CPU and two 1-CPU workers, in a private RAY_TMPDIR."""
    from ray.cluster_utils import Cluster

    apply_ray_env_defaults()
    tmp = tempfile.mkdtemp(prefix="fxb", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": 100 * 1024 * 1024,
            "gcs_server_port": free_port(),
            "ray_client_server_port": free_port(),
        },
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, resources=WORKER, object_store_memory=100 * 1024**2)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def schema(base: str, application: str) -> Iterator[str]:
    """A fresh PostgreSQL schema; the URL names it and tags its connections."""
    name = f"bench{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {name}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{name}&application_name={application}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes(platform: Platform, tmp: str, application: str) -> dict[str, list[int]]:
    """The pids of each kind of process of a phase."""
    routers = [ray.get(r.__ray_call__.remote(_pid)) for r in platform.routers]
    executors = [
        pid for r in platform.routers for pid in ray.get(r.__ray_call__.remote(_executor_pids))
    ]
    ours = set(routers) | set(executors) | {os.getpid()}
    ray_own = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and int(p) not in ours and tmp in _cmdline(int(p))
    ]
    port = os.environ.get("FXRAY_KAFKA_BOOTSTRAP", "").rsplit(":", 1)[-1]
    broker = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and "noida-db" in (c := _cmdline(int(p))) and f"--kafka-port {port}" in c
    ]
    assert platform.store is not None
    with platform.store.engine.connect() as conn:
        database = [
            int(row[0])
            for row in conn.execute(
                sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                {"a": application},
            )
        ]
    return {
        "routers": routers,
        "executors": executors,
        "ray (raylets, gcs, agents)": ray_own,
        "kafka broker": broker,
        "postgresql backends": database,
        "driver (this process)": [os.getpid()],
    }


def _pid(actor: Any) -> int:
    return os.getpid()


def _executor_pids(router: Any) -> list[int]:
    return [
        ray.get(slot.handle.__ray_call__.remote(_pid))
        for pool in router.pools.pools.values()
        for slot in pool.slots
    ]


def _recorded(platform: Platform) -> int:
    assert platform.store is not None
    with platform.store.engine.connect() as conn:
        return int(
            conn.execute(
                sqlalchemy.text("SELECT count(*) FROM runs WHERE status = 'succeeded'")
            ).scalar_one()
        )


def phase(
    cluster: Any,
    work: Path,
    routers: int,
    events: list[dict[str, Any]],
    database: str,
    tmp: str,
) -> dict[str, Any]:
    """One phase: a platform with ``routers`` routers, the events, the figures."""
    application = f"fxbench{uuid.uuid4().hex[:6]}"
    with schema(database, application) as url:
        instance = f"b{routers}{uuid.uuid4().hex[:6]}"
        settings = Settings(
            home=work / instance,
            instance=instance,
            ray_address=cluster.address,
            cluster_mode=False,  # one machine: packages and config stay in its folders
            database_url=url,
            event_bus="kafka",
            kafka_bootstrap=os.environ["FXRAY_KAFKA_BOOTSTRAP"],
            events_topic=f"{instance}.events",
            deadletter_topic=f"{instance}.deadletter",
            bus_partitions=PARTITIONS,
            routers=routers,
            # one router per worker: each asks for more than half of what a worker offers
            platform_actor_resources={"fxray-platform": 600.0},
            executor_resources={"fxray-executors": 0.001},
            executor_cpus=0.25,
            executors_max_per_version=2,
        )
        folder = work / f"svc-{instance}"
        folder.mkdir(parents=True)
        (folder / "main.py").write_text(TRIVIAL)
        manifest = {"name": "bench", "entrypoint": "main.py", "trigger_events": ["bench.ping"]}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with Platform(settings) as platform:
            platform.deploy(folder)
            warm = ev.new_event("bench.ping", {"i": -1}, source="bench")
            platform.publish([warm])  # executors started and the groups joined, before timing
            platform.wait_for_runs(event_id=warm["id"], timeout=180)
            time.sleep(2.0)
            pids = processes(platform, tmp, application)
            before = {kind: sum(cpu_seconds(p) for p in found) for kind, found in pids.items()}
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
            started = time.perf_counter()
            for event in events:
                value, headers = ev.to_record(event)
                producer.produce(
                    settings.events_topic, value, key=str(event["data"]["i"]), headers=headers
                )
                producer.poll(0)
            producer.flush()
            target = len(events) + 1
            while _recorded(platform) < target:
                if time.perf_counter() - started > 900:
                    raise TimeoutError(f"{_recorded(platform)} of {target} runs in 900 s")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            pids = processes(platform, tmp, application)  # executors may have been added
            after = {kind: sum(cpu_seconds(p) for p in found) for kind, found in pids.items()}
            placement = [ray.get(r.stats.remote())["node"][:8] for r in platform.routers]
    n = len(events)
    cpu_us = {kind: round((after[kind] - before.get(kind, 0.0)) / n * 1e6, 1) for kind in after}
    return {
        "routers": routers,
        "router nodes": placement,
        "events": n,
        "seconds": round(elapsed, 2),
        "events_per_s": round(n / elapsed),
        "cpu_us_per_event": cpu_us,
        "cpu_us_per_event_total": round(sum(cpu_us.values()), 1),
    }


def model(results: list[dict[str, Any]], cores_per_node: int = 2) -> list[dict[str, Any]]:
    """Events/s predicted for N nodes of ``cores_per_node`` cores, one router per node up to
    the partitions, from the measured per-event CPU of the 2-router phase: each router is one
    Python process (one core at most), executors and Ray's own work spread over the nodes, the
    database and the broker are one server each (here: one core each, the rest of the
    machine being the nodes')."""
    cost = results[-1]["cpu_us_per_event"]
    router = cost["routers"] / 1e6
    spread = (cost["executors"] + cost["ray (raylets, gcs, agents)"]) / 1e6
    database = max(cost["postgresql backends"], 1.0) / 1e6
    broker = max(cost["kafka broker"], 1.0) / 1e6
    rows = []
    for nodes in (1, 2, 4, 8, 16):
        routers = min(nodes, PARTITIONS)
        limits = {
            "routers (1 core each, at most one per partition)": routers / router,
            "node CPUs (routers, executors, Ray)": nodes * cores_per_node / (router + spread),
            "database (1 core)": 1 / database,
            "broker (1 core)": 1 / broker,
        }
        limit, value = min(limits.items(), key=lambda item: item[1])
        rows.append(
            {"nodes": nodes, "routers": routers, "events_per_s": round(value), "limit": limit}
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    database = os.environ.get("FXRAY_BENCH_DATABASE_URL") or os.environ.get(
        "FXRAY_TEST_POSTGRES_URL"
    )
    if not database or not os.environ.get("FXRAY_KAFKA_BOOTSTRAP"):
        print("set FXRAY_KAFKA_BOOTSTRAP and FXRAY_TEST_POSTGRES_URL (source .infra/env)")
        return 2
    events = [ev.new_event("bench.ping", {"i": i}, source="bench") for i in range(args.events)]
    work = Path(tempfile.mkdtemp(prefix="fxbench-"))
    results = []
    try:
        with two_node_cluster() as cluster:
            tmp = os.environ["RAY_TMPDIR"]
            for routers in (1, 2):
                results.append(phase(cluster, work, routers, events, database, tmp))
                print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    predicted = model(results)
    report = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "phases": results,
        "model": predicted,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"\nfxray on a two-node Ray cluster ({report['machine']}, {report['when']})")
    kinds = list(report["phases"][0]["cpu_us_per_event"])
    print(f"{'':42}" + "".join(f"{p['routers']} router(s)".rjust(14) for p in report["phases"]))
    print(f"{'events/s':42}" + "".join(f"{p['events_per_s']:>14}" for p in report["phases"]))
    for kind in kinds:
        row = "".join(f"{p['cpu_us_per_event'][kind]:>14}" for p in report["phases"])
        print(f"{'CPU µs/event, ' + kind:42}" + row)
    total = "".join(f"{p['cpu_us_per_event_total']:>14}" for p in report["phases"])
    print(f"{'CPU µs/event, all':42}" + total)
    print("\nmodel: events/s for N nodes of 2 cores (from the 2-router phase's costs)")
    for row in report["model"]:
        print(f"  {row['nodes']:>2} nodes, {row['routers']} routers: ~{row['events_per_s']} ev/s"
              f" (limit: {row['limit']})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
