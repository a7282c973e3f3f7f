"""Triggers (late linking, A/B weights, shadow versions) and event mappings over the API."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.integration.conftest import write_service

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness, ProjectKeys

ECHO = """
from fxray import context
context.result = {"params": dict(context.params), "type": context.event["type"]}
"""
LABELLED = "from fxray import context\ncontext.result = {label!r}\n"
EMITTER = """
from fxray import context
context.events.send("{out}", {{"from": {label!r}}})
context.result = {label!r}
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _deploy(
    api: ApiHarness,
    root: Path,
    project: ProjectKeys,
    name: str,
    code: str = ECHO,
    label: str | None = None,
    **manifest: Any,
) -> str:
    folder = write_service(root, name, {"main.py": code}, **manifest)
    return api.platform.deploy(folder, label=label, project=project.name).version.id


def test_trigger_crud_and_role_boundaries(api: ApiHarness, tmp_path: Path) -> None:
    mine, other = api.project(), api.project()
    service = _name("linked")
    first = _deploy(api, tmp_path, mine, service, label="one")
    _deploy(api, tmp_path, mine, service, code=ECHO + "# two\n", label="two")
    body = {"pattern": "crud.*", "service": service, "filters": {"source": "shop/*"}}

    viewer = api.client.post("/api/v1/triggers", json=body, headers=mine.viewer)
    assert viewer.status_code == 403
    stranger = api.client.post("/api/v1/triggers", json=body, headers=other.developer)
    assert stranger.status_code == 404
    made = api.client.post(
        "/api/v1/triggers", json={**body, "weights": {"one": 1, "two": 3}}, headers=mine.developer
    )
    assert made.status_code == 201, made.text
    trigger = made.json()
    assert (trigger["service"], trigger["project"]) == (service, mine.name)
    service_id = api.service_id(service, mine)
    assert trigger["weights"] == {
        first: 1,
        f"{service_id}@" + trigger_hash(api, service_id, "two"): 3,
    }
    assert trigger["filters"] == {"source": "shop/*"}
    url = f"/api/v1/triggers/{trigger['id']}"

    assert api.client.get(url, headers=mine.viewer).json() == trigger
    assert api.client.get(url, headers=other.admin).status_code == 404
    assert api.client.patch(url, json={"ordered": True}, headers=mine.viewer).status_code == 403
    assert api.client.delete(url, headers=other.developer).status_code == 404
    listed = api.client.get("/api/v1/triggers", headers=mine.viewer).json()
    assert [t["id"] for t in listed["items"]] == [trigger["id"]]
    assert api.client.get("/api/v1/triggers", headers=other.viewer).json()["items"] == []
    assert (
        api.client.get(
            "/api/v1/triggers", params={"project": other.name}, headers=mine.viewer
        ).status_code
        == 404
    )
    by_admin = api.client.get(
        "/api/v1/triggers", params={"project": mine.name, "pattern": "crud.*"}, headers=api.admin
    ).json()
    assert by_admin["total"] == 1
    none = api.client.get("/api/v1/triggers", params={"pattern": "x"}, headers=mine.viewer)
    assert none.json()["total"] == 0

    changed = api.client.patch(
        url,
        json={"weights": {"two": 100}, "shadow_version": "one", "ordered": True},
        headers=mine.developer,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["shadow_version"] == first
    assert list(changed.json()["weights"].values()) == [100]
    assert changed.json()["ordered"] is True
    cleared = api.client.patch(url, json={"shadow_version": None}, headers=mine.developer)
    assert cleared.json()["shadow_version"] is None
    assert api.platform.triggers(service_id)[0].shadow_version is None

    assert api.client.delete(url, headers=mine.developer).status_code == 204
    assert api.client.get(url, headers=mine.viewer).status_code == 404
    assert api.platform.triggers(service_id) == []


def trigger_hash(api: ApiHarness, service_id: str, label: str) -> str:
    version = next(v for v in api.platform.versions(service_id) if v.label == label)
    return version.id.split("@", 1)[1]


def test_invalid_triggers_list_every_problem(api: ApiHarness, tmp_path: Path) -> None:
    mine = api.project()
    service = _name("strict")
    _deploy(api, tmp_path, mine, service)
    answer = api.client.post(
        "/api/v1/triggers",
        json={
            "pattern": "has space",
            "service": service,
            "filters": {"Not An Attribute": "x", "data.ok": "1"},
            "weights": {"nope": 10, "also-nope": 5},
            "shadow_version": "missing",
        },
        headers=mine.developer,
    )
    assert answer.status_code == 422
    problems = answer.json()["error"]["problems"]
    assert len(problems) == 5, problems
    assert any("white space" in p for p in problems)
    assert any("Not An Attribute" in p for p in problems)
    assert any("'nope'" in p for p in problems) and any("'also-nope'" in p for p in problems)
    assert any("shadow_version" in p for p in problems)
    zero = api.client.post(
        "/api/v1/triggers",
        json={"pattern": "a.b", "service": service, "weights": {"x": -1}},
        headers=mine.developer,
    )
    assert zero.status_code == 422
    assert "must be a whole number >= 0" in zero.json()["error"]["problems"][0]
    missing = api.client.post(
        "/api/v1/triggers", json={"pattern": "a.b", "service": "no-such"}, headers=mine.developer
    )
    assert missing.status_code == 404
    typo = api.client.post(
        "/api/v1/triggers",
        json={"pattern": "a.b", "service": service, "weight": {}},
        headers=mine.developer,
    )
    assert typo.status_code == 422
    made = api.client.post(
        "/api/v1/triggers", json={"pattern": "a.b", "service": service}, headers=mine.developer
    ).json()
    bad_patch = api.client.patch(
        f"/api/v1/triggers/{made['id']}",
        json={"pattern": None, "weights": {"ghost": 1}},
        headers=mine.developer,
    )
    assert bad_patch.status_code == 422
    assert len(bad_patch.json()["error"]["problems"]) == 2


def test_late_linking_and_weight_changes_while_events_flow(
    sqlite_api: ApiHarness, tmp_path: Path
) -> None:
    api = sqlite_api
    mine = api.project()
    service = _name("late")
    event_type = f"flow.{uuid.uuid4().hex[:6]}"
    one = _deploy(api, tmp_path, mine, service, LABELLED.format(label="one"), label="one")
    two = _deploy(api, tmp_path, mine, service, LABELLED.format(label="two"), label="two")
    sent: list[tuple[float, str]] = []
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set() and n < 600:
            at = time.monotonic()
            event = api.platform.send(event_type, {"n": n})
            sent.append((at, event["id"]))
            n += 1
            time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(0.5)
        made = api.client.post(
            "/api/v1/triggers",
            json={"pattern": event_type, "service": service, "weights": {"one": 100}},
            headers=mine.developer,
        )
        assert made.status_code == 201, made.text
        linked_at = time.monotonic()
        time.sleep(1.0)
        changed = api.client.patch(
            f"/api/v1/triggers/{made.json()['id']}",
            json={"weights": {"one": 0, "two": 100}},
            headers=mine.developer,
        )
        assert changed.status_code == 200, changed.text
        changed_at = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        producer.join(timeout=60)
    api.platform.wait_idle(timeout=120)

    runs = api.platform.runs(service=api.service_id(service, mine), limit=None)
    by_event = {r.event_id: r for r in runs}
    assert max(Counter(r.event_id for r in runs).values()) == 1
    after_link = [event_id for at, event_id in sent if at > linked_at]
    assert after_link and all(event_id in by_event for event_id in after_link)
    # (events are routed when consumed: one sent just before a change may be routed after it)
    assert len(by_event) < len(sent)  # the first events came before the link
    settled = [event_id for at, event_id in sent if at > changed_at + 1.0]
    assert settled and all(by_event[event_id].version_id == two for event_id in settled)
    early = [by_event[event_id].version_id for at, event_id in sent if linked_at < at < changed_at]
    assert early.count(one) > len(early) / 2
    assert all(r.status == "succeeded" for r in runs)


def test_shadow_version_runs_on_a_copy_and_its_events_go_nowhere(
    sqlite_api: ApiHarness, tmp_path: Path
) -> None:
    api = sqlite_api
    mine = api.project()
    tag = uuid.uuid4().hex[:6]
    incoming, outgoing = f"shadow.in.{tag}", f"shadow.out.{tag}"
    service, downstream = _name("scored"), _name("downstream")
    live = _deploy(api, tmp_path, mine, service, EMITTER.format(out=outgoing, label="live"), "v1")
    shadow = _deploy(
        api, tmp_path, mine, service, EMITTER.format(out=outgoing, label="shadow"), "v2"
    )
    _deploy(api, tmp_path, mine, downstream, trigger_events=[outgoing])
    made = api.client.post(
        "/api/v1/triggers",
        json={
            "pattern": incoming,
            "service": service,
            "weights": {"v1": 100},
            "shadow_version": "v2",
        },
        headers=mine.developer,
    )
    assert made.status_code == 201, made.text
    assert made.json()["shadow_version"] == shadow

    roots = [api.platform.send(incoming, {"i": i}) for i in range(3)]
    for root in roots:
        api.platform.wait_for_runs(correlation_id=root["id"], count=3, timeout=60)
    api.platform.wait_idle(timeout=60)

    service_id, downstream_id = api.service_id(service, mine), api.service_id(downstream, mine)
    for root in roots:
        runs = api.platform.runs(correlation_id=root["id"], limit=None)
        assert sorted((r.service, r.version_id, r.shadow) for r in runs) == sorted(
            [
                (service_id, live, False),
                (service_id, shadow, True),
                (downstream_id, _latest(api, downstream_id), False),
            ]
        )
        assert all(r.status == "succeeded" for r in runs)
        downstream_run = next(r for r in runs if r.service == downstream_id)
        assert downstream_run.result["params"] == {"from": "live"}
        events = [e["event"] for e in api.platform.trace(root["id"]) if e["kind"] == "event"]
        marked = [e for e in events if e.get("fxshadow")]
        assert len(marked) == 1 and marked[0]["data"] == {"from": "shadow"}
        assert api.platform.runs(event_id=marked[0]["id"]) == []


def _latest(api: ApiHarness, service_id: str) -> str:
    return api.platform.versions(service_id)[-1].id


def test_mapping_crud_cycles_and_a_mapped_event_runs(api: ApiHarness, tmp_path: Path) -> None:
    mine, other = api.project(), api.project()
    tag = uuid.uuid4().hex[:6]
    a, b, c = f"map.a.{tag}", f"map.b.{tag}", f"map.c.{tag}"
    service = _name("mapped")
    _deploy(api, tmp_path, mine, service, trigger_events=[b])
    rule = {
        "source_type": a,
        "target_type": b,
        "fields": [{"from": "customer.name", "to": "name", "op": "rename"}],
        "map_all": True,
    }
    assert api.client.post("/api/v1/mappings", json=rule, headers=mine.viewer).status_code == 403
    made = api.client.post("/api/v1/mappings", json=rule, headers=mine.developer)
    assert made.status_code == 201, made.text
    mapping = made.json()
    assert mapping["project"] == mine.name
    assert mapping["fields"] == [{"from": "customer.name", "to": "name", "op": "rename"}]
    url = f"/api/v1/mappings/{mapping['id']}"

    sent = api.client.post(
        "/api/v1/events",
        json={
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "test/mappings",
            "type": a,
            "data": {"customer": {"name": "Ada", "vip": True}, "n": 1},
        },
        headers={**mine.developer, "Content-Type": "application/cloudevents+json"},
    )
    assert sent.status_code == 202, sent.text
    (run,) = api.platform.wait_for_runs(correlation_id=sent.json()["ids"][0], timeout=60)
    assert run.service == api.service_id(service, mine) and run.status == "succeeded"
    assert run.result == {"params": {"customer": {"vip": True}, "n": 1, "name": "Ada"}, "type": b}

    itself = api.client.post(
        "/api/v1/mappings", json={**rule, "target_type": a}, headers=mine.developer
    )
    assert itself.status_code == 422
    assert any("onto itself" in p for p in itself.json()["error"]["problems"])
    empty = api.client.post(
        "/api/v1/mappings",
        json={"source_type": "x y", "target_type": c, "fields": [{"from": "", "to": "a"}]},
        headers=mine.developer,
    )
    assert empty.status_code == 422
    assert len(empty.json()["error"]["problems"]) == 2
    back = api.client.post(
        "/api/v1/mappings",
        json={**rule, "source_type": c, "target_type": a},
        headers=mine.developer,
    )
    assert back.status_code == 201
    cycle = api.client.post(
        "/api/v1/mappings",
        json={**rule, "source_type": b, "target_type": c},
        headers=other.developer,
    )
    assert cycle.status_code == 409
    assert f"{b} -> {c} -> {a} -> {b}" in cycle.json()["error"]["message"]
    # a change that would close the cycle is refused too; switched off, it is allowed
    closing = api.client.patch(
        f"/api/v1/mappings/{back.json()['id']}", json={"source_type": b}, headers=mine.developer
    )
    assert closing.status_code == 409
    off = api.client.patch(
        f"/api/v1/mappings/{back.json()['id']}",
        json={"source_type": b, "active": False},
        headers=mine.developer,
    )
    assert off.status_code == 200 and off.json()["active"] is False

    assert api.client.get(url, headers=mine.viewer).json() == mapping
    assert api.client.get(url, headers=other.viewer).status_code == 404
    assert api.client.delete(url, headers=other.admin).status_code == 404
    listed = api.client.get("/api/v1/mappings", params={"source_type": a}, headers=mine.viewer)
    assert [m["id"] for m in listed.json()["items"]] == [mapping["id"]]
    assert api.client.get("/api/v1/mappings", headers=other.viewer).json()["total"] == 0
    admin = api.client.post(
        "/api/v1/mappings",
        json={**rule, "source_type": c, "target_type": f"{c}.x"},
        headers=api.admin,
    )
    assert admin.status_code == 422  # a platform-wide key names the project
    admin = api.client.post(
        "/api/v1/mappings",
        json={**rule, "source_type": c, "target_type": f"{c}.x", "project": other.name},
        headers=api.admin,
    )
    assert admin.status_code == 201 and admin.json()["project"] == other.name
    assert api.client.delete(url, headers=mine.developer).status_code == 204
    assert api.client.get(url, headers=mine.viewer).status_code == 404
