"""/api/v1 routes: traces, the causal graph of a flow (its events and runs).

A project's key sees its services' runs and the events that triggered them or that they
emitted; a flow none of whose runs or events it may see answers 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from fxray.api.auth import Caller
from fxray.api.deps import StoreDep
from fxray.api.errors import not_found
from fxray.api.schemas.common import NO_NUL, VersionRef
from fxray.api.schemas.traces import TraceEdge, TraceEvent, TraceOut, TraceRun
from fxray.events import cloudevent as ev
from fxray.store import RunRecord
from fxray.store import queries as q

router = APIRouter(tags=["runs", "traces"])


@router.get("/traces/{key}")
def get_trace(
    key: Annotated[
        str,
        Path(min_length=1, max_length=255, pattern=NO_NUL, description="Event or correlation id"),
    ],
    caller: Caller,
    store: StoreDep,
) -> TraceOut:
    """The causal graph of a flow, from any of its event ids or its correlation id: events and
    runs in time order, and edges event -> run (triggered), run -> event (emitted) and
    run -> event (replayed). A project's key sees its services' runs and the events that
    triggered them or that they emitted."""
    trace = q.load_trace(store, key)
    if trace is None:
        raise not_found(f"trace {key!r}")
    runs = [r for r in trace.runs if caller.platform_admin or caller.can_see(_project(trace, r))]
    run_ids = {r.id for r in runs}
    triggering = {r.event_id for r in runs}
    events = [
        e
        for e in trace.events
        if caller.platform_admin or e["body"]["id"] in triggering or e["run_id"] in run_ids
    ]
    if not runs and not events:
        raise not_found(f"trace {key!r}")
    event_ids = {e["body"]["id"] for e in events}
    data = {e["body"]["id"]: e["body"].get("data") for e in events}
    # in causal order: an event's edges in (emitted, replayed) before those out of it
    edges: list[tuple[float, int, TraceEdge]] = []
    for run in runs:
        if run.event_id in event_ids:
            edge = TraceEdge(from_=run.event_id, to=run.id, kind="triggered")
            edges.append((run.created_at, 1, edge))
    for e in events:
        event_id = e["body"]["id"]
        if e["run_id"] in run_ids:
            edge = TraceEdge(from_=e["run_id"], to=event_id, kind="emitted")
            edges.append((e["at"], 0, edge))
        replayed = e["body"].get(ev.REPLAY_OF)
        if replayed in run_ids:
            edge = TraceEdge(from_=replayed, to=event_id, kind="replayed")
            edges.append((e["at"], 0, edge))
    edges.sort(key=lambda item: item[:2])
    return TraceOut(
        correlation_id=trace.correlation_id,
        events=[_trace_event(e) for e in events],
        runs=[
            TraceRun(
                id=r.id,
                service=_name(trace, r),
                project=_project(trace, r) or None,
                version=VersionRef(id=r.version_id, label=trace.labels.get(r.version_id)),
                trigger_id=r.trigger_id,
                event_id=r.event_id,
                status=r.status,
                shadow=r.shadow,
                attempt=r.attempt,
                parameters=data.get(r.event_id),
                result=r.result,
                error=r.error,
                created_at=r.created_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
                duration_ms=r.duration_ms,
            )
            for r in runs
        ],
        edges=[edge for *_, edge in edges],
    )


def _name(trace: q.Trace, run: RunRecord) -> str:
    """The name of the run's service in its project (its id if the service is gone)."""
    key = trace.services.get(run.service)
    return key.name if key is not None else run.service


def _project(trace: q.Trace, run: RunRecord) -> str:
    """The project of the run's service ("" if the service is gone)."""
    key = trace.services.get(run.service)
    return key.project if key is not None else ""


def _trace_event(item: dict[str, Any]) -> TraceEvent:
    body = item["body"]
    return TraceEvent(
        id=str(body["id"]),
        type=str(body.get("type", "")),
        source=str(body.get("source", "")),
        time=body.get("time"),
        received_at=item["received_at"],
        parent_id=item["parent_id"],
        run_id=item["run_id"],
        replay_of=body.get(ev.REPLAY_OF),
        data=body.get("data"),
        attributes={k: v for k, v in body.items() if k not in ("data", "data_base64")},
    )
