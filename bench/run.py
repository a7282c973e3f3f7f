"""The throughput and latency benchmark: Kafka -> router -> executors -> run recorded.

In one run, on the same events (CloudEvents, structured JSON, ~250 bytes):

1. ``kafka_consume_eps``: plain confluent-kafka consumption of N events in one process (the limit);
2. ``naive_ray_eps``: one Ray actor call per event to a pool of 2 async actors running the same
   trivial function, with bounded in-flight calls (the baseline fxray must beat);
3. ``fxray_eps``: fxray end to end: Kafka -> router -> executor -> a trivial one-script service
   -> run recorded in the state store -> offset committed;
4. ``latency_ms``: fxray at fixed offered loads, produce -> run finished, p50/p95/p99, after
   2 s of the same load as a warm-up (the steady state);
5. ``peak_rss_mb``: peak resident memory of the platform's processes (router and executor
   actors) during 3.

Writes ``bench/results/latest.json`` and prints a table. Uses the broker at
``FXRAY_KAFKA_BOOTSTRAP`` or starts a fresh noida-db broker for each phase (and stops it).

Run: ``make bench`` or ``.venv/bin/python bench/run.py [--events N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
from confluent_kafka import Consumer, Producer
from sqlalchemy import select

from fxray import Platform, Settings
from fxray.bus.kafka import KafkaBus
from fxray.events import cloudevent as ev
from fxray.platform import apply_ray_env_defaults
from fxray.store.models import EventRow, RunRow

RESULTS = Path(__file__).parent / "results"
TRIVIAL = "from fxray import context\nvalue = context.params.get('i')\n"


def trivial(event: dict[str, Any]) -> int:
    """The work of the trivial service, for the naive baseline."""
    return event["data"]["i"]


# -- broker --------------------------------------------------------------------------------------


@contextlib.contextmanager
def broker(work: Path) -> Iterator[str]:
    """A Kafka broker for one phase: ``FXRAY_KAFKA_BOOTSTRAP`` if set, else a fresh noida-db.

    noida-db rewrites its whole store on every write, so a store filled by one phase would
    slow the next; each phase gets an empty one (a real Kafka has no such effect).
    """
    bootstrap = os.environ.get("FXRAY_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    import noida_db

    binary = Path(noida_db.__file__).parent / "noida-db"
    binary.chmod(0o755)
    port = 19000 + (os.getpid() + int(time.time())) % 900
    data = Path(tempfile.mkdtemp(prefix="kafka", dir=work))
    with open(data / "broker.log", "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "start", "--only", "kafka", "--host", "127.0.0.1",
             "--kafka-port", str(port), "--data-dir", str(data)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            bootstrap = f"127.0.0.1:{port}"
            bus = KafkaBus(bootstrap)
            deadline = time.monotonic() + 20
            while True:
                try:
                    bus.ensure_topic("bench.probe", 1)
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the benchmark's Kafka broker did not start") from None
                    time.sleep(0.2)
            yield bootstrap
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(data, ignore_errors=True)


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for event in events:
        value, headers = ev.to_record(event)
        producer.produce(topic, value, headers=headers)
        producer.poll(0)
    producer.flush(30)


def make_events(n: int, type_: str = "bench.ping") -> list[dict[str, Any]]:
    return [ev.new_event(type_, {"i": i, "payload": "x" * 64}) for i in range(n)]


# -- 1. the limit --------------------------------------------------------------------------------


def _consumer(bootstrap: str, topic: str) -> Consumer:
    """A consumer of ``topic`` from its start, in a group of its own."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def bench_consume(bootstrap: str, n: int) -> float:
    topic = f"bench.consume.{uuid.uuid4().hex[:6]}"
    KafkaBus(bootstrap).ensure_topic(topic, 4)
    produce(bootstrap, topic, make_events(n))
    consumer = _consumer(bootstrap, topic)
    got = 0
    started = None
    while got < n:
        batch = consumer.consume(1000, 1.0)
        if batch and started is None:
            started = time.perf_counter()
        got += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return n / elapsed


# -- 2. the naive baseline -----------------------------------------------------------------------


@ray.remote(num_cpus=0)
class NaiveWorker:
    async def handle(self, value: bytes) -> int:
        return trivial(json.loads(value))


