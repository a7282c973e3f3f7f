"""Runs through the API: manual runs, listing and filters, detail, logs (JSON and SSE), cancel,
priority, replay, and the A/B report."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness, ProjectKeys

ServiceDir = Callable[..., Path]
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}

ECHO = """
from fxray import context
context.log.info("hello %s", context.params.get("name"))
if context.params.get("fail"):
    raise ValueError("asked to fail")
context.result = {"echo": context.params.get("name")}
"""

PARAMETERS = {
    "fields": [
        {"name": "order_id", "type": "text", "required": True},
        {"name": "amount", "type": "float", "required": True},
        {"name": "express", "type": "bool", "default": False},
    ]
}

CHECK = """
from fxray import context
context.log.info("checking %s", context.params["order_id"])
context.scratch["amount"] = context.params["amount"] * 2
"""

ACCEPT = """
from fxray import context
context.log.warning("accepting %s", context.params["order_id"])
print("printed line")
context.result = {"order_id": context.params["order_id"], "double": context.scratch["amount"]}
"""

SLOW = """
import time
from fxray import context
context.log.info("start %s", context.params.get("tag"))
for _ in range(int(float(context.params.get("sleep", 0)) / 0.05)):
    time.sleep(0.05)
context.log.info("done %s", context.params.get("tag"))
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _deploy(
    api: ApiHarness,
    project: ProjectKeys,
    service_dir: ServiceDir,
    name: str,
    scripts: dict[str, str],
    label: str | None = None,
    **manifest: Any,
) -> str:
    api.platform.deploy(service_dir(name, scripts, **manifest), label=label, project=project.name)
    return name


def _start(api: ApiHarness, headers: dict[str, str], service: str, **body: Any) -> str:
    answer = api.client.post(f"/api/v1/services/{service}/runs", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]


