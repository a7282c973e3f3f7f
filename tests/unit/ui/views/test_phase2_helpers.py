"""The pure parts of the catalog, trace and events views: schema diffs, the causal chain and
waterfall of a trace, and schema problems per field path."""

from __future__ import annotations

from typing import Any

from fxray.api.schemas.common import VersionRef
from fxray.api.schemas.traces import TraceEdge, TraceEvent, TraceOut, TraceRun
from fxray.ui.views.catalog import schema_diff
from fxray.ui.views.events import schema_problems
from fxray.ui.views.traces import causal_chain, waterfall

ORDER = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "amount": {"type": "integer"}},
    "required": ["amount", "id"],
}


def test_schema_diff_marks_changed_lines() -> None:
    changed = {**ORDER, "properties": {**ORDER["properties"], "amount": {"type": "number"}}}
    lines = schema_diff(ORDER, changed)
    assert [(x.kind, x.text.strip()) for x in lines if x.kind in ("added", "removed")] == [
        ("removed", '-      "type": "integer"'.strip()),
        ("added", '+      "type": "number"'.strip()),
    ]
    assert lines[0].kind == "hunk"
    assert schema_diff(ORDER, ORDER) == []
    first = schema_diff(None, ORDER)
    assert first and all(x.kind in ("added", "hunk") for x in first)


def test_schema_problems_name_field_paths() -> None:
    assert schema_problems(ORDER, {"id": 1, "amount": 2}) == []
    problems = dict(schema_problems(ORDER, {"amount": "lots"}))
    assert problems["data.id"] == "is required"
    assert "is not of type 'integer'" in problems["data.amount"]
    nested = {"type": "object", "properties": {"items": {"type": "array", "items": ORDER}}}
    found = schema_problems(nested, {"items": [{"id": 1, "amount": 1}, {"id": "x", "amount": 1}]})
    assert [path for path, _ in found] == ["data.items[1].id"]
    assert schema_problems(None, {"anything": True}) == []


def _event(event_id: str, at: float, run_id: str | None = None) -> TraceEvent:
    return TraceEvent(
        id=event_id, type="t", source="s", time=None, received_at=at, parent_id=None,
        run_id=run_id, replay_of=None, attributes={},
    )  # fmt: skip


def _run(run_id: str, event_id: str, created: float, started: float, finished: float) -> TraceRun:
    return TraceRun(
        id=run_id, service=run_id, version=VersionRef(id=f"{run_id}@v", label=None),
        trigger_id=None, event_id=event_id, status="succeeded", shadow=False, attempt=1, error=None,
        created_at=created, started_at=started, finished_at=finished, duration_ms=None,
    )  # fmt: skip


def _edge(a: str, b: str, kind: Any) -> TraceEdge:
    return TraceEdge(from_=a, to=b, kind=kind)


def test_causal_chain_nests_a_two_service_flow_and_survives_cycles() -> None:
    trace = TraceOut(
        correlation_id="c",
        events=[_event("e1", 0.0), _event("e2", 2.0, "r1")],
        runs=[_run("r1", "e1", 0.5, 1.0, 2.5), _run("r2", "e2", 2.5, 3.0, 4.0)],
        edges=[
            _edge("e1", "r1", "triggered"),
            _edge("r1", "e2", "emitted"),
            _edge("e2", "r2", "triggered"),
        ],
    )
    (root,) = causal_chain(trace)
    assert root.item.id == "e1" and root.edge is None
    (run1,) = root.children
    (emitted,) = run1.children
    (run2,) = emitted.children
    assert (run1.item.id, run1.edge) == ("r1", "triggered")
    assert (emitted.item.id, emitted.edge) == ("e2", "emitted")
    assert (run2.item.id, run2.children) == ("r2", [])

    looped = trace.model_copy(update={"edges": [*trace.edges, _edge("r2", "e1", "replayed")]})
    (cut,) = causal_chain(looped)  # the cycle is cut at its earliest node, shown once each
    assert cut.item.id == "e1" and cut.edge is None
    assert cut.children[0].children[0].children[0].item.id == "r2"
    assert cut.children[0].children[0].children[0].children == []


def test_waterfall_places_runs_on_one_axis() -> None:
    runs = [_run("r2", "e2", 5.0, 6.0, 10.0), _run("r1", "e1", 0.0, 2.0, 4.0)]
    rows, start, span = waterfall(runs, now=100.0)
    assert [r.run.id for r in rows] == ["r1", "r2"] and (start, span) == (0.0, 10.0)
    assert (rows[0].queued_pct, rows[0].start_pct, rows[0].width_pct) == (0.0, 20.0, 20.0)
    assert (rows[1].queued_pct, rows[1].start_pct, rows[1].width_pct) == (50.0, 60.0, 40.0)
    going = [_run("r3", "e3", 0.0, 1.0, 0.0).model_copy(update={"finished_at": None})]
    rows, _, span = waterfall(going, now=4.0)
    assert span == 4.0 and rows[0].start_pct + rows[0].width_pct == 100.0
    assert waterfall([], now=1.0) == ([], 1.0, 0.0)
