"""14. Flow map: services as nodes and event types as edges, each edge with its rate, errors
and backlog over a recent window, redrawn every few seconds (htmx polling swaps a
server-rendered SVG). An edge links to its runs (that event type into that service), a node
to the service's runs.

An edge runs from the service whose run emitted the event (or "outside": sent from outside
the platform, or by a service of a project the reader cannot see) to the service the event
started; shadow runs are left out. One statement reads it all (``queries.flow_edges``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response

from fxray.api.schemas.common import NAME_PATTERN
from fxray.store import StateStore
from fxray.ui import queries as uq
from fxray.ui.deps import StoreDep, UIUser, User, page_context, scope
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import page

router = ui_router()
NAV = NavEntry("Flow map", "/flow", 140)

WINDOWS_MIN = (5, 15, 60, 360)
REFRESH_S = 3
OUTSIDE = "outside"
COLUMN_W, ROW_H, NODE_W, NODE_H, MARGIN = 440, 110, 190, 52, 24
# edges drawn at most: the busiest, those with failures first (a map of a thousand arrows is
# unreadable, and slow to render); the map says how many quieter ones it left out
MAX_EDGES = 150


@dataclass(frozen=True, slots=True)
class Node:
    key: str  # a service id, or OUTSIDE
    name: str
    project: str | None
    x: int
    y: int
    runs: int


@dataclass(frozen=True, slots=True)
class Edge:
    key: str
    edge: uq.FlowEdge
    path: str
    label_x: int
    label_y: int
    per_minute: float


def _depths(keys: list[str], edges: list[uq.FlowEdge]) -> dict[str, int]:
    """Column of each node: outside first, then each service right of what feeds it (a cycle
    stops growing after as many rounds as there are nodes)."""
    depth = {key: (0 if key == OUTSIDE else 1) for key in keys}
    for _ in range(len(keys)):
        changed = False
        for e in edges:
            source = e.producer or OUTSIDE
            wanted = depth[source] + 1
            if e.consumer != source and wanted > depth[e.consumer] and wanted <= len(keys):
                depth[e.consumer] = wanted
                changed = True
        if not changed:
            break
    return depth


def _map(store: StateStore, user: UIUser, project: str | None, minutes: int) -> dict[str, Any]:
    services = sorted(
        store.list_services(project=scope(user, project)), key=lambda s: (s.project, s.name)
    )
    now = time.time()
    edges = uq.flow_edges(store, [s.id for s in services], now - minutes * 60, now + 1)
    keys = ([OUTSIDE] if any(e.producer is None for e in edges) else []) + [s.id for s in services]
    depth = _depths(keys, edges)
    runs_in: dict[str, int] = {}
    for e in edges:
        runs_in[e.consumer] = runs_in.get(e.consumer, 0) + e.runs
    edges, hidden = _busiest(edges)
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    named = {s.id: s for s in services}
    for key in keys:
        column = depth[key]
        row = rows.get(column, 0)
        rows[column] = row + 1
        service = named.get(key)
        nodes[key] = Node(
            key,
            service.name if service else "outside the platform",
            service.project if service else None,
            MARGIN + column * COLUMN_W,
            MARGIN + row * ROW_H,
            runs_in.get(key, 0),
        )
    drawn = []
    for e in edges:
        a, b = nodes[e.producer or OUTSIDE], nodes[e.consumer]
        x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
        x2, y2 = b.x, b.y + NODE_H // 2
        if b.x > a.x:
            bend = (x1 + x2) // 2
            path = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2},{y2}"
            label_x, label_y = (x1 + x2) // 2, (y1 + y2) // 2 - 20
        else:  # back to an earlier column or itself: loop below both
            low = max(a.y, b.y) + NODE_H + 30
            path = f"M{x1},{y1} C{x1 + 60},{low} {x2 - 60},{low} {x2},{y2}"
            label_x, label_y = (x1 + x2) // 2, low - 10
        drawn.append(
            Edge(
                f"{e.producer or OUTSIDE}|{e.event_type}|{e.consumer}",
                e,
                path,
                label_x,
                label_y,
                e.runs / minutes,
            )
        )
    width = MARGIN * 2 + (max(depth.values(), default=0) + 1) * COLUMN_W
    height = MARGIN * 2 + max(rows.values(), default=1) * ROW_H + 60
    return {
        "nodes": list(nodes.values()),
        "edges": drawn,
        "width": width,
        "height": height,
        "node_w": NODE_W,
        "node_h": NODE_H,
        "minutes": minutes,
        "project": project,
        "refresh": REFRESH_S,
        "hidden_edges": hidden,
    }


def _busiest(edges: list[uq.FlowEdge]) -> tuple[list[uq.FlowEdge], int]:
    """At most :data:`MAX_EDGES` of ``edges`` (failing, then busiest first; in their order),
    and how many were left out."""
    if len(edges) <= MAX_EDGES:
        return edges, 0
    ranked = sorted(range(len(edges)), key=lambda i: (-edges[i].errors, -edges[i].runs, i))
    kept = sorted(ranked[:MAX_EDGES])
    return [edges[i] for i in kept], len(edges) - MAX_EDGES


Minutes = Annotated[int, Query(ge=1, le=max(WINDOWS_MIN))]
Project = Annotated[str | None, Query(pattern=NAME_PATTERN)]


@router.get("/flow")
def flow_page(
    request: Request, user: User, store: StoreDep, project: Project = None, minutes: Minutes = 15
) -> Response:
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    context = {
        **page_context(user),
        **_map(store, user, project, minutes),
        "projects": projects,
        "windows": WINDOWS_MIN,
    }
    return page(request, "flowmap/index.html", context)


@router.get("/flow/map")
def flow_map(
    request: Request, user: User, store: StoreDep, project: Project = None, minutes: Minutes = 15
) -> Response:
    """The map alone (what the page polls)."""
    context = {**page_context(user), **_map(store, user, project, minutes)}
    return page(request, "flowmap/_map.html", context)
