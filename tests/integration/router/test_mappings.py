"""Event mappings in the router: an event of type A also becomes one of type B, routed on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from fxray import Platform
from fxray.events import cloudevent as ev
from fxray.events.mappings import MAPPING_ID, mapped_event_id

ECHO = """
from fxray import context
context.result = {"params": dict(context.params), "type": context.event["type"]}
"""


def _types(*names: str) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{name}.{tag}" for name in names]


def test_a_mapped_event_is_routed_with_the_mapped_data(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    a, b = _types("orders.placed", "billing.requested")
    platform.deploy(service_dir("biller", {"m.py": ECHO}, trigger_events=[b]))
    store = platform.store
    assert store is not None
    rule = store.add_mapping(
        "default", a, b, [{"from": "order.id", "to": "order_id", "op": "rename"}], True
    )
    platform.refresh()

    root = platform.send(a, {"order": {"id": 7, "total": 3}, "customer": "ada"})
    (run,) = platform.wait_for_runs(correlation_id=root["id"], timeout=60)

    assert run.status == "succeeded"
    assert run.event_type == b
    assert run.result["params"] == {"order": {"total": 3}, "customer": "ada", "order_id": 7}
    mapped = store.get_event(run.event_id)
    assert mapped["id"] == mapped_event_id(rule.id, root["id"])
    assert mapped[ev.PARENT_ID] == root["id"]
    assert mapped[MAPPING_ID] == rule.id
    assert platform.stats()["counters"]["mapped"] >= 1


def test_mappings_chain_follow_changes_and_skip_shadow_and_redelivered_events(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    a, b, c = _types("chain.a", "chain.b", "chain.c")
    platform.deploy(service_dir("end", {"m.py": ECHO}, trigger_events=[c]))
    store = platform.store
    assert store is not None
    store.add_mapping("default", a, b, [{"from": "x", "to": "y", "op": "copy"}], False)
    second = store.add_mapping("default", b, c, [], True)
    platform.refresh()

    root = platform.send(a, {"x": 1, "z": 2})
    (run,) = platform.wait_for_runs(correlation_id=root["id"], timeout=60)
    assert run.event_type == c
    assert run.result["params"] == {"y": 1}  # only the mapped field, then all of it

    # the same event again (a redelivery) maps to the same event ids: no second run
    platform.publish([root])
    shadow = platform.send(a, {"x": 2}, fxshadow="true")
    platform.wait_idle(timeout=60)
    assert len(platform.runs(correlation_id=root["id"], limit=None)) == 1
    assert platform.runs(correlation_id=shadow["id"], limit=None) == []
    trace = platform.trace(shadow["id"])
    assert [e["event"]["type"] for e in trace if e["kind"] == "event"] == [a]

    # switching a rule off reaches the router without a restart
    store.update_mapping(second.id, active=False)
    platform.refresh()
    later = platform.send(a, {"x": 3})
    platform.wait_idle(timeout=60)
    types = [e["event"]["type"] for e in platform.trace(later["id"]) if e["kind"] == "event"]
    assert sorted(types) == sorted([a, b])
    assert platform.runs(correlation_id=later["id"], limit=None) == []
