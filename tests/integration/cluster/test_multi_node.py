"""One platform on a real multi-node Ray cluster (``ray.cluster_utils.Cluster`` on this
machine): a head that runs no work and worker nodes with different resources, the platform in
cluster mode on the real servers (PostgreSQL, Kafka, S3, the Consul KV double).

The nodes, shared by the module's tests (in file order: the last one kills nodes):

* the head: no CPU, no custom resources: nothing of fxray may land there;
* ``a``: 1 CPU, ``fxray-platform`` (routers, sinks) and ``fxray-executors``;
* ``b``: 1 CPU, ``fxray-executors`` and ``fxray-heavy`` (the heavy service's), a home of its own
  (``FXRAY_NODE_HOME``) and a package index it cannot reach (``PIP_INDEX_URL``);
* ``c``: added in the node-loss test, like ``a``, before ``a`` is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import sqlalchemy
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from fxray import Platform, Settings
from fxray.cli import app
from fxray.client import FxrayClient
from fxray.events import cloudevent as ev
from fxray.platform import PlatformError
from fxray.store.records import DEFAULT_PROJECT
from tests.integration.cluster.ray_clusters import add_worker, free_port, multi_node_cluster
from tests.integration.cluster.servers import shared_backends
from tests.integration.conftest import stop_process, write_service

pytestmark = pytest.mark.slow

PLATFORM = {"fxray-platform": 1000.0}
EXECUTORS = {"fxray-executors": 1000.0}
UNREACHABLE_INDEX = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0"}
STREAM_EVENTS = 5000


@dataclass
class Nodes:
    cluster: Any
    a: Any
    b: Any
    homes: Path
    c: Any = None

    @property
    def head_id(self) -> str:
        return str(self.cluster.head_node.node_id)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    homes = tmp_path_factory.mktemp("nodes")
    with multi_node_cluster() as cluster:
        a = add_worker(cluster, 1, {**PLATFORM, **EXECUTORS}, FXRAY_NODE_HOME=str(homes / "a"))
        b = add_worker(
            cluster,
            1,
            {**EXECUTORS, "fxray-heavy": 1.0},
            FXRAY_NODE_HOME=str(homes / "b"),
            **UNREACHABLE_INDEX,
        )
        cluster.wait_for_nodes()
        yield Nodes(cluster, a, b, homes)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Any]]:
    with shared_backends("cl") as settings:
        yield settings


@pytest.fixture(scope="module")
def platform(
    nodes: Nodes, backends: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    settings = Settings(
        home=tmp_path_factory.mktemp("platform"),
        instance=f"cl{uuid.uuid4().hex[:6]}",
        ray_address=nodes.cluster.address,
        platform_actor_resources={"fxray-platform": 0.001},
        executor_resources={"fxray-executors": 0.001},
        executors_max_per_version=4,
        executor_idle_s=3.0,
        # a router restarted by Ray rejoins under its own member id and takes its partitions
        # back at once (the test broker never expires a dead dynamic member; Kafka would after
        # session.timeout.ms)
        router_static_membership=True,
        kafka_consumer_config={"session.timeout.ms": 6000},
        **backends,
    )
    platform = Platform(settings).start()
    yield platform
    platform.stop()


def placements() -> list[tuple[str, str, str]]:
    """(class, name, node id) of every live actor of the cluster."""
    from ray._private import state

    return [
        (a["ActorClassName"], a.get("Name") or "", a["Address"]["NodeID"])
        for a in state.actors().values()
        if a["State"] == "ALIVE"
    ]


def service(tmp: Path, name: str, code: str, **manifest: Any) -> Path:
    files = {"main.py": code}
    requirements = manifest.pop("requirements", None)
    if requirements:
        files["requirements.txt"] = requirements
    return write_service(tmp, name, files, **manifest)


def wait_until(
    check: Callable[[], Any],
    timeout_s: float,
    what: str | Callable[[], str],
    every_s: float = 0.2,
) -> Any:
    """``check()``'s first true value; ``what`` (or what it returns) says what timed out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:  # a router being restarted does not answer for a moment
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what if isinstance(what, str) else what()}: not in {timeout_s}s")
        time.sleep(every_s)


