"""Executor pools scale with load and reap idle executors; cron ticks run services."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fxray import Platform
from fxray.events import cloudevent as ev

SLOW = """
import os
import time
from fxray import context
context.result = os.getpid()
time.sleep(0.4)
"""


def test_pool_grows_to_its_maximum_under_load_and_reaps_idle_executors(
    make_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = make_platform(executors_max_per_version=2, executor_idle_s=1.0)
    platform.deploy(service_dir("slow", {"s.py": SLOW}, trigger_events=["slow.go"]))
    for i in range(8):
        platform.send("slow.go", {"i": i})
    platform.wait_idle(timeout=60)
    runs = platform.runs(service="slow", limit=None)
    assert len(runs) == 8 and all(r.status == "succeeded" for r in runs)
    assert len({r.result for r in runs}) == 2, "two executors shared the backlog"
    deadline = time.monotonic() + 20
    while platform.stats()["executors"][0]["actors"] > 0:
        assert time.monotonic() < deadline, "idle executors were not reaped"
        time.sleep(0.2)
    assert platform.stats()["counters"]["executors_reaped"] == 2


SHORT = """
import os
import time
from fxray import context
context.result = os.getpid()
time.sleep(context.params.get("sleep", 0))
"""


def test_a_run_takes_the_executor_that_frees_first_not_a_cold_new_one(
    make_platform: Callable[..., Platform], service_dir: Callable[..., Path]
) -> None:
    platform = make_platform(executors_max_per_version=2, executor_idle_s=60)
    platform.deploy(service_dir("short", {"s.py": SHORT}, trigger_events=["short.go"]))
    warm = platform.send("short.go", {})
    platform.wait_for_runs(event_id=warm["id"], timeout=60)  # one warm executor
    (pool,) = platform.stats()["executors"]
    cold_start = pool["cold_start_s"]
    assert cold_start is not None and cold_start > 0.5  # a new executor takes a while

    busy = platform.send("short.go", {"sleep": 0.3})
    time.sleep(0.1)  # the warm executor is busy with it
    quick = platform.send("short.go", {})
    (first,) = platform.wait_for_runs(event_id=busy["id"], timeout=60)
    (second,) = platform.wait_for_runs(event_id=quick["id"], timeout=60)
    assert first.finished_at is not None and second.started_at is not None
    # the quick run waited for the busy executor (a few ms), not for a cold start
    assert second.started_at - first.finished_at < min(0.4, cold_start / 2)
    assert second.result == first.result
    deadline = time.monotonic() + 30  # the second executor was started meanwhile, for later
    while platform.stats()["executors"][0]["actors"] < 2:
        assert time.monotonic() < deadline, "no second executor was started"
        time.sleep(0.1)


def test_a_cron_schedule_fires_ticks_as_events(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    code = "from fxray import context\ncontext.result = context.params['scheduled_for']\n"
    platform.deploy(service_dir("cron", {"c.py": code}, schedule="* * * * * */1"))
    deadline = time.monotonic() + 20
    while len(platform.runs(service="cron", status="succeeded")) < 2:
        assert time.monotonic() < deadline, "no cron ticks ran"
        time.sleep(0.2)
    platform.activate("cron", False)
    runs = platform.runs(service="cron", status="succeeded")
    assert all(r.event_type == ev.SCHEDULE_TICK for r in runs)
    assert len({r.result for r in runs}) == len(runs), "each tick ran once"
