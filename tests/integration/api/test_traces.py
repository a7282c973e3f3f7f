"""Traces through the API: the causal graph of a three-service flow, and who sees what of it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness

EMIT = """
from fxray import context
context.log.info("hop %s", context.params.get("hop"))
context.events.send("{out}", {{"hop": context.params.get("hop", 0) + 1}})
"""

SINK = """
from fxray import context
raise ValueError("end of the line at hop %s" % context.params.get("hop"))
"""


def _trace(api: ApiHarness, key: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = api.client.get(f"/api/v1/traces/{key}", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_trace_of_a_three_service_flow(api: ApiHarness, service_dir: Callable[..., Path]) -> None:
    first, second, outsider = api.project(), api.project(), api.project()
    tag = uuid.uuid4().hex[:6]
    types = [f"flow{tag}.a", f"flow{tag}.b", f"flow{tag}.c"]
    names = [f"hop-a-{tag}", f"hop-b-{tag}", f"hop-c-{tag}"]
    scripts = [EMIT.format(out=types[1]), EMIT.format(out=types[2]), SINK]
    owners = [first, first, second]  # A -> B in the first project, C in the second
    for name, script, event_type, owner in zip(names, scripts, types, owners, strict=True):
        folder = service_dir(name, {"step.py": script}, trigger_events=[event_type])
        api.platform.deploy(folder, label="v1", project=owner.name)

    correlation = f"order-{tag}"
    root = api.platform.send(types[0], {"hop": 0}, fxcorrelationid=correlation)
    runs = api.platform.wait_for_runs(correlation_id=correlation, count=3, timeout=90)
    ids = [api.service_id(name, owner) for name, owner in zip(names, owners, strict=True)]
    assert [r.service for r in runs] == ids

    # the whole graph, from the root event id, from the correlation id, from a later event
    whole = _trace(api, root["id"], api.admin)
    assert whole["correlation_id"] == correlation
    assert [e["type"] for e in whole["events"]] == types
    assert [r["service"] for r in whole["runs"]] == names
    event_ids = [e["id"] for e in whole["events"]]
    run_ids = [r["id"] for r in whole["runs"]]
    assert event_ids[0] == root["id"]
    assert whole["edges"] == [
        {"from": event_ids[0], "to": run_ids[0], "kind": "triggered"},
        {"from": run_ids[0], "to": event_ids[1], "kind": "emitted"},
        {"from": event_ids[1], "to": run_ids[1], "kind": "triggered"},
        {"from": run_ids[1], "to": event_ids[2], "kind": "emitted"},
        {"from": event_ids[2], "to": run_ids[2], "kind": "triggered"},
    ]
    assert [r["parameters"] for r in whole["runs"]] == [{"hop": 0}, {"hop": 1}, {"hop": 2}]
    assert [r["status"] for r in whole["runs"]] == ["succeeded", "succeeded", "failed"]
    assert "end of the line at hop 2" in whole["runs"][2]["error"]
    assert all(r["version"]["label"] == "v1" for r in whole["runs"])
    assert all(r["duration_ms"] is not None for r in whole["runs"])
    assert whole["events"][1]["parent_id"] == root["id"]
    assert whole["events"][1]["run_id"] == run_ids[0]
    assert whole["events"][0]["data"] == {"hop": 0}
    assert whole["events"][0]["attributes"]["fxcorrelationid"] == correlation
    assert _trace(api, correlation, api.admin) == whole
    assert _trace(api, event_ids[2], api.admin) == whole

    # the first project sees its runs, what triggered them and what they emitted
    mine = _trace(api, correlation, first.viewer)
    assert [r["id"] for r in mine["runs"]] == run_ids[:2]
    assert [e["id"] for e in mine["events"]] == event_ids
    assert [edge["kind"] for edge in mine["edges"]] == ["triggered", "emitted"] * 2
    # the second only its run and the event that triggered it
    theirs = _trace(api, root["id"], second.viewer)
    assert [r["id"] for r in theirs["runs"]] == run_ids[2:]
    assert [e["id"] for e in theirs["events"]] == event_ids[2:]
    assert theirs["edges"] == [{"from": event_ids[2], "to": run_ids[2], "kind": "triggered"}]
    # a third project sees nothing, as if the flow did not exist
    for key in (root["id"], correlation):
        answer = api.client.get(f"/api/v1/traces/{key}", headers=outsider.admin)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    assert api.client.get("/api/v1/traces/nothing-here", headers=api.admin).status_code == 404
