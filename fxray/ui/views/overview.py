"""1. Overview: runs per minute, failure rate, backlog per service, routers and executors
alive, the latest failures, and a link to Ray's dashboard."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import ray
from fastapi import Query, Request
from fastapi.responses import Response

from fxray.api.deps import dashboard_url
from fxray.api.schemas.common import NAME_PATTERN
from fxray.store import queries as q
from fxray.ui import queries as uq
from fxray.ui.deps import PlatformDep, StoreDep, User, page_context, scope, ui_state
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import render

router = ui_router()
NAV = NavEntry("Overview", "/", 10)

ROUTER_TIMEOUT_S = 2.0
LATEST_FAILURES = 8


@dataclass(slots=True)
class Cluster:
    """The platform's actors as the routers report them."""

    routers: list[dict[str, Any]] = field(default_factory=list)  # {"id", "alive", "queued"}
    executors: list[dict[str, Any]] = field(default_factory=list)  # one per version pool

    @property
    def routers_alive(self) -> int:
        return sum(1 for r in self.routers if r["alive"])

    @property
    def executor_actors(self) -> int:
        return sum(int(e.get("actors", 0)) for e in self.executors)


def cluster(platform: Any, timeout_s: float = ROUTER_TIMEOUT_S) -> Cluster:
    """Ask each router for its stats; one that does not answer in time counts as not alive."""
    found = Cluster()
    routers = list(platform.routers)
    pending = [router.stats.remote() for router in routers]
    for index, ref in enumerate(pending):
        try:
            stats = ray.get(ref, timeout=timeout_s)
        except Exception:
            found.routers.append({"id": f"router {index}", "alive": False, "queued": None})
            continue
        found.routers.append(
            {"id": stats.get("router", f"router {index}"), "alive": True, "queued": stats["queued"]}
        )
        found.executors.extend(stats.get("executors", []))
    return found


@router.get("/")
def overview_page(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> Response:
    shown = scope(user, project)
    now = time.time()
    stats = uq.overview(store, shown, now)
    failures, _ = uq.runs_page(
        store,
        uq.RunSelection(q.RunFilter(project=shown), statuses=uq.FAILED),
        limit=LATEST_FAILURES,
    )
    actors = cluster(platform)
    versions = uq.version_services(store, {e["version_id"] for e in actors.executors})
    keys = q.service_keys(store, {*versions.values(), *(sid for sid, _, _ in stats.backlog)})
    executors = []
    for pool in actors.executors:
        key = keys.get(versions.get(pool["version_id"], ""))
        if key is None or (shown is not None and key.project != shown):
            continue
        if not user.principal.can_see(key.project):
            continue
        executors.append({**pool, "service": key.name, "project": key.project})
    backlog = [
        {
            "service_id": sid,
            "name": keys[sid].name if sid in keys else sid,
            "queued": n,
            "running": r,
        }
        for sid, n, r in stats.backlog
    ]
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    return render(
        ui_state(request).templates,
        request,
        "overview/index.html",
        {
            **page_context(user),
            "stats": stats,
            "failures": failures,
            "cluster": actors,
            "executors": executors,
            "backlog": backlog,
            "dashboard": dashboard_url(platform),
            "project": shown,
            "projects": projects,
        },
    )
