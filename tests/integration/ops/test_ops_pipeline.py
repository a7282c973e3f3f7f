"""The ops pipeline on Kafka and an Elasticsearch-API server: a three-service flow is
searchable with the right fields, secrets never reach the ops store, a killed sink loses and
duplicates nothing, and the API searches logs and streams a running run's lines live."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import uvicorn
from sqlalchemy import select

from fxray import Platform
from fxray.api import create_app
from fxray.store import RunRecord
from fxray.store.models import RunRow
from tests.integration.ops.conftest import count, es_of, search_all, wait_for

ServiceDir = Callable[..., Path]
SECRET = f"tok-{uuid.uuid4().hex[:12]}"

A = """
from fxray import context
print("A got order", context.params["order"])
context.log.info("A uses token %s", context.secrets["token"])
context.events.send("flow.a", {"order": context.params["order"]})
"""
B = """
from fxray import context
context.log.warning("B checks order %s", context.params["order"])
context.events.send("flow.b", {"order": context.params["order"]})
"""
C1 = """
from fxray import context
context.log.info("C1 books order %s", context.params["order"])
"""
C2 = """
from fxray import context
context.log.error("C2 notes order %s", context.params["order"])
"""
LEAKY = """
from fxray import context
print("leaking", context.secrets["token"])
raise ValueError("cannot use " + context.secrets["token"])
"""
QUICK = """
from fxray import context
for i in range(3):
    context.log.info("line %d of %s", i, context.params["n"])