# -- where things run --------------------------------------------------------------------------


def test_fxray_up_joins_the_cluster_and_places_routers_sinks_and_executors_by_resources(
    platform: Platform, nodes: Nodes, backends: dict[str, Any], tmp_path: Path
) -> None:
    """``fxray up --ray-address`` joins the running cluster (no local Ray): its router (with
    the scheduler) and its ops sink land on the node offering ``fxray-platform``, executors on
    workers, nothing on the head; ``fxray status`` shows it."""
    es_url = os.environ.get("FXRAY_TEST_ES_URL")
    if not es_url:
        pytest.fail("FXRAY_TEST_ES_URL is not set (run scripts/testinfra.sh up)", pytrace=False)
    port, key = free_port(), f"admin-{uuid.uuid4().hex}"
    instance = f"up{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        **{f"FXRAY_{k.upper()}": str(v) for k, v in backends.items() if v is not None},
        "FXRAY_HOME": str(tmp_path / "home"),
        "FXRAY_INSTANCE": instance,
        "FXRAY_EVENTS_TOPIC": f"{instance}.events",
        "FXRAY_ROUTER_GROUP": f"{instance}.routers",
        "FXRAY_ADMIN_KEY": key,
        "FXRAY_PLATFORM_ACTOR_RESOURCES": '{"fxray-platform": 0.001}',
        "FXRAY_EXECUTOR_RESOURCES": '{"fxray-executors": 0.001}',
        "FXRAY_OPS_SINK": "elasticsearch",
        "FXRAY_ES_URL": es_url,
        "FXRAY_ES_COMPAT": "opensearch",
        "FXRAY_OPS_INDEX_PREFIX": instance,
        "FXRAY_UI_ENABLED": "false",
    }
    command = [sys.executable, "-m", "fxray.cli", "up", "--port", str(port)]
    command += ["--ray-address", nodes.cluster.address]
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115 - closed below
    up = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: up.poll() is None and httpx.get(f"{url}/api/v1/health").status_code == 200,
            120,
            f"fxray up answering ({(tmp_path / 'up.log').read_text()[-2000:]})",
            every_s=0.5,
        )
        with FxrayClient(url, key) as client:
            greeter = Path(__file__).resolve().parents[3] / "examples" / "greeter"
            client.push_service(greeter, project=DEFAULT_PROJECT)
            client.send_event("demo.greet", {"name": "Ada"})
            wait_until(
                lambda: [r for r in client.runs("greeter") if r["status"] == "succeeded"],
                120,
                "the greeter run",
                every_s=0.5,
            )
            status = client.status()
        cli = CliRunner().invoke(app, ["status", "--url", url, "--key", key])
        cli_json = CliRunner().invoke(app, ["status", "--url", url, "--key", key, "--json"])
        placed = placements()
    finally:
        stop_process(up)
        log.close()
    a_id = nodes.a.node_id
    assert status["cluster_mode"] is True
    assert [r["node_id"] for r in status["routers"]] == [a_id]  # the scheduler runs in router-0
    (pool,) = [p for p in status["executors"] if p["version_id"].startswith("greeter@")]
    assert set(pool["nodes"]) <= {a_id[:12], nodes.b.node_id[:12]} and pool["actors"] >= 1
    ours = [(cls, node) for cls, name, node in placed if f".{instance}." in name]
    assert ("Router", a_id) in ours
    assert ("OpsSink", a_id) in ours
    assert all(node != nodes.head_id for _, node in ours)
    assert cli.exit_code == 0, cli.output
    assert "cluster mode, 3 nodes alive" in cli.output and "router-0" in cli.output
    assert json.loads(cli_json.output)["routers"][0]["node_id"] == a_id


