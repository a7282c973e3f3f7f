"""Routing end to end on embedded defaults: flows, late linking, A/B, dedupe, dead letters."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from fxray import Platform, PlatformError
from fxray.bus import OutgoingRecord
from fxray.events import cloudevent as ev
from fxray.router.triggers import choose_version

EMIT_NEXT = """
from fxray import context
context.events.send("{out}", {{"hop": context.params.get("hop", 0) + 1}})
"""

SINK = """
from fxray import context
context.log.info("end of flow at hop %s", context.params.get("hop"))
"""


def test_three_service_flow_keeps_the_causation_chain(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(
        service_dir("first", {"a.py": EMIT_NEXT.format(out="flow.b")}, trigger_events=["flow.a"])
    )
    platform.deploy(
        service_dir("second", {"b.py": EMIT_NEXT.format(out="flow.c")}, trigger_events=["flow.b"])
    )
    platform.deploy(service_dir("third", {"c.py": SINK}, trigger_events=["flow.c"]))

    root = platform.send("flow.a", {"hop": 0})
    runs = platform.wait_for_runs(correlation_id=root["id"], count=3, timeout=60)

    assert [r.service for r in runs] == ["first", "second", "third"]
    assert all(r.status == "succeeded" for r in runs)
    trace = platform.trace(root["id"])
    events = [item["event"] for item in trace if item["kind"] == "event"]
    assert [e["type"] for e in events] == ["flow.a", "flow.b", "flow.c"]
    by_id = {e["id"]: e for e in events}
    run_by_event = {r.event_id: r for r in runs}
    for event in events[1:]:
        parent = by_id[event[ev.PARENT_ID]]
        assert event[ev.CORRELATION_ID] == root["id"]
        assert event[ev.RUN_ID] == run_by_event[parent["id"]].id
    assert any("end of flow at hop 2" in line[3] for line in runs[2].logs)


def test_late_linking_while_events_flow_loses_nothing(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("always", {"m.py": "pass\n"}, trigger_events=["tick.*"]))
    platform.deploy(service_dir("late", {"m.py": "pass\n"}))
    sent: list[tuple[float, str]] = []
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            event = platform.send("tick.beat", {"n": n})
            sent.append((time.monotonic(), event["id"]))
            n += 1
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.5)
    trigger = platform.link("tick.beat", "late")
    linked_at = time.monotonic()
    time.sleep(1.0)
    platform.update_trigger(trigger.id, filters={"data.n": "*"})
    producer.join(timeout=30)
    stop.set()
    platform.wait_idle(timeout=60)

    always = {r.event_id for r in platform.runs(service="always", limit=None)}
    late = {r.event_id for r in platform.runs(service="late", limit=None)}
    assert always == {event_id for _, event_id in sent}, "an event was lost"
    # the link took effect within a second, and never ran an event twice
    must_have = {event_id for at, event_id in sent if at > linked_at + 1.0}
    assert must_have and must_have <= late
    assert (
        Counter(r.event_id for r in platform.runs(service="late", limit=None)).most_common(1)[0][1]
        == 1
    )


def test_ab_split_is_deterministic_and_uses_both_versions(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    v1 = service_dir("scorer", {"s.py": "from fxray import context\ncontext.result = 'v1'\n"})
    v2 = service_dir("scorer", {"s.py": "from fxray import context\ncontext.result = 'v2'\n"})
    platform.deploy(v1, label="v1")
    platform.deploy(v2, label="v2")
    platform.link("score.me", "scorer", weights={"v1": 70, "v2": 30})
    sent = [platform.send("score.me", {"i": i}) for i in range(60)]
    platform.wait_idle(timeout=60)
    runs = platform.runs(service="scorer", limit=None)
    assert len(runs) == 60
    counts = Counter(r.result for r in runs)
    assert counts["v1"] > counts["v2"] > 0
    labels = {v.id: v.label for v in platform.versions("scorer")}
    assert all(r.result == labels[r.version_id] for r in runs)
    # the version is a function of (event id, trigger id): a redelivery goes the same way
    trigger = platform.triggers("scorer")[0]
    for event in sent:
        run = next(r for r in runs if r.event_id == event["id"])
        assert run.version_id == choose_version(event["id"], trigger.id, trigger.weights, None)


def test_redelivered_event_id_does_not_run_twice(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("once", {"m.py": "pass\n"}, trigger_events=["dup.x"]))
    event = platform.send("dup.x", {"a": 1})
    platform.wait_for_runs(event_id=event["id"])
    platform.publish([event])  # the same event again, as a redelivery would bring it
    platform.wait_idle(timeout=30)
    assert len(platform.runs(event_id=event["id"])) == 1
    assert platform.stats()["counters"].get("duplicates_skipped", 0) >= 1


def test_malformed_records_go_to_the_dead_letter_topic(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("ok", {"m.py": "pass\n"}, trigger_events=["good.one"]))
    bus = platform.bus
    assert bus is not None
    topic = platform.settings.events_topic
    bad = [b"not json", b'{"specversion": "0.3", "id": "1", "type": "t", "source": "s"}', b"[]"]
    bus.produce(topic, [OutgoingRecord(v, headers=[("origin", b"test")]) for v in bad])
    good = platform.send("good.one", {})
    platform.wait_for_runs(event_id=good["id"])
    platform.wait_idle(timeout=30)

    dead = bus.read(platform.settings.deadletter_topic, 0, 0, 100)
    assert sorted(r.value for r in dead) == sorted(bad)
    for record in dead:
        headers = dict(record.headers)
        assert headers["origin"] == b"test"
        assert headers["fxray_dlq_topic"] == topic.encode()
        assert headers["fxray_dlq_reason"]
    assert platform.stats()["counters"]["dead_lettered"] == 3


def test_deactivated_service_is_not_triggered_until_activated(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("switch", {"m.py": "pass\n"}, trigger_events=["sw.x"]))
    platform.activate("switch", False)
    off = platform.send("sw.x", {})
    platform.wait_idle(timeout=30)
    assert platform.runs(event_id=off["id"]) == []
    with pytest.raises(PlatformError, match="not active"):
        platform.run("switch")
    platform.activate("switch", True)
    on = platform.send("sw.x", {})
    assert platform.wait_for_runs(event_id=on["id"])[0].status == "succeeded"


def test_manual_run_validates_parameters_and_targets_a_version(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    params = json.dumps(
        [
            {"name": "n", "type": "int", "required": True},
            {"name": "mode", "type": "select", "choices": ["a", "b"], "default": "a"},
        ]
    )
    code = "from fxray import context\ncontext.result = dict(context.params)\n"
    first = platform.deploy(
        service_dir("manual", {"m.py": code, "parameters.json": params}), label="one"
    )
    platform.deploy(
        service_dir("manual", {"m.py": code + "# v2\n", "parameters.json": params}), label="two"
    )
    from fxray.services import ParameterError

    with pytest.raises(ParameterError) as info:
        platform.run("manual", {"n": "x", "mode": "c", "extra": 1})
    assert len(info.value.problems) == 3
    event = platform.run("manual", {"n": "7"}, version="one", priority=2)
    (run,) = platform.wait_for_runs(event_id=event["id"])
    assert run.status == "succeeded"
    assert run.result == {"n": 7, "mode": "a"}
    assert run.version_id == first.version.id
    assert run.priority == 2
    assert run.event_type == ev.MANUAL_RUN