"""
SLOW = """
import time
from fxray import context
context.log.info("first line")
time.sleep(2)
context.log.info("second line")
"""


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def platform(ops_platform: Callable[..., Platform]) -> Platform:
    return ops_platform()


def test_three_service_flow_is_searchable_and_secrets_stay_out(
    platform: Platform, service_dir: ServiceDir
) -> None:
    secrets = {"secrets.json": json.dumps({"token": SECRET})}
    a, b, c, leaky = _name("a"), _name("b"), _name("c"), _name("leaky")
    start = f"flow.start.{a}"
    platform.deploy(service_dir(a, {"a.py": A, **secrets}, trigger_events=[start]))
    platform.deploy(service_dir(b, {"b.py": B}))
    platform.deploy(service_dir(c, {"c1.py": C1, "c2.py": C2}))
    platform.deploy(service_dir(leaky, {"leak.py": LEAKY, **secrets}, trigger_events=[f"leak.{a}"]))
    platform.link("flow.a", b)
    platform.link("flow.b", c)
    event = platform.send(start, {"order": "o-1"})
    leak = platform.send(f"leak.{a}", {})
    runs = platform.wait_for_runs(correlation_id=event["id"], count=3, timeout=120)
    (leak_run,) = platform.wait_for_runs(event_id=leak["id"], timeout=60)
    assert leak_run.status == "failed"
    by_service = {r.service: r for r in runs}
    assert set(by_service) == {a, b, c} and all(r.status == "succeeded" for r in runs)
    # the management database's rows came from the ops sink (ranked), whole
    assert all(rank is not None for rank in _ranks(platform, [*by_service.values(), leak_run]))
    assert [s["name"] for s in by_service[c].steps] == ["c1.py", "c2.py"]
    assert [line[3] for line in by_service[b].logs] == ["B checks order o-1"]
    assert by_service[a].started_at and by_service[a].finished_at >= by_service[a].started_at
    assert by_service[b].event_type == "flow.a" and by_service[b].correlation_id == event["id"]
    assert SECRET not in json.dumps([r.logs for r in runs]) and "***" in leak_run.error

    es, config = es_of(platform)
    flow = {"term": {"correlation_id": event["id"]}}
    # A: 2 lines, B: 1, C: 2
    wait_for(lambda: count(es, config.logs_alias, flow) == 5, 30, "the flow's log lines")
    wait_for(
        lambda: (
            len([d for d in search_all(es, config.runs_alias, flow) if d["state"] == "finished"])
            == 3
        ),
        30,
        "the flow's runs, finished",
    )
    run_docs = {d["service"]: d for d in search_all(es, config.runs_alias, flow)}
    assert set(run_docs) == {a, b, c}
    for service, doc in run_docs.items():
        run = by_service[service]
        assert doc["run_id"] == run.id and doc["version"] == run.version_id
        assert doc["status"] == "succeeded" and doc["attempt"] == 1
        assert doc["correlation_id"] == event["id"] and doc["error"] is None
        assert doc["duration_ms"] >= 0 and doc["started_at"] and doc["finished_at"]
    assert run_docs[a]["event_type"] == start and run_docs[b]["event_type"] == "flow.a"
    assert [s["name"] for s in run_docs[c]["steps"]] == ["c1.py", "c2.py"]
    assert run_docs[c]["step"] == "c2.py"

    lines = search_all(es, config.logs_alias, flow)
    assert {d["service"] for d in lines} == {a, b, c}
    got = sorted((d["service"], d["seq"], d["level"], d["step"], d["message"]) for d in lines)
    assert got == sorted(
        [
            (a, 0, "STDOUT", "a.py", "A got order o-1"),
            (a, 1, "INFO", "a.py", "A uses token ***"),
            (b, 0, "WARNING", "b.py", "B checks order o-1"),
            (c, 0, "INFO", "c1.py", "C1 books order o-1"),
            (c, 1, "ERROR", "c2.py", "C2 notes order o-1"),
        ]
    )
    for d in lines:
        assert d["doc_id"] == f"{d['run_id']}:log:{d['seq']}"
        assert d["version"] == by_service[d["service"]].version_id
    # one term query on the level keyword, a date range on the timestamp
    errors = {"bool": {"filter": [flow, {"term": {"level": "ERROR"}}]}}
    assert count(es, config.logs_alias, errors) == 1
    recent = {"bool": {"filter": [flow, {"range": {"timestamp": {"gte": "now-1h"}}}]}}
    assert count(es, config.logs_alias, recent) == 5
    mapping = es.indices.get_mapping(index=config.logs_alias)
    fields = next(iter(mapping.values()))["mappings"]["properties"]
    assert fields["level"]["type"] == "keyword" and fields["timestamp"]["type"] == "date"
    assert fields["message"]["type"] == "text" and fields["seq"]["type"] == "long"

    # the secret: scrubbed from log lines, errors and step errors before they left the executor
    leak_filter = {"term": {"run_id": leak_run.id}}
    wait_for(lambda: count(es, config.logs_alias, leak_filter) >= 2, 30, "the leaky run's lines")
    leak_done = {"bool": {"filter": [leak_filter, {"term": {"state": "finished"}}]}}
    wait_for(lambda: count(es, config.runs_alias, leak_done) == 1, 30, "the leaky run's end")
    for alias in (config.logs_alias, config.runs_alias):
        assert count(es, alias, {"match": {"message": SECRET}}) == 0
        assert count(es, alias, {"query_string": {"query": f'"{SECRET}"'}}) == 0
        assert SECRET not in json.dumps(search_all(es, alias, {"match_all": {}}))
    (leak_doc,) = search_all(es, config.runs_alias, leak_filter)
    assert leak_doc["status"] == "failed" and "***" in leak_doc["error"]
    assert "leaking ***" in [d["message"] for d in search_all(es, config.logs_alias, leak_filter)]


def _ranks(platform: Platform, runs: list[RunRecord]) -> list[int | None]:
    assert platform.store is not None
    ids = [r.id for r in runs]
    with platform.store.session() as session:
        rows = session.execute(select(RunRow.id, RunRow.rank).where(RunRow.id.in_(ids)))
        found = {run_id: rank for run_id, rank in rows}
    return [found[i] for i in ids]


BIG = """
from fxray import context
context.log.info("making a big result")
context.result = {"blob": "x" * 700_000}
"""


def test_a_final_record_too_large_for_the_bus_leaves_its_row_to_the_router(
    platform: Platform, service_dir: ServiceDir
) -> None:
    name = _name("big")
    platform.deploy(service_dir(name, {"big.py": BIG}, trigger_events=[f"big.{name}"]))
    event = platform.send(f"big.{name}", {})
    (run,) = platform.wait_for_runs(event_id=event["id"], timeout=120)
    assert run.status == "succeeded" and run.result == {"blob": "x" * 700_000}
    assert [line[3] for line in run.logs] == ["making a big result"]
    assert platform.stats()["counters"]["final_rows_written_directly"] == 1
    (rank,) = _ranks(platform, [run])
    assert rank is not None
    es, config = es_of(platform)
    # the run's doc is made by its queued record first; wait for the executor's finished one
    finished = {
        "bool": {"filter": [{"ids": {"values": [run.id]}}, {"term": {"state": "finished"}}]}
    }
    (doc,) = wait_for(lambda: search_all(es, config.runs_alias, finished), 30, "the run doc")
    assert doc["status"] == "succeeded" and "result" not in doc


def test_killed_sink_loses_and_duplicates_nothing(
    platform: Platform, service_dir: ServiceDir
) -> None:
    name = _name("quick")
    platform.deploy(service_dir(name, {"q.py": QUICK}, trigger_events=[f"quick.{name}"]))
    total = 300
    sender = threading.Thread(
        target=lambda: [
            (platform.send(f"quick.{name}", {"n": i}), time.sleep(0.01)) for i in range(total)
        ]
    )
    sender.start()
    (sink,) = platform.ops_sinks

    def written() -> int:
        return int(ray.get(sink.stats.remote())["counters"].get("written", 0))

    wait_for(lambda: written() > 50, 120, "the sink writes")
    ray.kill(sink, no_restart=True)  # mid-stream: records in its buffer, offsets uncommitted
    platform.ops_sinks.remove(sink)
    time.sleep(1.0)  # events keep flowing while no sink runs
    platform.add_ops_sink()
    sender.join()
    platform.wait_for_runs(service=name, count=total, timeout=180)

    es, config = es_of(platform)
    service = {"term": {"service": name}}
    wait_for(lambda: count(es, config.logs_alias, service) >= total * 3, 120, "every line")
    finished = {"bool": {"filter": [service, {"term": {"state": "finished"}}]}}
    wait_for(lambda: count(es, config.runs_alias, finished) >= total, 60, "every run finished")
    time.sleep(1.0)  # anything still in flight would show as a duplicate now
    assert count(es, config.logs_alias, service) == total * 3
    assert count(es, config.runs_alias, service) == total
    assert count(es, config.runs_alias, finished) == total
    # the database lane was killed with it: its rows are complete too, from the ranked records
    runs = platform.runs(service=name, limit=None)
    assert len(runs) == total and {r.status for r in runs} == {"succeeded"}
    assert all(len(r.logs) == 3 for r in runs) and None not in _ranks(platform, runs)


@pytest.fixture
def served(platform: Platform) -> Iterator[tuple[str, dict[str, str]]]:
    """The API over ``platform`` served by uvicorn (streams are really streamed), and a
    platform-wide admin key's headers."""
    assert platform.store is not None
    _, token = platform.store.create_api_key("ops test admin", "admin", None)
    server = uvicorn.Server(
        uvicorn.Config(create_app(platform), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "the API server starts")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Bearer {token}"}
    server.should_exit = True
    thread.join(10)


def _project_key(client: httpx.Client, admin: dict[str, str], role: str) -> tuple[str, dict]:
    name = _name("p")
    assert client.post("/projects", json={"name": name}, headers=admin).status_code == 201
    made = client.post(f"/projects/{name}/keys", json={"name": "k", "role": role}, headers=admin)
    assert made.status_code == 201, made.text
    return name, {"Authorization": f"Bearer {made.json()['token']}"}


def test_logs_api_searches_and_streams_a_running_run(
    platform: Platform, service_dir: ServiceDir, served: tuple[str, dict[str, str]]
) -> None:
    base, admin = served
    client = httpx.Client(base_url=base, timeout=30)
    project, viewer = _project_key(client, admin, "viewer")
    _, stranger = _project_key(client, admin, "viewer")
    quick, slow = _name("quick"), _name("slow")
    platform.deploy(
        service_dir(quick, {"q.py": QUICK}, trigger_events=[f"q.{quick}"]), project=project
    )
    platform.deploy(
        service_dir(slow, {"s.py": SLOW}, trigger_events=[f"s.{slow}"]), project=project
    )

    # live: the first line arrives while the run is still going
    event = platform.send(f"s.{slow}", {})
    run_id = wait_for(
        lambda: (platform.runs(event_id=event["id"]) or [None])[0], 60, "the slow run exists"
    ).id
    received: list[tuple[float, str, Any]] = []
    with client.stream("GET", f"/runs/{run_id}/logs/stream", headers=viewer) as answer:
        assert answer.status_code == 200
        kind = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                received.append((time.time(), kind or "", json.loads(line[6:])))
    run = platform.get_run(run_id)
    assert [(k, d.get("message")) for _, k, d in received] == [
        ("log", "first line"),
        ("log", "second line"),
        ("end", None),
    ]
    assert received[-1][2] == {"run_id": run_id, "status": "succeeded"}
    assert run.finished_at is not None and received[0][0] < run.finished_at

    # a run's logs from the ops store, with a cursor
    page = client.get(f"/runs/{run_id}/logs", headers=viewer).json()
    assert [(x["index"], x["message"]) for x in page["items"]] == [
        (0, "first line"),
        (1, "second line"),
    ]
    after = client.get(f"/runs/{run_id}/logs", params={"after": 0}, headers=viewer).json()
    assert [x["message"] for x in after["items"]] == ["second line"]

    # search across services
    events = [platform.send(f"q.{quick}", {"n": f"n{i}"}) for i in range(4)]
    for e in events:
        platform.wait_for_runs(event_id=e["id"], timeout=60)
    es, config = es_of(platform)
    quick_id = platform.find_service(quick, project).id  # what ops records name it by
    wait_for(
        lambda: count(es, config.logs_alias, {"term": {"service": quick_id}}) == 12, 30, "lines"
    )
    found = client.get("/logs", params={"q": "line n2", "service": quick}, headers=viewer).json()
    assert found["total"] == 3
    assert {x["message"] for x in found["items"]} == {f"line {i} of n2" for i in range(3)}
    one_flow = client.get(
        "/logs", params={"correlation_id": events[1]["id"]}, headers=viewer
    ).json()
    assert one_flow["total"] == 3 and {x["service"] for x in one_flow["items"]} == {quick}
    paged = client.get(
        "/logs", params={"service": quick, "limit": 5, "offset": 10}, headers=viewer
    ).json()
    assert paged["total"] == 12 and len(paged["items"]) == 2
    newest = client.get("/logs", params={"service": quick}, headers=viewer).json()
    times = [x["time"] for x in newest["items"]]
    assert times == sorted(times, reverse=True)
    window = client.get(
        "/logs", params={"since": time.time() + 60, "service": quick}, headers=viewer
    ).json()
    assert window["total"] == 0
    assert (
        client.get("/logs", params={"level": "INFO", "run_id": run_id}, headers=viewer).json()[
            "total"
        ]
        == 2
    )
    # another project's key sees none of these lines
    assert client.get("/logs", params={"service": quick}, headers=stranger).json()["total"] == 0
    assert client.get("/logs", headers=stranger).json()["total"] == 0
