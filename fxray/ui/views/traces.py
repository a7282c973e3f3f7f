"""5. Trace: the causal chain of a flow (from any of its event ids or its correlation id) as
nested lists drawn by the server, event -> runs it triggered -> events they emitted -> ..., and
a waterfall of its runs in time.

The page calls the API's trace route function, so a project key sees what ``GET
/api/v1/traces/<key>`` shows it: its services' runs and the events around them; a flow none of
whose parts it may see is 404.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from fxray.api.routes.traces import get_trace
from fxray.api.schemas.common import NO_NUL
from fxray.api.schemas.traces import TraceEvent, TraceOut, TraceRun
from fxray.ui.deps import StoreDep, User, page_context, ui_state
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import render

router = ui_router()
NAV = NavEntry("Traces", "/traces", 50)

TraceKey = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL)]
DATA_SHOWN = 2000  # characters of an event's data the chain shows


@dataclass
class ChainNode:
    """One event or run of the causal chain, with what it led to."""

    kind: str  # "event" or "run"
    item: TraceEvent | TraceRun
    edge: str | None = None  # how its parent led to it: triggered, emitted, replayed
    children: list[ChainNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WaterfallRow:
    """A run on the waterfall: percentages of the flow's time span (queued, then running)."""

    run: TraceRun
    queued_pct: float
    start_pct: float
    width_pct: float


def causal_chain(trace: TraceOut) -> list[ChainNode]:
    """The trace's graph as trees: roots are the events and runs nothing shown led to, in time
    order. Each node appears once; a cycle (only bad records make one) is cut at its earliest
    node, which becomes a root."""
    nodes: dict[str, ChainNode] = {e.id: ChainNode("event", e) for e in trace.events}
    nodes.update({r.id: ChainNode("run", r) for r in trace.runs})
    parent_of: dict[str, ChainNode] = {}
    for edge in trace.edges:
        parent, child = nodes.get(edge.from_), nodes.get(edge.to)
        if parent is None or child is None or edge.to in parent_of or edge.to == edge.from_:
            continue
        child.edge = edge.kind
        parent.children.append(child)
        parent_of[edge.to] = parent
    seen: set[int] = set()
    roots = []
    in_time = sorted(nodes.items(), key=lambda item: _started(item[1]))
    for key, node in in_time:
        if key not in parent_of and _acyclic(node, seen):
            roots.append(node)
    for key, node in in_time:  # left over: on a cycle
        if id(node) not in seen:
            parent_of[key].children.remove(node)
            node.edge = None
            _acyclic(node, seen)
            roots.append(node)
    return roots


def _started(node: ChainNode) -> float:
    item = node.item
    return item.received_at if isinstance(item, TraceEvent) else item.created_at


def _acyclic(node: ChainNode, seen: set[int]) -> bool:
    """Drop children already shown elsewhere (a cycle in bad data); True if ``node`` is new."""
    if id(node) in seen:
        return False
    seen.add(id(node))
    node.children = [child for child in node.children if _acyclic(child, seen)]
    return True


def waterfall(runs: list[TraceRun], now: float) -> tuple[list[WaterfallRow], float, float]:
    """The runs in creation order on one time axis: rows, the axis start and its length (s).
    A run still going ends at ``now``."""
    if not runs:
        return [], now, 0.0
    start = min(r.created_at for r in runs)
    end = max(r.finished_at or now for r in runs)
    span = max(end - start, 1e-3)

    def pct(stamp: float) -> float:
        return round(min(max((stamp - start) * 100 / span, 0.0), 100.0), 2)

    rows = []
    for run in sorted(runs, key=lambda r: r.created_at):
        began = run.started_at if run.started_at is not None else (run.finished_at or now)
        finished = run.finished_at or now
        rows.append(
            WaterfallRow(
                run,
                queued_pct=pct(run.created_at),
                start_pct=pct(began),
                width_pct=max(round(pct(finished) - pct(began), 2), 0.5),
            )
        )
    return rows, start, span


def _data_text(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, indent=2, sort_keys=True)
    return text if len(text) <= DATA_SHOWN else text[:DATA_SHOWN] + " ..."


@router.get("/traces")
def traces_page(
    request: Request,
    user: User,
    key: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
) -> Response:
    """A form asking for an event or correlation id (``?key=`` goes to its trace)."""
    if key and key.strip():
        return RedirectResponse(f"/traces/{quote(key.strip(), safe='')}", status_code=303)
    return render(ui_state(request).templates, request, "traces/index.html", {**page_context(user)})


@router.get("/traces/{key:path}")
def trace_page(request: Request, user: User, store: StoreDep, key: TraceKey) -> Response:
    """A flow's causal chain and the waterfall of its runs."""
    trace = get_trace(key, user.principal, store)
    rows, start, span = waterfall(trace.runs, time.time())
    return render(
        ui_state(request).templates,
        request,
        "traces/detail.html",
        {
            **page_context(user),
            "key": key,
            "trace": trace,
            "chain": causal_chain(trace),
            "rows": rows,
            "start": start,
            "span_ms": span * 1000,
            "data_text": _data_text,
        },
    )