def test_node_local_backends_are_refused_on_the_cluster_before_anything_starts(
    platform: Platform, nodes: Nodes, tmp_path: Path
) -> None:
    """``fxray up`` with the embedded defaults (SQLite, embedded bus, local packages and KV)
    against the three-node cluster: refused with each setting and its fix, exit code 1, no
    traceback, and no fxray actor left on the cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FXRAY_")}
    env |= {"FXRAY_HOME": str(tmp_path / "home"), "FXRAY_INSTANCE": "refused"}
    command = [sys.executable, "-m", "fxray.cli", "up", "--port", str(free_port())]
    command += ["--ray-address", nodes.cluster.address]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cluster mode (Ray has 3 nodes)" in output
    for fix in ("FXRAY_DATABASE_URL", "FXRAY_EVENT_BUS=kafka", "FXRAY_PACKAGE_STORE=s3",
                "FXRAY_KV_STORE=consul"):  # fmt: skip
        assert fix in output
    assert "Traceback" not in output
    assert not [name for _, name, _ in placements() if ".refused." in name]


@pytest.fixture(scope="module")
def heavy(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A service that asks for ``fxray-heavy`` (only node b offers it), with a requirement."""
    code = (
        "import ray, tabulate\nfrom fxray import context\n"
        "context.result = {'node': ray.get_runtime_context().get_node_id(),"
        " 'tabulate': tabulate.__version__}\n"
    )
    folder = service(
        tmp_path_factory.mktemp("heavy"),
        "heavy",
        code,
        resources={"cpus": 0.25, "custom": {"fxray-heavy": 1}},
        requirements="tabulate==0.9.0\n",
    )
    return platform.deploy(folder)


def test_a_heavy_service_runs_only_where_its_resource_is_with_its_env_from_the_store(
    platform: Platform, nodes: Nodes, heavy: Any
) -> None:
    """The manifest's custom resource places the executor on node b, which cannot reach the
    package index: the router's node built the dependency environment once, stored it in S3
    by its requirements hash, and b fetched it (no pip there)."""
    deployed = heavy
    event = platform.run("heavy")
    (run,) = platform.wait_for_runs(event_id=event["id"], timeout=240)
    assert run.status == "succeeded", run.error
    assert run.result == {"node": nodes.b.node_id, "tabulate": "0.9.0"}
    requirements_hash = deployed.version.requirements_hash
    assert (nodes.homes / "b" / "envs" / requirements_hash / ".fxray-ready").exists()
    assert (nodes.homes / "a" / "envs" / requirements_hash / ".fxray-ready").exists()
    # how b got it: fetched from the store (the executor says), and the archive is there
    sources = ray.get(platform.routers[0].__ray_call__.remote(_env_sources))
    assert sources == {deployed.version.id: ["fetched"]}
    from tests.integration.packages.conftest import client_for

    s3 = client_for(platform.settings.model_dump())
    stored = s3.stat_object(platform.settings.s3_bucket, f"envs/{requirements_hash}.tar.gz")
    assert stored.size and stored.size > 1000


def _env_sources(router: Any) -> dict[str, list[str | None]]:
    """In the router (``__ray_call__``): how each executor got its environment."""
    found: dict[str, list[str | None]] = {}
    for version_id, pool in router.pools.pools.items():
        for slot in pool.slots:
            env = ray.get(slot.handle.__ray_call__.remote(lambda e: e.node_env))
            found.setdefault(version_id, []).append(env.source if env else None)
    return found