def bench_naive(bootstrap: str, n: int, window: int = 1000) -> float:
    topic = f"bench.naive.{uuid.uuid4().hex[:6]}"
    KafkaBus(bootstrap).ensure_topic(topic, 4)
    produce(bootstrap, topic, make_events(n))
    workers = [NaiveWorker.remote() for _ in range(2)]
    ray.get([w.handle.remote(ev.to_json(ev.new_event("x", {"i": 0}))) for w in workers])
    consumer = _consumer(bootstrap, topic)
    in_flight: list[Any] = []
    done = sent = 0
    started = None
    while done < n:
        for msg in consumer.consume(500, 0.2 if sent < n else 0):
            if msg.error() is not None:
                continue
            started = started or time.perf_counter()
            in_flight.append(workers[sent % 2].handle.remote(msg.value()))
            sent += 1
            if len(in_flight) >= window:
                ready, in_flight = ray.wait(in_flight, num_returns=window // 2)
                done += len(ready)
        if sent >= n and in_flight:
            ready, in_flight = ray.wait(in_flight, num_returns=len(in_flight))
            done += len(ready)
    consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    for worker in workers:
        ray.kill(worker)
    return n / elapsed


# -- 3 and 4. fxray ------------------------------------------------------------------------------


class RssSampler:
    """Peak summed RSS of the platform's actor processes (router, executors)."""

    MARKERS = ("ray::Router", "ray::ExecutorActor")

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            total = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if not any(m.encode() in cmdline for m in self.MARKERS):
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except OSError:
                    continue
            self.peak_mb = max(self.peak_mb, total / 1024)


def _service(work: Path) -> Path:
    folder = work / "trivial"
    folder.mkdir(exist_ok=True)
    manifest = {"name": "trivial", "entrypoint": "main.py", "trigger_events": ["bench.ping"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(TRIVIAL)
    return folder


def bench_fxray(platform: Platform, bootstrap: str, n: int) -> tuple[float, float]:
    events = make_events(n)
    with RssSampler() as rss:
        started = time.perf_counter()
        produce(bootstrap, platform.settings.events_topic, events)
        platform.wait_idle(timeout=600)
        elapsed = time.perf_counter() - started
    store = platform.store
    assert store is not None
    finished = store.count_runs(status="succeeded")
    return finished / elapsed, rss.peak_mb


def bench_latency(
    platform: Platform, bootstrap: str, rate: int, seconds: float, warmup_s: float = 2.0
) -> dict[str, float]:
    """Offer ``rate`` events/s for ``warmup_s`` then ``seconds``; latency = run finished -
    event created, of the events after the warm-up (the platform at its steady state: executors
    started for the load, caches warm)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    marker = uuid.uuid4().hex[:8]
    warm = int(rate * warmup_s)
    total = int(rate * seconds)
    started = time.perf_counter()
    for i in range(warm + total):
        due = started + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        tag = marker if i >= warm else "warm-up"
        event = ev.new_event("bench.ping", {"i": i, "marker": tag})
        value, headers = ev.to_record(event)
        producer.produce(platform.settings.events_topic, value, headers=headers)
        producer.poll(0)
    producer.flush(30)
    platform.wait_idle(timeout=300)
    store = platform.store
    assert store is not None
    latencies = []
    with store.session() as session:
        rows = session.execute(
            select(RunRow.finished_at, EventRow.time, EventRow.body)
            .join(EventRow, EventRow.id == RunRow.event_id)
            .where(RunRow.service == "trivial")
        ).all()
    for finished_at, created, body in rows:
        if body.get("data", {}).get("marker") != marker or finished_at is None:
            continue
        created_at = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        latencies.append((finished_at - created_at) * 1000)
    latencies.sort()
    if len(latencies) < total:
        raise RuntimeError(f"only {len(latencies)} of {total} runs finished")

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return {
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
        "mean": round(statistics.mean(latencies), 2),
    }


@contextlib.contextmanager
def _platform(work: Path, bootstrap: str) -> Iterator[Platform]:
    """A platform on ``bootstrap`` with the trivial service deployed and warm."""
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        home=work / f"home-{tag}",
        instance=f"b{tag}",
        event_bus="kafka",
        kafka_bootstrap=bootstrap,
        events_topic=f"bench.events.{tag}",
        deadletter_topic=f"bench.dlq.{tag}",
    )
    with Platform(settings) as platform:
        platform.deploy(_service(work))
        warm = platform.send("bench.ping", {"i": -1})
        platform.wait_for_runs(event_id=warm["id"], timeout=120)
        yield platform


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rates", default="200,1000", help="offered loads for latency, events/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per offered load")
    args = parser.parse_args()
    apply_ray_env_defaults()
    work = Path(tempfile.mkdtemp(prefix="fxb"))
    os.environ.setdefault("RAY_TMPDIR", str(work / "ray"))
    result: dict[str, Any] = {"events": args.events}
    try:
        print(f"{args.events} events per phase; a fresh broker per phase", flush=True)
        with broker(work) as bootstrap:
            result["kafka_consume_eps"] = round(bench_consume(bootstrap, args.events), 1)
        print(f"1. plain confluent-kafka consume   {result['kafka_consume_eps']:>10,.0f} ev/s")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with broker(work) as bootstrap:
            result["naive_ray_eps"] = round(bench_naive(bootstrap, args.events), 1)
        print(f"2. naive: one actor call per event {result['naive_ray_eps']:>10,.0f} ev/s")
        with broker(work) as bootstrap, _platform(work, bootstrap) as platform:
            eps, peak = bench_fxray(platform, bootstrap, args.events)
        result["fxray_eps"] = round(eps, 1)
        result["peak_rss_mb"] = round(peak, 1)
        print(f"3. fxray end to end                {eps:>10,.0f} ev/s  (peak RSS {peak:.0f} MB)")
        result["latency_ms"] = {}
        for rate in (int(r) for r in args.rates.split(",")):
            with broker(work) as bootstrap, _platform(work, bootstrap) as platform:
                figures = bench_latency(platform, bootstrap, rate, args.seconds)
            result["latency_ms"][str(rate)] = figures
            print(
                f"4. latency at {rate:>5} ev/s  p50 {figures['p50']:7.2f} ms  "
                f"p95 {figures['p95']:7.2f} ms  p99 {figures['p99']:7.2f} ms",
                flush=True,
            )
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["fxray_vs_naive"] = round(result["fxray_eps"] / result["naive_ray_eps"], 2)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "ray": ray.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
