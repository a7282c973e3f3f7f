"""The event catalog: counts, first/last seen, emitters, linked services, inferred schemas and
their history, and what each project's keys see."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness

# emits the checked event with the order's fields it got
CHECK = (
    "from fxray import context\n"
    "context.events.send(context.params['topic'], {'order': context.params['id'], "
    "'ok': True})\n"
)
SINK = "from fxray import context\ncontext.result = 1\n"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def catalog_entry(api: ApiHarness, event_type: str) -> dict[str, Any] | None:
    answer = api.client.get(f"/api/v1/catalog/{event_type}", headers=api.admin)
    return answer.json() if answer.status_code == 200 else None


def counted(api: ApiHarness, event_type: str, count: int) -> Callable[[], Any]:
    def check() -> Any:
        entry = catalog_entry(api, event_type)
        return entry if entry is not None and entry["count"] >= count else None

    return check


def test_catalog_of_a_two_service_flow(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api = sqlite_api
    project, other = api.project(), api.project()
    tag = uuid.uuid4().hex[:8]
    order, checked, stray = f"cat{tag}.order", f"cat{tag}.checked", f"cat{tag}.stray"
    checker, sink = f"checker-{tag}", f"sink-{tag}"
    api.platform.deploy(
        service_dir(checker, {"c.py": CHECK}, trigger_events=[order]), project=project.name
    )
    api.platform.deploy(
        service_dir(sink, {"s.py": SINK}, trigger_events=[f"cat{tag}.check*"]),
        project=project.name,
    )
    started = time.time()
    # one event at a time, so each schema change is its own version
    samples: list[dict[str, Any]] = [
        {"id": 1, "amount": 2, "note": "first"},
        {"id": 2, "amount": 2.5, "note": None},  # amount: a number; note: nullable
        {"id": 3, "amount": 4},  # note: optional
        {"id": 4, "amount": 1, "note": "again"},  # nothing new
    ]
    for n, data in enumerate(samples, start=1):
        api.platform.send(order, {**data, "topic": checked})
        wait_for(counted(api, order, n), what=f"{n} {order} events in the catalog")
    api.platform.send(stray, {"x": 1})
    wait_for(counted(api, checked, 4), what=f"4 {checked} events in the catalog")
    wait_for(counted(api, stray, 1), what="the stray event in the catalog")
    api.platform.wait_idle(timeout=60)

    listed = api.client.get(f"/api/v1/catalog?prefix=cat{tag}.", headers=project.viewer)
    assert listed.status_code == 200
    by_type = {item["type"]: item for item in listed.json()["items"]}
    assert set(by_type) == {order, checked}  # the stray type is none of the project's business
    assert by_type[order]["count"] == 4
    assert by_type[order]["emitters"] == [] and by_type[order]["linked_services"] == [checker]
    assert by_type[checked]["count"] == 4
    assert by_type[checked]["emitters"] == [checker]
    assert by_type[checked]["linked_services"] == [sink]
    for item in by_type.values():
        assert started - 5 <= item["first_seen"] <= item["last_seen"] <= time.time() + 5
    assert by_type[order]["first_seen"] < by_type[order]["last_seen"]

    detail = api.client.get(f"/api/v1/catalog/{order}", headers=project.viewer).json()
    schema = detail["schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["amount", "id", "topic"]
    assert schema["properties"]["id"] == {"type": "integer"}
    assert schema["properties"]["amount"] == {"type": "number"}
    assert schema["properties"]["note"] == {"type": ["string", "null"]}
    assert detail["schema_version"] == 3

    history = api.client.get(f"/api/v1/catalog/{order}/history", headers=project.viewer).json()
    versions = history["items"]
    assert [v["version"] for v in versions] == [1, 2, 3] and history["total"] == 3
    assert versions[0]["changes"] == ["added schema (object)"]
    assert set(versions[1]["changes"]) == {
        "field amount type integer -> number",
        "field note became nullable",
    }
    assert versions[2]["changes"] == ["field note became optional"]
    assert versions[2]["schema"] == schema
    assert versions[0]["at"] <= versions[1]["at"] <= versions[2]["at"]

    emitted = api.client.get(f"/api/v1/catalog/{checked}", headers=project.viewer).json()
    assert emitted["schema"]["properties"] == {
        "ok": {"type": "boolean"},
        "order": {"type": "integer"},
    }

    # another project sees none of it; the platform admin sees everything
    mine = api.client.get(f"/api/v1/catalog?prefix=cat{tag}.", headers=other.admin).json()
    assert mine["items"] == [] and mine["total"] == 0
    for path in (order, f"{order}/history", stray):
        assert api.client.get(f"/api/v1/catalog/{path}", headers=other.admin).status_code == 404
    everything = api.client.get(f"/api/v1/catalog?prefix=cat{tag}.", headers=api.admin).json()
    assert [i["type"] for i in everything["items"]] == sorted([checked, order, stray])
    scoped = api.client.get(
        f"/api/v1/catalog?prefix=cat{tag}.&project={project.name}", headers=api.admin
    ).json()
    assert {i["type"] for i in scoped["items"]} == {order, checked}
    page = api.client.get(f"/api/v1/catalog?prefix=cat{tag}.&limit=1", headers=api.admin).json()
    assert page["total"] == 3 and len(page["items"]) == 1


def test_unknown_types_and_bad_queries(sqlite_api: ApiHarness) -> None:
    api = sqlite_api
    assert api.client.get("/api/v1/catalog/no.such.type", headers=api.admin).status_code == 404
    missing = api.client.get("/api/v1/catalog/no.such.type/history", headers=api.admin)
    assert missing.status_code == 404
    assert api.client.get("/api/v1/catalog?limit=0", headers=api.admin).status_code == 422
    long = api.client.get(f"/api/v1/catalog?prefix={'x' * 300}", headers=api.admin)
    assert long.status_code == 422
    assert api.client.get("/api/v1/catalog").status_code == 401
    project = api.project()
    hidden = api.client.get("/api/v1/catalog?project=someone-else", headers=project.viewer)
    assert hidden.status_code == 404