def test_a_versions_executors_spread_over_nodes_and_follow_its_backlog(
    platform: Platform, nodes: Nodes, tmp_path: Path
) -> None:
    """24 runs of 0.4 s with a target backlog of 2 want 12 executors, capped at the manifest's
    4, spread over a and b; once idle for executor_idle_s they are retired to the minimum, 0.
    The decisions show in ``status()`` and in the desired-executors metric; an operator's
    override lowers the maximum."""
    code = "import time\nfrom fxray import context\ntime.sleep(0.4)\n"
    folder = service(
        tmp_path,
        "spread",
        code,
        resources={"cpus": 0.25},
        min_executors=0,
        max_executors=4,
        target_backlog=2,
        trigger_events=["cluster.spread"],
    )
    version = platform.deploy(folder).version
    seen: list[dict[str, Any]] = []

    def pool() -> dict[str, Any] | None:
        found = [p for p in platform.status()["executors"] if p["version_id"] == version.id]
        if found:
            seen.append(found[0])
        return found[0] if found else None

    platform.publish([ev.new_event("cluster.spread", {"i": i}, source="test") for i in range(24)])
    wait_until(lambda: (p := pool()) and p["actors"] == 4, 120, "four executors")
    runs = platform.wait_for_runs(service="spread", count=24, timeout=180)
    assert {r.status for r in runs} == {"succeeded"}
    retired = wait_until(lambda: (p := pool()) and p["actors"] == 0 and p, 60, "executors retired")
    peak = max(seen, key=lambda p: p["actors"])
    assert peak["max"] == 4 and peak["desired"] == 4 and peak["backlog"] > 8
    assert set(peak["nodes"]) == {nodes.a.node_id[:12], nodes.b.node_id[:12]}
    assert retired["started"] >= 4 and retired["retired"] == retired["started"]
    assert "retire" in " ".join(p["decision"] for p in seen)
    metrics = ray.get(platform.routers[0].run_metrics.remote())
    assert {"service": version.service, "version": version.id} in [
        {k: m[k] for k in ("service", "version")} for m in metrics["executors"]
    ]
    scaled = platform.scale("spread", max_executors=1, min_executors=1)
    assert scaled.manifest["_scaling"] == {"max_executors": 1, "min_executors": 1}
    warm = wait_until(lambda: (p := pool()) and p["actors"] == 1 and p, 60, "one warm executor")
    assert (warm["min"], warm["max"]) == (1, 1)
    with pytest.raises(PlatformError, match="more than"):
        platform.scale("spread", min_executors=3)
    platform.scale("spread", max_executors=None, min_executors=None)  # back to the manifest's


def test_a_service_no_node_can_ever_run_is_refused_at_deploy(
    platform: Platform, tmp_path: Path
) -> None:
    gpu = service(tmp_path, "gpu", "pass\n", resources={"gpus": 1})
    with pytest.raises(PlatformError) as refused:
        platform.deploy(gpu)
    message = str(refused.value)
    assert "service 'gpu' cannot be placed: no node can ever offer" in message
    assert "0.1 CPU, 1 GPU, fxray-executors: 0.001" in message  # what it asks for
    assert "fxray-heavy: 1" in message  # what the nodes offer
    huge = service(tmp_path, "huge", "pass\n", resources={"cpus": 8})
    with pytest.raises(PlatformError, match="cannot be placed"):
        platform.deploy(huge)


# -- node loss ---------------------------------------------------------------------------------


def _router_logs() -> str:
    """The routers' logs in this cluster's session (what a failed test shows)."""
    found = []
    logs = Path(os.environ["RAY_TMPDIR"]) / "ray" / "session_latest" / "logs"
    for path in sorted(logs.glob("worker-*.err")):
        text = path.read_text(errors="replace")
        if ":actor_name:Router" in text:
            found.append(f"--- {path.name}\n{text[-4000:]}")
    return "\n".join(found)


def _succeeded(platform: Platform, service_id: str) -> int:
    assert platform.store is not None
    with platform.store.engine.connect() as connection:
        return int(
            connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM runs WHERE service = :s AND status = 'succeeded'"
                ),
                {"s": service_id},
            ).scalar_one()
        )


