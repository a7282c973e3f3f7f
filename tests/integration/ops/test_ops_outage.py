"""Elasticsearch away for a while: runs go on, the sink pauses and retries, nothing is lost.

Two outages of a private osmem-server: a SIGSTOP (SIGCONT ends it): the server is unreachable
(requests time out) but keeps its in-memory documents, so every document can be counted after;
and a real stop and restart (connections refused): osmem keeps nothing across a restart (a real
Elasticsearch would), so what is counted after is what the sink wrote after the restart: every
record produced while it was down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from elasticsearch import Elasticsearch

from fxray import Platform
from fxray.ops.elastic import EsConfig
from tests.integration.ops.conftest import OsmemProcess, count, es_of, wait_for

QUICK = """
from fxray import context
for i in range(3):
    context.log.info("line %d of %s", i, context.params["n"])
"""


@dataclass
class Setup:
    """A platform whose sink writes to the test's own osmem, and a quick service on it."""

    platform: Platform
    name: str
    es: Elasticsearch
    config: EsConfig
    service: dict[str, Any]  # a query for the service's documents
    finished: dict[str, Any]  # ... for its runs in state "finished"


@pytest.fixture
def setup(
    ops_platform: Callable[..., Platform],
    osmem: OsmemProcess,
    service_dir: Callable[..., Path],
) -> Setup:
    platform = ops_platform(es_url=osmem.url)
    name = f"quick{uuid.uuid4().hex[:6]}"
    platform.deploy(service_dir(name, {"q.py": QUICK}, trigger_events=[f"quick.{name}"]))
    es, config = es_of(platform)
    service = {"term": {"service": name}}
    finished = {"bool": {"filter": [service, {"term": {"state": "finished"}}]}}
    return Setup(platform, name, es, config, service, finished)


def test_elasticsearch_outage_loses_nothing_and_blocks_no_run(
    setup: Setup, osmem: OsmemProcess
) -> None:
    platform, name, es, config = setup.platform, setup.name, setup.es, setup.config
    service, finished = setup.service, setup.finished

    def send(first: int, last: int) -> None:
        for i in range(first, last):
            platform.send(f"quick.{name}", {"n": i})

    send(0, 30)
    platform.wait_for_runs(service=name, count=30, timeout=120)
    wait_for(lambda: count(es, config.logs_alias, service) == 90, 60, "the first lines")

    osmem.pause()
    try:
        stopped = time.monotonic()
        send(30, 130)
        # the routers and executors do not wait for Elasticsearch, and the run rows (which
        # the sink's database lane writes) stay current while it is away
        platform.wait_for_runs(service=name, count=130, timeout=120)
        (sink,) = platform.ops_sinks
        stats = wait_for(
            lambda: (s := ray.get(sink.stats.remote()))["es_down_s"] is not None and s,
            60,
            "the sink notices the outage",
        )
        assert stats["paused"] or stats["buffered"] > 0
        # keep it down a little longer: the sink keeps polling (stays in its group), retries
        while time.monotonic() - stopped < 15:
            time.sleep(0.5)
        assert ray.get(sink.stats.remote())["counters"]["write_retries"] >= 1
    finally:
        osmem.resume()

    wait_for(lambda: count(es, config.logs_alias, service) >= 390, 120, "every line, after")
    wait_for(lambda: count(es, config.runs_alias, finished) >= 130, 60, "every run, after")
    time.sleep(1.0)
    assert count(es, config.logs_alias, service) == 390
    assert count(es, config.runs_alias, service) == 130
    assert count(es, config.runs_alias, finished) == 130
    (sink,) = platform.ops_sinks
    after = ray.get(sink.stats.remote())
    assert after["es_down_s"] is None and not after["paused"]


def test_elasticsearch_restart_loses_nothing_produced_meanwhile(
    setup: Setup, osmem: OsmemProcess
) -> None:
    platform, name, es, config = setup.platform, setup.name, setup.es, setup.config
    service, finished = setup.service, setup.finished
    platform.send(f"quick.{name}", {"n": -1})
    platform.wait_for_runs(service=name, count=1, timeout=120)
    wait_for(lambda: count(es, config.logs_alias, service) == 3, 60, "the first lines")
    wait_for(lambda: count(es, config.runs_alias, finished) == 1, 60, "the first run")

    osmem.stop()
    for i in range(60):
        platform.send(f"quick.{name}", {"n": i})
    platform.wait_for_runs(service=name, count=61, timeout=120)  # runs do not wait for ES
    (sink,) = platform.ops_sinks
    wait_for(
        lambda: ray.get(sink.stats.remote())["counters"]["write_retries"] >= 1,
        60,
        "the sink retries",
    )
    osmem.start()  # empty: the templates and the first run's documents are gone with it

    wait_for(lambda: count(es, config.logs_alias, service) >= 180, 120, "the lines, after")
    time.sleep(1.0)
    assert count(es, config.logs_alias, service) == 180
    wait_for(lambda: count(es, config.runs_alias, finished) >= 60, 60, "every run, after")
    assert count(es, config.runs_alias, service) == 60
    # the template came back with the sink's first write after the restart
    mapping = es.indices.get_mapping(index=config.logs_alias)
    (index,) = mapping.values()
    assert index["mappings"]["properties"]["service"]["type"] == "keyword"
