"""The priority queue in front of the executors: order, cancellation, re-prioritisation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fxray import Platform
from fxray.kv import ServiceState

LANE = """
import time
from fxray import context
context.state.update("order", lambda v: (v or []) + [context.params.get("tag")])
for _ in range(int(context.params.get("sleep", 0) / 0.05)):
    time.sleep(0.05)
"""


def _wait(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_backlog_runs_by_priority_with_cancel_and_reprioritise(
    make_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = make_platform(executors_max_per_version=1)
    platform.deploy(service_dir("lane", {"lane.py": LANE}))
    blocker = platform.run("lane", {"tag": "blocker", "sleep": 2})
    _wait(lambda: any(r.status == "running" for r in platform.runs(event_id=blocker["id"])))

    queued = {}
    for tag, priority in [("p9", 9), ("p5", 5), ("p1", 1), ("p7", 7), ("p3", 3)]:
        queued[tag] = platform.run("lane", {"tag": tag}, priority=priority)
    _wait(lambda: platform.stats()["queued"] == 5)
    # the queued runs' rows are written by the router's record writer, which does not wait
    _wait(lambda: all(platform.runs(event_id=e["id"]) for e in queued.values()))
    run_id = {tag: platform.runs(event_id=e["id"])[0].id for tag, e in queued.items()}

    assert platform.cancel(run_id["p7"]) == "cancelled"
    assert platform.set_priority(run_id["p9"], 2) is True
    platform.wait_idle(timeout=60)

    order = ServiceState(platform.kv, "lane").get("order")
    assert order == ["blocker", "p1", "p9", "p3", "p5"]
    cancelled = platform.get_run(run_id["p7"])
    assert cancelled.status == "cancelled"
    assert platform.get_run(run_id["p9"]).priority == 2


def test_cancel_a_running_run(
    make_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = make_platform()
    platform.deploy(service_dir("long", {"lane.py": LANE}))
    event = platform.run("long", {"tag": "long", "sleep": 60})
    _wait(lambda: any(r.status == "running" for r in platform.runs(event_id=event["id"])))
    time.sleep(0.5)
    (run,) = platform.runs(event_id=event["id"])
    assert platform.cancel(run.id) == "cancelling"
    (done,) = platform.wait_for_runs(event_id=event["id"], timeout=20)
    assert done.status == "cancelled"
    assert done.duration_ms is not None and done.duration_ms < 10_000
    assert platform.cancel(run.id) == "not_active"