def _wait(
    api: ApiHarness,
    run_id: str,
    headers: dict[str, str],
    until: Callable[[dict[str, Any]], bool] = lambda run: run["status"] in FINAL,
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = api.client.get(f"/api/v1/runs/{run_id}", headers=headers)
        if answer.status_code == 200 and until(answer.json()):
            return answer.json()
        assert answer.status_code in (200, 404), answer.text
        assert time.monotonic() < deadline, f"run {run_id} not there in time: {answer.text}"
        time.sleep(0.05)


def _runs(api: ApiHarness, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = api.client.get("/api/v1/runs", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a Server-Sent Events body; comments are skipped."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


# -- both databases: listing, detail, filters and role boundaries -----------------------------


def test_role_boundaries_on_runs(api: ApiHarness, service_dir: ServiceDir) -> None:
    mine, other = api.project(), api.project()
    service = _deploy(api, mine, service_dir, _name("echo"), {"echo.py": ECHO})
    run_id = _start(api, mine.developer, service, params={"name": "Ada"})
    run = _wait(api, run_id, mine.viewer)
    assert run["status"] == "succeeded" and run["project"] == mine.name

    # a viewer reads, but cannot start, cancel, re-prioritise or replay
    assert _runs(api, mine.viewer, service=service)["total"] == 1
    assert api.client.get(f"/api/v1/runs/{run_id}/logs", headers=mine.viewer).status_code == 200
    refused = [
        api.client.post(f"/api/v1/services/{service}/runs", json={}, headers=mine.viewer),
        api.client.post(f"/api/v1/runs/{run_id}/cancel", headers=mine.viewer),
        api.client.patch(f"/api/v1/runs/{run_id}", json={"priority": 1}, headers=mine.viewer),
        api.client.post(f"/api/v1/runs/{run_id}/replay", headers=mine.viewer),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert all(r.json()["error"]["code"] == "forbidden" for r in refused)

    # another project sees nothing of it
    for headers in (other.viewer, other.admin):
        assert _runs(api, headers, service=service)["total"] == 0
        for method, path in [
            ("GET", f"/api/v1/runs/{run_id}"),
            ("GET", f"/api/v1/runs/{run_id}/logs"),
            ("GET", f"/api/v1/runs/{run_id}/logs/stream"),
            ("POST", f"/api/v1/runs/{run_id}/cancel"),
            ("POST", f"/api/v1/runs/{run_id}/replay"),
            ("GET", f"/api/v1/traces/{run['event_id']}"),
            ("GET", f"/api/v1/services/{service}/report"),
            ("POST", f"/api/v1/services/{service}/runs"),
        ]:
            answer = api.client.request(method, path, headers=headers, json={})
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
            assert mine.name not in answer.text
    assert (
        api.client.get(
            "/api/v1/runs", params={"project": mine.name}, headers=other.viewer
        ).status_code
        == 404
    )

    # a platform-wide admin sees every project, or one
    assert _runs(api, api.admin, project=mine.name)["total"] == 1
    assert _runs(api, api.admin, project=other.name)["total"] == 0
    assert api.client.get(f"/api/v1/runs/{run_id}", headers=api.admin).status_code == 200
    assert api.client.get("/api/v1/runs/nope", headers=api.admin).status_code == 404


def test_run_filters_and_pagination(api: ApiHarness, service_dir: ServiceDir) -> None:
    project = api.project()
    service = _name("filtered")
    _deploy(api, project, service_dir, service, {"echo.py": ECHO}, label="one")
    _deploy(api, project, service_dir, service, {"echo.py": ECHO + "\n# v2\n"}, label="two")
    started = time.time()
    ids = {}
    for n, (version, fail) in enumerate([("one", False), ("one", True), ("two", False)] * 2):
        ids[n] = _start(
            api, project.developer, service, params={"name": f"n{n}", "fail": fail}, version=version
        )
    runs = {n: _wait(api, run_id, project.viewer) for n, run_id in ids.items()}
    middle = max(r["created_at"] for r in runs.values() if r["id"] in (ids[0], ids[1], ids[2]))

    everything = _runs(api, project.viewer, service=service)
    assert everything["total"] == 6
    created = [r["created_at"] for r in everything["items"]]
    assert created == sorted(created, reverse=True)  # newest first
    page = _runs(api, project.viewer, service=service, limit=4, offset=4)
    assert page["total"] == 6 and len(page["items"]) == 2
    assert (page["limit"], page["offset"]) == (4, 4)

    failed = _runs(api, project.viewer, service=service, status="failed")
    assert failed["total"] == 2
    assert {r["id"] for r in failed["items"]} == {ids[1], ids[4]}
    assert all(r["error"] and "asked to fail" in r["error"] for r in failed["items"])
    two = _runs(api, project.viewer, service=service, version="two")
    assert {r["id"] for r in two["items"]} == {ids[2], ids[5]}
    assert all(r["version"]["label"] == "two" for r in two["items"])
    by_id = _runs(api, project.viewer, version=two["items"][0]["version"]["id"])
    assert by_id["total"] == 2
    one_ok = _runs(api, project.viewer, service=service, version="one", status="succeeded")
    assert one_ok["total"] == 2
    correlated = _runs(api, project.viewer, correlation_id=runs[3]["correlation_id"])
    assert [r["id"] for r in correlated["items"]] == [ids[3]]
    by_event = _runs(api, project.viewer, event_id=runs[3]["event_id"])
    assert [r["id"] for r in by_event["items"]] == [ids[3]]

    assert _runs(api, project.viewer, service=service, since=started - 1)["total"] == 6
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started + 3600))
    assert _runs(api, project.viewer, service=service, since=iso)["total"] == 0
    assert _runs(api, project.viewer, service=service, until=started - 60)["total"] == 0
    first_three = _runs(api, project.viewer, service=service, until=middle + 1e-6)
    assert {ids[0], ids[1], ids[2]} <= {r["id"] for r in first_three["items"]}
    later = _runs(api, project.viewer, service=service, since=middle + 1e-6)
    assert {r["id"] for r in later["items"]} <= {ids[3], ids[4], ids[5]}
    assert first_three["total"] + later["total"] == 6

    bad = api.client.get(
        "/api/v1/runs", params={"since": "yesterday", "status": "bogus"}, headers=project.viewer
    )
    assert bad.status_code == 422
    assert {p["location"] for p in bad.json()["error"]["problems"]} >= {"query.status"}
    assert (
        api.client.get("/api/v1/runs", params={"since": "soon"}, headers=project.viewer).json()[
            "error"
        ]["problems"][0]["location"]
        == "query.since"
    )


# -- SQLite: the behaviour --------------------------------------------------------------------


def test_manual_run_with_parameters(sqlite_api: ApiHarness, service_dir: ServiceDir) -> None:
    api = sqlite_api
    project = api.project()
    service = _deploy(
        api,
        project,
        service_dir,
        _name("orders"),
        {"check.py": CHECK, "accept.py": ACCEPT, "parameters.json": json.dumps(PARAMETERS)},
        label="first",
    )
    answer = api.client.post(
        f"/api/v1/services/{service}/runs",
        json={"params": {"order_id": "A-1", "amount": "12.5"}, "priority": 2},
        headers=project.developer,
    )
    assert answer.status_code == 202, answer.text
    started = answer.json()
    run = _wait(api, started["run_id"], project.viewer)

    assert run["status"] == "succeeded", run["error"]
    assert run["event_id"] == started["event_id"]
    assert run["trigger_id"] == "manual" and run["priority"] == 2 and run["attempt"] == 1
    assert run["version"]["label"] == "first" and run["service"] == service
    assert run["version"]["id"].startswith(api.service_id(service, project) + "@")
    assert run["result"] == {"order_id": "A-1", "double": 25.0}
    assert run["trigger_event"]["type"] == "fxray.run.manual"
    assert run["trigger_event"]["data"] == {"order_id": "A-1", "amount": 12.5, "express": False}
    assert [s["name"] for s in run["steps"]] == ["check.py", "accept.py"]
    assert all(s["status"] == "succeeded" and s["duration_ms"] >= 0 for s in run["steps"])
    assert run["duration_ms"] > 0 and run["finished_at"] >= run["started_at"]
    messages = [line["message"] for line in run["logs"]]
    assert "checking A-1" in messages and "accepting A-1" in messages

    logs = api.client.get(
        f"/api/v1/runs/{run['id']}/logs", params={"level": "WARNING"}, headers=project.viewer
    ).json()
    assert [line["message"] for line in logs["items"]] == ["accepting A-1"]
    stdout = api.client.get(
        f"/api/v1/runs/{run['id']}/logs",
        params=[("level", "STDOUT"), ("level", "INFO")],
        headers=project.viewer,
    ).json()
    assert {line["level"] for line in stdout["items"]} == {"STDOUT", "INFO"}
    by_step = api.client.get(
        f"/api/v1/runs/{run['id']}/logs", params={"step": "check.py"}, headers=project.viewer
    ).json()
    assert by_step["total"] >= 1 and all(line["step"] == "check.py" for line in by_step["items"])
    paged = api.client.get(
        f"/api/v1/runs/{run['id']}/logs", params={"limit": 1}, headers=project.viewer
    ).json()
    assert len(paged["items"]) == 1 and paged["total"] == len(run["logs"])


def test_invalid_parameters_list_every_problem(
    sqlite_api: ApiHarness, service_dir: ServiceDir
) -> None:
    api = sqlite_api
    project = api.project()
    service = _deploy(
        api,
        project,
        service_dir,
        _name("strict"),
        {"check.py": CHECK, "parameters.json": json.dumps(PARAMETERS)},
    )
    path = f"/api/v1/services/{service}/runs"
    answer = api.client.post(
        path,
        json={"params": {"amount": "lots", "colour": "red"}},
        headers=project.developer,
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    locations = {p["location"] for p in error["problems"]}
    assert locations == {"body.params.order_id", "body.params.amount", "body.params.colour"}

    bad_body = api.client.post(
        path, json={"params": [], "priority": 11, "extra": 1}, headers=project.developer
    )
    assert bad_body.status_code == 422
    assert {p["location"] for p in bad_body.json()["error"]["problems"]} == {
        "body.params",
        "body.priority",
        "body.extra",
    }
    unknown = api.client.post(path, json={"version": "v9"}, headers=project.developer)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["problems"][0]["location"] == "body.version"
    missing = api.client.post("/api/v1/services/nope/runs", json={}, headers=project.developer)
    assert missing.status_code == 404
    assert _runs(api, project.viewer, service=service)["total"] == 0

    api.platform.activate(api.service_id(service, project), False)
    inactive = api.client.post(path, json={}, headers=project.developer)
    assert inactive.status_code == 409


def test_cancel_and_priority_of_queued_runs(
    sqlite_api: ApiHarness, service_dir: ServiceDir
) -> None:
    api = sqlite_api
    project = api.project()
    service = _deploy(
        api, project, service_dir, _name("slow"), {"slow.py": SLOW}, max_concurrency=1
    )
    first = _start(api, project.developer, service, params={"tag": "first", "sleep": 30})
    _wait(api, first, project.viewer, until=lambda run: run["status"] == "running")
    queued = [
        _start(api, project.developer, service, params={"tag": f"q{i}", "sleep": 0})
        for i in range(3)
    ]
    for run_id in queued:
        assert _wait(api, run_id, project.viewer, until=lambda run: True)["status"] == "pending"

    cancel = api.client.post(f"/api/v1/runs/{queued[0]}/cancel", headers=project.developer)
    assert cancel.status_code == 200 and cancel.json() == {"status": "cancelled"}
    assert _wait(api, queued[0], project.viewer)["status"] == "cancelled"

    changed = api.client.patch(
        f"/api/v1/runs/{queued[1]}", json={"priority": 1}, headers=project.developer
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["priority"] == 1 and changed.json()["status"] == "pending"
    running = api.client.patch(
        f"/api/v1/runs/{first}", json={"priority": 1}, headers=project.developer
    )
    assert running.status_code == 409 and running.json()["error"]["code"] == "conflict"
    out_of_range = api.client.patch(
        f"/api/v1/runs/{queued[1]}", json={"priority": 0}, headers=project.developer
    )
    assert out_of_range.status_code == 422

    stop = api.client.post(f"/api/v1/runs/{first}/cancel", headers=project.developer)
    assert stop.json() == {"status": "cancelling"}
    assert _wait(api, first, project.viewer)["status"] == "cancelled"
    assert _wait(api, queued[1], project.viewer)["status"] == "succeeded"
    assert _wait(api, queued[2], project.viewer)["status"] == "succeeded"
    again = api.client.post(f"/api/v1/runs/{queued[0]}/cancel", headers=project.developer)
    assert again.json() == {"status": "not_active"}
    finished = api.client.patch(
        f"/api/v1/runs/{queued[2]}", json={"priority": 3}, headers=project.developer
    )
    assert finished.status_code == 409


def test_replay_on_the_same_and_another_version(
    sqlite_api: ApiHarness, service_dir: ServiceDir
) -> None:
    api = sqlite_api
    project = api.project()
    service = _name("replayed")
    event_type = f"replay.{uuid.uuid4().hex[:8]}"
    _deploy(api, project, service_dir, service, {"echo.py": ECHO}, label="v1")
    _deploy(
        api, project, service_dir, service, {"echo.py": ECHO.replace("hello", "hi")}, label="v2"
    )
    api.platform.link(event_type, api.service_id(service, project), weights={"v1": 100})
    sent = api.platform.send(event_type, {"name": "Ada"}, partitionkey="k1")
    (original,) = api.platform.wait_for_runs(event_id=sent["id"], timeout=60)
    assert original.status == "succeeded"

    same = api.client.post(f"/api/v1/runs/{original.id}/replay", headers=project.developer)
    assert same.status_code == 202, same.text
    other = api.client.post(
        f"/api/v1/runs/{original.id}/replay", json={"version": "v2"}, headers=project.developer
    )
    assert other.status_code == 202, other.text
    again = _wait(api, same.json()["run_id"], project.viewer)
    moved = _wait(api, other.json()["run_id"], project.viewer)

    assert again["version"]["label"] == "v1" and moved["version"]["label"] == "v2"
    for replay, answer in ((again, same), (moved, other)):
        assert replay["status"] == "succeeded"
        assert replay["trigger_id"] == "replay"
        assert replay["event_id"] == answer.json()["event_id"] != sent["id"]
        assert replay["correlation_id"] == sent["id"]
        event = replay["trigger_event"]
        assert event["type"] == event_type and event["data"] == {"name": "Ada"}
        assert event["partitionkey"] == "k1" and event["fxreplayof"] == original.id
        assert event["fxtarget"] == api.service_id(service, project)  # the event names ids
    assert any(line["message"] == "hi Ada" for line in moved["logs"])
    # only the replays ran: the link did not pick the replayed events up too
    flow = _runs(api, project.viewer, correlation_id=sent["id"])
    assert flow["total"] == 3
    untouched = api.client.get(f"/api/v1/runs/{original.id}", headers=project.viewer).json()
    assert untouched["status"] == "succeeded" and untouched["version"]["label"] == "v1"
    assert untouched["finished_at"] == original.finished_at

    trace = api.client.get(f"/api/v1/traces/{sent['id']}", headers=project.viewer).json()
    assert {r["id"] for r in trace["runs"]} == {original.id, again["id"], moved["id"]}
    assert len(trace["events"]) == 3
    replayed = {(e["from"], e["to"]) for e in trace["edges"] if e["kind"] == "replayed"}
    assert replayed == {(original.id, again["event_id"]), (original.id, moved["event_id"])}

    # a manual run replays too, keeping its parameters
    manual = _start(api, project.developer, service, params={"name": "Bo"})
    _wait(api, manual, project.viewer)
    replay = api.client.post(
        f"/api/v1/runs/{manual}/replay", json={"version": "v2"}, headers=project.developer
    )
    replay_run = _wait(api, replay.json()["run_id"], project.viewer)
    assert replay_run["result"] == {"echo": "Bo"} and replay_run["version"]["label"] == "v2"

    unknown = api.client.post(
        f"/api/v1/runs/{manual}/replay", json={"version": "v7"}, headers=project.developer
    )
    assert unknown.status_code == 422
    assert api.client.post("/api/v1/runs/nope/replay", headers=project.developer).status_code == 404


def test_report_compares_two_versions(sqlite_api: ApiHarness, service_dir: ServiceDir) -> None:
    api = sqlite_api
    project = api.project()
    service = _name("ab")
    event_type = f"ab.{uuid.uuid4().hex[:8]}"
    flaky = "from fxray import context\nif context.params['n'] % 2 == 0:\n    raise ValueError\n"
    _deploy(api, project, service_dir, service, {"m.py": flaky}, label="left")
    _deploy(api, project, service_dir, service, {"m.py": "pass\n"}, label="right")
    api.platform.link(
        event_type, api.service_id(service, project), weights={"left": 50, "right": 50}
    )
    started = time.time()
    sent = [api.platform.send(event_type, {"n": n}) for n in range(24)]
    for event in sent:
        api.platform.wait_for_runs(event_id=event["id"], timeout=60)

    runs = _runs(api, project.viewer, service=service, limit=100)["items"]
    assert len(runs) == 24
    expected: dict[str, dict[str, int]] = {}
    for run in runs:
        counts = expected.setdefault(run["version"]["label"], {"runs": 0, "failed": 0})
        counts["runs"] += 1
        counts["failed"] += run["status"] == "failed"
    assert set(expected) == {"left", "right"}  # both versions got traffic

    answer = api.client.get(f"/api/v1/services/{service}/report", headers=project.viewer)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["until"] - report["since"] == 24 * 3600
    by_label = {v["version"]["label"]: v for v in report["versions"]}
    assert [v["version"]["label"] for v in report["versions"]] == ["left", "right"]
    for label, counts in expected.items():
        row = by_label[label]
        assert row["runs"] == counts["runs"]
        assert row["failed"] == counts["failed"]
        assert row["succeeded"] == counts["runs"] - counts["failed"]
        assert row["error_rate"] == counts["failed"] / counts["runs"]
        assert 0 <= row["duration_p50_ms"] <= row["duration_p95_ms"]
    assert by_label["left"]["error_rate"] > 0 and by_label["right"]["error_rate"] == 0

    empty = api.client.get(
        f"/api/v1/services/{service}/report",
        params={"since": started - 7200, "until": started - 3600},
        headers=project.viewer,
    ).json()
    assert empty["versions"] == []
    iso = api.client.get(
        f"/api/v1/services/{service}/report",
        params={"since": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 60))},
        headers=project.viewer,
    ).json()
    assert sum(v["runs"] for v in iso["versions"]) == 24


def test_log_stream(sqlite_api: ApiHarness, service_dir: ServiceDir) -> None:
    api = sqlite_api
    project = api.project()
    service = _deploy(api, project, service_dir, _name("stream"), {"slow.py": SLOW})

    done = _start(api, project.developer, service, params={"tag": "quick"})
    _wait(api, done, project.viewer)
    with api.client.stream(
        "GET", f"/api/v1/runs/{done}/logs/stream", headers=project.viewer
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = _sse(answer.read().decode())
    assert [e for e, _ in events] == ["log", "log", "end"]
    assert [d["message"] for _, d in events[:2]] == ["start quick", "done quick"]
    assert events[-1][1] == {"run_id": done, "status": "succeeded"}

    going = _start(api, project.developer, service, params={"tag": "long", "sleep": 1.5})
    before = _wait(api, going, project.viewer, until=lambda run: True)
    assert before["status"] not in FINAL
    opened = time.monotonic()
    with api.client.stream(
        "GET", f"/api/v1/runs/{going}/logs/stream", headers=project.viewer
    ) as answer:
        events = _sse(answer.read().decode())
    assert time.monotonic() - opened > 0.5  # it waited for the run
    assert [e for e, _ in events] == ["log", "log", "end"]
    assert events[-1][1]["status"] == "succeeded"

    resumed = api.client.get(
        f"/api/v1/runs/{going}/logs/stream",
        headers={**project.viewer, "Last-Event-ID": "0"},
    )
    assert [d.get("message") for _, d in _sse(resumed.text)] == ["done long", None]
    filtered = api.client.get(
        f"/api/v1/runs/{going}/logs/stream", params={"level": "ERROR"}, headers=project.viewer
    )
    assert [e for e, _ in _sse(filtered.text)] == ["end"]
    assert (
        api.client.get("/api/v1/runs/nope/logs/stream", headers=project.viewer).status_code == 404
    )
