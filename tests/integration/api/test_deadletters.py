"""/api/v1/deadletters: letters with their marks, requeue and discard, per project and role;
the marks are the platform's (what the web UI and the CLI read too)."""

from __future__ import annotations

import io
import json
import zipfile

from fxray.bus import OutgoingRecord
from fxray.events import cloudevent as ev
from fxray.events.deadletters import DLQ_PREFIX
from tests.integration.api.conftest import ApiHarness

V1 = "/api/v1"


def _zip(name: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"name": name, "entrypoint": "m.py"}))
        zf.writestr("m.py", "print('hi')\n")
    return out.getvalue()


def _letters(api: ApiHarness, service_id: str) -> tuple[list[str], str]:
    """Two letters of failed runs of ``service_id`` and one record that was never an event;
    their positions and the bad record's."""
    platform = api.platform
    assert platform.bus is not None
    topic = platform.settings.deadletter_topic
    before = platform.bus.end_offsets(topic)  # empty for a topic not made yet
    failed = []
    for n in range(2):
        event = ev.new_event("orders.placed", {"n": n}, source="test")
        headers = [
            (DLQ_PREFIX + "reason", b"run failed: ValueError"),
            (DLQ_PREFIX + "run_id", f"run-{n}".encode()),
            (DLQ_PREFIX + "service", service_id.encode()),
            (DLQ_PREFIX + "time", str(1000.0 + n).encode()),
        ]
        failed.append(OutgoingRecord(ev.to_json(event), key=b"k", headers=headers))
    bad = OutgoingRecord(b"not json", key=b"k", headers=[(DLQ_PREFIX + "reason", b"bad")])
    platform.bus.produce(topic, [*failed, bad])
    after = platform.bus.end_offsets(topic)
    positions = []
    for partition, end in after.items():
        positions += [f"{partition}:{o}" for o in range(before.get(partition, 0), end)]
    assert len(positions) == 3
    return positions, positions[-1]  # one partition key: in order


def test_dead_letters_with_marks_per_project_and_role(sqlite_api: ApiHarness) -> None:
    api = sqlite_api
    team, other = api.project(), api.project()
    service_id = api.platform.deploy(_zip("scorer"), project=team.name).service.id
    positions, bad = _letters(api, service_id)
    first, second = [p for p in positions if p != bad]

    listed = api.client.get(f"{V1}/deadletters", headers=team.viewer)
    assert listed.status_code == 200, listed.text
    mine = {item["position"]: item for item in listed.json()["items"]}
    assert set(mine) >= {first, second} and bad not in mine
    assert mine[first]["project"] == team.name and mine[first]["service"] == service_id
    assert mine[first]["mark"] is None and mine[first]["reason"] == "run failed: ValueError"
    assert api.client.get(f"{V1}/deadletters", headers=other.viewer).json()["items"] == []

    # a viewer may not, another project does not see them
    refused = api.client.post(
        f"{V1}/deadletters/requeue", json={"positions": [first]}, headers=team.viewer
    )
    assert refused.json()["results"] == [
        {"position": first, "ok": False, "text": "this needs the developer role"}
    ]
    hidden = api.client.post(
        f"{V1}/deadletters/discard", json={"positions": [first, bad]}, headers=other.developer
    )
    assert [r["text"] for r in hidden.json()["results"]] == ["not found", "not found"]

    requeued = api.client.post(
        f"{V1}/deadletters/requeue", json={"positions": [first]}, headers=team.developer
    )
    assert requeued.status_code == 200, requeued.text
    (result,) = requeued.json()["results"]
    assert result["ok"] and "-> event" in result["text"]
    again = api.client.post(
        f"{V1}/deadletters/discard", json={"positions": [first, second]}, headers=team.developer
    )
    assert [(r["ok"], r["text"]) for r in again.json()["results"]] == [
        (False, "already requeued"),
        (True, "discarded"),
    ]

    marked = {
        item["position"]: item["mark"]
        for item in api.client.get(f"{V1}/deadletters", headers=team.viewer).json()["items"]
    }
    assert marked[first]["action"] == "requeued" and marked[second]["action"] == "discarded"
    developer_key = api.platform.store.authenticate(  # type: ignore[union-attr]
        team.developer["Authorization"].removeprefix("Bearer ")
    )
    assert developer_key is not None and marked[first]["by"] == developer_key.id
    # the same marks the web UI and the CLI read
    platform_marks = api.platform.dead_letter_marks()
    assert platform_marks[first]["action"] == "requeued"
    assert platform_marks[second]["action"] == "discarded"
    open_ones = api.client.get(f"{V1}/deadletters?show=open", headers=team.viewer).json()
    assert {first, second}.isdisjoint(i["position"] for i in open_ones["items"])
    handled = api.client.get(f"{V1}/deadletters?show=handled", headers=team.viewer).json()
    assert {first, second} <= {i["position"] for i in handled["items"]}

    # a record of no project: platform-wide admins only
    everyone = api.client.get(f"{V1}/deadletters?show=open", headers=api.admin).json()["items"]
    assert any(i["position"] == bad and i["project"] is None for i in everyone)
    dropped = api.client.post(
        f"{V1}/deadletters/discard", json={"positions": [bad]}, headers=api.admin
    )
    assert dropped.json()["results"] == [{"position": bad, "ok": True, "text": "discarded"}]


def test_dead_letter_requests_are_checked(sqlite_api: ApiHarness) -> None:
    api = sqlite_api
    team = api.project()
    for body in ({"positions": []}, {"positions": ["zero"]}, {"positions": ["0:1"], "x": 1}):
        answer = api.client.post(f"{V1}/deadletters/requeue", json=body, headers=team.developer)
        assert answer.status_code == 422, (body, answer.text)
    assert api.client.get(f"{V1}/deadletters").status_code == 401
    other = api.client.get(f"{V1}/deadletters?project=elsewhere", headers=team.viewer)
    assert other.status_code == 404
