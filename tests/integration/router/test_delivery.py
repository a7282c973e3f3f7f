"""Delivery on the embedded bus: ordered triggers, dead letters of failed runs, router scaling."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fxray import Platform

RECORD_ORDER = """
import time
from fxray import context
key, n = context.params["key"], context.params["n"]
start = time.time()
time.sleep(0.02)
context.state.update(key, lambda v: (v or []) + [[n, start, time.time()]])
"""


def test_ordered_trigger_runs_each_key_one_at_a_time_in_order(
    make_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = make_platform(executors_max_per_version=3)
    platform.deploy(service_dir("ordered", {"o.py": RECORD_ORDER}))
    platform.link("acct.tx", "ordered", ordered=True)
    for n in range(12):
        for key in ("alice", "bob", "carol"):
            platform.send("acct.tx", {"key": key, "n": n}, partitionkey=key)
    platform.wait_idle(timeout=120)

    from fxray.kv import ServiceState

    state = ServiceState(platform.kv, "ordered")
    for key in ("alice", "bob", "carol"):
        runs = state.get(key)
        assert [n for n, _, _ in runs] == list(range(12)), f"{key} out of order"
        for (_, _, end), (_, start, _) in itertools.pairwise(runs):
            assert start >= end, f"{key}: two runs overlapped"


def test_a_run_that_fails_for_good_sends_its_event_to_dead_letters(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(
        service_dir(
            "broken", {"b.py": "raise KeyError('missing')\n"}, retries={"max": 1, "backoff_s": 0}
        )
    )
    event = platform.run("broken", {"x": 1})
    (run,) = platform.wait_for_runs(event_id=event["id"])
    assert run.status == "failed" and run.attempt == 2
    platform.wait_idle(timeout=30)
    letters = platform.bus.read(platform.settings.deadletter_topic, 0, 0, 100)
    (letter,) = [r for r in letters if dict(r.headers).get("fxray_dlq_run_id") == run.id.encode()]
    headers = dict(letter.headers)
    assert json.loads(letter.value)["id"] == event["id"]
    assert b"KeyError" in headers["fxray_dlq_reason"]
    assert headers["fxray_dlq_attempts"] == b"2"
    assert headers["fxray_dlq_service"] == b"broken"

    (listed,) = [d for d in platform.dead_letters() if d.run_id == run.id]
    assert "KeyError" in listed.reason
    (outcome,) = platform.republish([listed.position])
    replay_id = outcome.rsplit(" ", 1)[-1]
    (again,) = platform.wait_for_runs(event_id=replay_id)
    assert again.id != run.id and again.correlation_id == run.correlation_id
    assert platform.store.get_event(replay_id)["fxreplayof"] == event["id"]


def test_routers_scale_up_and_down_while_events_flow_without_losing_any(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("count", {"c.py": "pass\n"}, trigger_events=["flow.tick"]))
    sent: list[str] = []
    done = threading.Event()

    def produce() -> None:
        for n in range(600):
            sent.append(platform.send("flow.tick", {"n": n})["id"])
            time.sleep(0.004)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.5)
    platform.add_router()
    time.sleep(1.0)
    platform.add_router()
    time.sleep(1.0)
    platform.remove_router()
    producer.join(timeout=60)
    assert done.is_set()
    platform.wait_idle(timeout=120)

    ran = {r.event_id for r in platform.runs(service="count", limit=None)}
    assert ran == set(sent), f"{len(set(sent) - ran)} events lost"
    stats = platform.stats()
    assert len(stats["routers"]) == 2
    assert sum(1 for r in stats["routers"] if r["counters"].get("events")) == 2
