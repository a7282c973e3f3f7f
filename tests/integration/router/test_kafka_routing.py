"""fxray on a real Kafka-protocol broker: content modes, foreign producers, bad records,
rebalances, a killed router, a restarted broker, and backpressure with slow services."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from confluent_kafka import Producer

from fxray import Platform
from fxray.events import cloudevent as ev

BOOTSTRAP = os.environ.get("FXRAY_KAFKA_BOOTSTRAP", "")


@pytest.fixture
def kafka_platform(make_platform: Callable[..., Platform]) -> Callable[..., Platform]:
    """A platform on Kafka with topics of its own."""
    if not BOOTSTRAP:
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail("FXRAY_KAFKA_BOOTSTRAP is not set (run through `make test`)")
        pytest.skip("no Kafka broker: run through `make test`")

    def make(bootstrap: str = BOOTSTRAP, **overrides: Any) -> Platform:
        tag = uuid.uuid4().hex[:8]
        return make_platform(
            event_bus="kafka",
            kafka_bootstrap=bootstrap,
            events_topic=f"fx.it.events.{tag}",
            deadletter_topic=f"fx.it.dlq.{tag}",
            **overrides,
        )

    return make


def _producer(bootstrap: str = BOOTSTRAP) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_structured_binary_and_sdk_events_route_the_same(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    from cloudevents.core.bindings import kafka as binding
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    platform = kafka_platform()
    code = "from fxray import context\ncontext.result = context.params['via']\n"
    platform.deploy(service_dir("modes", {"m.py": code}, trigger_events=["mode.test"]))
    topic = platform.settings.events_topic
    producer = _producer()
    ids = []
    for mode in ("structured", "binary"):
        event = ev.new_event("mode.test", {"via": f"fxray-{mode}"})
        value, headers = ev.to_record(event, mode)
        producer.produce(topic, value, headers=headers)
        ids.append(event["id"])
    for name, convert in (
        ("sdk-structured", binding.to_structured),
        ("sdk-binary", binding.to_binary),
    ):
        sdk_event = CloudEvent({"type": "mode.test", "source": "/sdk"}, {"via": name})
        message = convert(sdk_event, JSONFormat())
        producer.produce(
            topic, message.value, key=message.key, headers=list(message.headers.items())
        )
        ids.append(sdk_event.get_id())
    producer.flush(10)
    platform.wait_idle(timeout=60)
    runs = platform.runs(service="modes", limit=None)
    assert sorted(r.result for r in runs) == sorted(
        ["fxray-structured", "fxray-binary", "sdk-structured", "sdk-binary"]
    )
    assert {r.event_id for r in runs} == set(ids)


def test_events_written_by_kcat_are_routed(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail("kcat is not installed (scripts/testinfra.sh installs it)")
        pytest.skip("kcat is not installed")
    platform = kafka_platform()
    code = "from fxray import context\ncontext.result = context.params['n']\n"
    platform.deploy(service_dir("kc", {"k.py": code}, trigger_events=["kcat.hello"]))
    event_id = f"kcat-{uuid.uuid4().hex[:8]}"
    headers = [
        "-H", "ce_specversion=1.0", "-H", "ce_type=kcat.hello", "-H", f"ce_id={event_id}",
        "-H", "ce_source=/kcat", "-H", "content-type=application/json",
    ]  # fmt: skip
    subprocess.run(
        [kcat, "-P", "-b", BOOTSTRAP, "-t", platform.settings.events_topic, *headers],
        input=b'{"n": 42}',
        check=True,
        timeout=30,
    )
    structured = json.dumps(
        {"specversion": "1.0", "type": "kcat.hello", "id": event_id + "-s", "source": "/kcat",
         "data": {"n": 43}}
    )  # fmt: skip
    subprocess.run(
        [kcat, "-P", "-b", BOOTSTRAP, "-t", platform.settings.events_topic],
        input=structured.encode(),
        check=True,
        timeout=30,
    )
    runs = platform.wait_for_runs(service="kc", count=2, timeout=60)
    assert sorted(r.result for r in runs) == [42, 43]


def test_malformed_records_are_dead_lettered_and_routing_goes_on(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = kafka_platform(max_event_bytes=10_000)
    platform.deploy(service_dir("fine", {"f.py": "pass\n"}, trigger_events=["ok.event"]))
    topic = platform.settings.events_topic
    producer = _producer()
    bad = {
        b"{not json": "not JSON",
        b'{"specversion": "0.3", "id": "1", "type": "t", "source": "s"}': "specversion",
        b'{"specversion": "1.0", "type": "t", "source": "s"}': "'id'",
        b'"just a string"': "JSON object",
        b'{"specversion":"1.0","id":"x","type":"t","source":"s","data":"'
        + b"y" * 20_000
        + b'"}': "over",
    }
    for value in bad:
        producer.produce(topic, value, headers=[("trace", b"abc")])
    good = ev.new_event("ok.event", {})
    producer.produce(topic, ev.to_json(good))
    producer.flush(10)
    platform.wait_for_runs(event_id=good["id"], timeout=60)
    platform.wait_idle(timeout=60)

    letters = platform.bus.read(platform.settings.deadletter_topic, 0, 0, 100)
    assert len(letters) == len(bad)
    for letter in letters:
        headers = dict(letter.headers)
        assert letter.value in bad
        assert bad[letter.value] in headers["fxray_dlq_reason"].decode()
        assert headers["trace"] == b"abc"
        assert headers["fxray_dlq_topic"] == topic.encode()
        assert int(headers["fxray_dlq_offset"]) >= 0

    # the command line lists them and sends one back (still bad: it is dead-lettered again)
    from typer.testing import CliRunner

    from fxray.cli import app

    env = {
        "FXRAY_EVENT_BUS": "kafka",
        "FXRAY_KAFKA_BOOTSTRAP": platform.settings.kafka_bootstrap,
        "FXRAY_EVENTS_TOPIC": topic,
        "FXRAY_DEADLETTER_TOPIC": platform.settings.deadletter_topic,
    }
    listed = CliRunner().invoke(app, ["deadletters", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.count(f"from {topic}:") == len(bad)
    position = f"0:{letters[0].offset}"
    replayed = CliRunner().invoke(app, ["deadletters", "replay", position], env=env)
    assert replayed.exit_code == 0 and "re-sent as it was" in replayed.output, replayed.output
    _wait_for(
        lambda: (
            len(platform.bus.read(platform.settings.deadletter_topic, 0, 0, 100)) == len(bad) + 1
        ),
        timeout=30,
        what="the replayed bad record did not come back",
    )
    bad_position = CliRunner().invoke(app, ["deadletters", "replay", "zero"], env=env)
    assert bad_position.exit_code == 2 and "Traceback" not in bad_position.output


def _flow(platform: Platform, count: int, pace_s: float) -> tuple[list[str], threading.Thread]:
    sent: list[str] = []

    def produce() -> None:
        producer = _producer(platform.settings.kafka_bootstrap)
        for n in range(count):
            event = ev.new_event("flow.step", {"n": n})
            producer.produce(platform.settings.events_topic, ev.to_json(event))
            sent.append(event["id"])
            producer.poll(0)
            time.sleep(pace_s)
        producer.flush(30)

    thread = threading.Thread(target=produce)
    thread.start()
    return sent, thread


def test_two_routers_share_partitions_and_lose_nothing_on_rebalance(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = kafka_platform()
    platform.deploy(service_dir("step", {"s.py": "pass\n"}, trigger_events=["flow.step"]))
    sent, producer = _flow(platform, 800, 0.005)
    time.sleep(1.0)
    platform.add_router()
    time.sleep(3.0)
    platform.remove_router()
    producer.join(timeout=60)
    platform.wait_idle(timeout=120)
    ran = [r.event_id for r in platform.runs(service="step", limit=None)]
    assert set(ran) == set(sent), f"{len(set(sent) - set(ran))} events lost"
    assert len(ran) == len(set(ran)), "a run record was written twice"


def test_a_killed_router_is_restarted_and_every_event_still_runs(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    # static membership: the restarted router takes its partitions back at once (the test
    # broker never expires a dead member, so a dynamic one would hold them for good)
    platform = kafka_platform(router_static_membership=True)
    code = (
        "from fxray import context\n"
        "context.state.update(context.event['id'], lambda n: (n or 0) + 1)\n"
    )
    platform.deploy(service_dir("victim", {"v.py": code}, trigger_events=["flow.step"]))
    sent, producer = _flow(platform, 600, 0.005)
    time.sleep(1.0)
    router = platform.routers.pop()
    ray.kill(router, no_restart=True)  # no goodbye, no commit of what it had finished
    platform.add_router()  # router-0 again, with the same member id
    producer.join(timeout=60)
    _wait_for(
        lambda: (
            {r.event_id for r in platform.runs(service="victim", status="succeeded", limit=None)}
            >= set(sent)
        ),
        timeout=120,
        what="not every event ran after the router was killed",
    )
    platform.wait_idle(timeout=60)
    runs = platform.runs(service="victim", limit=None)
    assert {r.event_id for r in runs} == set(sent)
    assert all(r.status == "succeeded" for r in runs)
    from fxray.kv import ServiceState

    executions = ServiceState(platform.kv, "victim")
    # at least once: every event ran; a few may have run twice around the kill
    counts = [executions.get(event_id) for event_id in sent]
    assert min(counts) >= 1
    assert sum(counts) - len(sent) < 600


@pytest.fixture
def own_broker() -> Iterator[Callable[[], str]]:
    """A broker of this test's own, with a data dir that survives its restarts."""
    import noida_db

    binary = Path(noida_db.__file__).parent / "noida-db"
    data = Path(tempfile.mkdtemp(prefix="fxk"))
    port = 20000 + os.getpid() % 1000 + int(uuid.uuid4().int % 500)
    procs: list[subprocess.Popen[bytes]] = []
    log = open(data / "broker.log", "ab")  # noqa: SIM115 - closed at the end

    def start() -> str:
        proc = subprocess.Popen(
            [str(binary), "start", "--only", "kafka", "--host", "127.0.0.1",
             "--kafka-port", str(port), "--data-dir", str(data)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        from fxray.bus.kafka import KafkaBus

        bootstrap = f"127.0.0.1:{port}"
        _wait_for(lambda: _reachable(KafkaBus(bootstrap)), 20, "broker did not start")
        assert proc.poll() is None, "the broker exited (port taken?)"
        return bootstrap

    def _reachable(bus: Any) -> bool:
        try:
            bus.ensure_topic("probe", 1)
            return True
        except Exception:
            return False

    start.stop = lambda: [p.terminate() or p.wait(10) for p in procs if p.poll() is None]  # type: ignore[attr-defined]
    yield start
    start.stop()  # type: ignore[attr-defined]
    log.close()
    print((data / "broker.log").read_text()[-2000:])
    shutil.rmtree(data, ignore_errors=True)


def test_broker_restart_with_persistence_loses_nothing(
    kafka_platform: Callable[..., Platform],
    service_dir: Callable[..., Path],
    own_broker: Callable[[], str],
) -> None:
    bootstrap = own_broker()
    platform = kafka_platform(bootstrap=bootstrap)
    platform.deploy(service_dir("durable", {"d.py": "pass\n"}, trigger_events=["flow.step"]))
    first = [platform.send("flow.step", {"n": n})["id"] for n in range(50)]
    platform.wait_idle(timeout=60)
    own_broker.stop()  # type: ignore[attr-defined]
    time.sleep(1.0)
    own_broker()
    later = []
    deadline = time.monotonic() + 60
    while len(later) < 50:
        try:
            later.append(platform.send("flow.step", {"n": 100 + len(later)})["id"])
        except Exception:
            assert time.monotonic() < deadline, "could not produce after the broker restart"
            time.sleep(0.5)
    everything = set(first) | set(later)
    _wait_for(
        lambda: {r.event_id for r in platform.runs(service="durable", limit=None)} >= everything,
        timeout=120,
        what="events produced around the broker restart did not all run",
    )
    ran = [r.event_id for r in platform.runs(service="durable", limit=None)]
    assert set(ran) == everything and len(ran) == len(everything)
    assert platform.bus.end_offsets(platform.settings.events_topic), "topic survived the restart"


def _drain(platform: Platform, every_s: float) -> tuple[dict[str, Any], int]:
    """Wait until the backlog is routed, run and committed; the last stats, and the most runs
    any router held at once meanwhile (sampled every ``every_s``)."""
    most_active = 0
    deadline = time.monotonic() + 120
    while True:
        stats = platform.stats()
        most_active = max([most_active, *(r["active_runs"] for r in stats["routers"])])
        if stats["lag"] == 0 and stats["active_runs"] == 0:
            return stats, most_active
        assert time.monotonic() < deadline, "the backlog did not drain"
        time.sleep(every_s)


def test_backpressure_pauses_partitions_without_leaving_the_group(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    # runs end every 0.15 s; a router waiting 0.05 s for room pauses its partitions
    platform = kafka_platform(
        router_max_in_flight=4, router_pause_after_s=0.05, executors_max_per_version=2
    )
    slow = "import time\ntime.sleep(0.15)\n"
    platform.deploy(service_dir("slow", {"s.py": slow}, trigger_events=["flow.step"]))
    sent = [platform.send("flow.step", {"n": n})["id"] for n in range(40)]
    stats, most_active = _drain(platform, every_s=0.05)
    assert stats["counters"].get("backpressure_pauses", 0) > 0
    assert {r.event_id for r in platform.runs(service="slow", limit=None)} == set(sent)
    assert stats["counters"].get("partitions_revoked", 0) == 0, "the router lost its partitions"
    assert 0 < most_active <= 4


def test_a_router_full_for_a_moment_waits_for_room_instead_of_pausing(
    kafka_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    # runs of ~20 ms free room long before router_pause_after_s (1 s by default)
    platform = kafka_platform(router_max_in_flight=4, executors_max_per_version=2)
    quick = "import time\ntime.sleep(0.02)\n"
    platform.deploy(service_dir("quick", {"q.py": quick}, trigger_events=["flow.step"]))
    warm = platform.send("flow.step", {"n": -1})  # an executor's cold start is a long wait
    platform.wait_for_runs(event_id=warm["id"], timeout=60)
    sent = [platform.send("flow.step", {"n": n})["id"] for n in range(60)]
    stats, most_active = _drain(platform, every_s=0.02)
    ran = {r.event_id for r in platform.runs(service="quick", limit=None)}
    assert ran == {warm["id"], *sent}
    assert stats["counters"].get("backpressure_pauses", 0) == 0
    assert most_active == 4, "the router never filled up: this test did not test waiting"