def _emitted(settings: Settings, event_type: str) -> Counter[Any]:
    """Emitted events of ``event_type`` on the events topic, counted by the ``n`` they carry
    (one per completed execution of a run)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"count-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(settings.events_topic, timeout=10)
        partitions = list(metadata.topics[settings.events_topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(settings.events_topic, p))[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(settings.events_topic, p, 0) for p in partitions])
        counts: Counter[Any] = Counter()
        done: set[int] = {p for p, end in ends.items() if end == 0}
        while len(done) < len(partitions):
            for message in consumer.consume(1000, timeout=2):
                if message.error():
                    continue
                if message.offset() >= ends[message.partition()] - 1:
                    done.add(message.partition())
                event = ev.from_record(message.value(), message.headers())
                if event.get("type") == event_type:
                    counts[(event.get("data") or {}).get("n")] += 1
        return counts
    finally:
        consumer.close()


@pytest.mark.timeout(600)
def test_losing_nodes_in_the_middle_of_5000_events_loses_none(
    platform: Platform, nodes: Nodes, heavy: Any, tmp_path: Path
) -> None:
    """5,000 events stream through one router while node b (executors) is killed hard, node c
    joins, and node a (the router and executors) is killed hard: Ray restarts the router on c,
    it rejoins the consumer group, and every event gets its one run record, succeeded.

    At-least-once shows as executions beyond one per run: the batches in flight on b's
    executors go back to the queue (they may have run there), and the runs the router on a
    had not committed are delivered again to its restarted self (recorded runs are skipped,
    runs in flight run again). Their emitted events are counted, and bounded by what was in
    flight.
    """
    settings = platform.settings
    code = (
        "from fxray import context\n"
        "context.events.send('cluster.stream.done', {'n': context.params.get('n')})\n"
    )
    folder = service(
        tmp_path, "stream", code, resources={"cpus": 0.1}, trigger_events=["cluster.stream"]
    )
    service_id = platform.deploy(folder).service.id
    heavy_id = heavy.service.id
    events = [ev.new_event("cluster.stream", {"n": n}, source="test") for n in range(STREAM_EVENTS)]
    started = time.monotonic()
    timeline: list[tuple[float, str]] = []

    def note(what: str) -> None:
        timeline.append((round(time.monotonic() - started, 1), what))

    for i in range(0, STREAM_EVENTS, 500):
        platform.publish(events[i : i + 500])
    note("5000 events published")
    (router,) = platform.routers
    assert ray.get(router.stats.remote())["node"] == nodes.a.node_id

    wait_until(lambda: _succeeded(platform, service_id) >= 1000, 240, "1000 runs")
    note(f"kill node b at {_succeeded(platform, service_id)} runs")
    nodes.cluster.remove_node(nodes.b, allow_graceful=False)
    heavy_event = platform.run("heavy")  # its only node is gone: a clear failure, not a wait
    nodes.c = add_worker(nodes.cluster, 1, {**PLATFORM, **EXECUTORS},
                         FXRAY_NODE_HOME=str(nodes.homes / "c"))  # fmt: skip
    note("node c added")

    wait_until(lambda: _succeeded(platform, service_id) >= 2500, 240, "2500 runs")
    before = ray.get(router.stats.remote())
    note(f"kill node a (the router's) at {_succeeded(platform, service_id)} runs")
    nodes.cluster.remove_node(nodes.a, allow_graceful=False)

    after = wait_until(
        lambda: (s := ray.get(router.stats.remote(), timeout=5))["restarted"] and s,
        120,
        "the router restarted",
    )
    note(f"router restarted on node c at {_succeeded(platform, service_id)} runs")
    wait_until(
        lambda: _succeeded(platform, service_id) == STREAM_EVENTS,
        300,
        lambda: (
            f"all runs ({_succeeded(platform, service_id)}; {timeline}; {platform.stats()}"
            f"; {_router_logs()})"
        ),
        every_s=0.5,
    )
    note("all 5000 runs succeeded")
    (heavy_run,) = platform.wait_for_runs(event_id=heavy_event["id"], timeout=120)

    runs = platform.runs(service=service_id, limit=None)
    emitted = _emitted(settings, "cluster.stream.done")
    replays = sum(emitted.values()) - len(emitted)
    requeued = before["counters"].get("runs_requeued_executor_lost", 0)
    report = {
        "timeline": timeline,
        "runs": len(runs),
        "distinct events": len({r.event_id for r in runs}),
        "executions (emitted events)": sum(emitted.values()),
        "replayed executions": replays,
        "runs requeued when b died": requeued,
        "router restarts": after["counters"].get("restarts"),
    }
    print(f"\nnode loss report: {report}")
    assert len(runs) == STREAM_EVENTS
    assert {r.status for r in runs} == {"succeeded"}
    assert len({r.event_id for r in runs}) == STREAM_EVENTS
    assert set(emitted) == set(range(STREAM_EVENTS))  # every run ran to the end at least once
    # replays: at most what was in flight when a node died (b's batches, a's open runs)
    assert replays <= requeued + settings.router_max_in_flight
    assert after["node"] == nodes.c.node_id
    assert after["counters"].get("restarts") == 1
    assert heavy_run.service == heavy_id and heavy_run.status == "failed"
    assert "cannot be placed: no node can ever offer" in (heavy_run.error or "")
