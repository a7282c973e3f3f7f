"""12. A/B report: per version of a service, its runs, success rate and p50/p95 duration, the
outputs of the versions side by side for the same events (a shadow version next to the
routed one), and "promote" (a trigger's weights to 100 for the winner, 0 for the others) in
one click after a confirmation.

The numbers are the API's (``GET /services/{name}/report`` through its route function) and
promoting goes through the API's ``update_trigger``: the same checks and project isolation.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from fxray.api.errors import not_found
from fxray.api.routes import reports, triggers
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.triggers import TriggerPatch
from fxray.store import StateStore, TriggerRecord
from fxray.ui import queries as uq
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope
from fxray.ui.deps import visible_service as _visible
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import is_htmx, page

router = ui_router()
NAV = NavEntry("A/B report", "/ab", 120)

SERVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
WINDOWS_H = (1, 6, 24, 168)
SIDE_BY_SIDE = 20

ServiceId = Annotated[str, Path(pattern=SERVICE_ID, description="The service's id")]


@router.get("/ab")
def splits_page(
    request: Request,
    user: User,
    store: StoreDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> Response:
    """The services with an A/B split or a shadow version on one of their triggers."""
    services = {s.id: s for s in store.list_services(project=scope(user, project))}
    split: dict[str, list[TriggerRecord]] = {}
    for t in store.list_triggers():
        if t.service in services and (len(t.weights) > 1 or t.shadow_version):
            split.setdefault(t.service, []).append(t)
    rows = sorted(
        ((services[sid], found) for sid, found in split.items()),
        key=lambda item: (item[0].project, item[0].name),
    )
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    context = {**page_context(user), "rows": rows, "project": project, "projects": projects}
    return page(request, "abreport/list.html", context)


def _report_context(
    user: UIUser, store: StateStore, service_id: str, hours: int, notice: str | None = None
) -> dict[str, Any]:
    service = _visible(store, user, service_id, "viewer")
    now = time.time()
    since = now - hours * 3600.0
    report = reports.service_report(
        service.name,
        user.principal,
        store,
        since=str(since),
        until=str(now),
        project=service.project,
    )
    versions = uq.versions_by_service(store, [service.id]).get(service.id, [])
    labels = {v.id: v.label for v in versions}
    return {
        **page_context(user),
        "service": service,
        "report": report,
        "hours": hours,
        "windows": WINDOWS_H,
        "versions": versions,
        "labels": labels,
        "triggers": store.list_triggers(service.id),
        "events": uq.outputs_side_by_side(store, service.id, since, now + 1, SIDE_BY_SIDE),
        "can_change": user.can("developer", service.project),
        "notice": notice,
    }


@router.get("/ab/{service_id}")
def report_page(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    hours: Annotated[int, Query(ge=1, le=max(WINDOWS_H))] = 24,
) -> Response:
    return page(request, "abreport/report.html", _report_context(user, store, service_id, hours))


@router.post("/ab/{service_id}/promote")
def promote(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    trigger_id: Annotated[str, Form(max_length=255)],
    version: Annotated[str, Form(max_length=255)],
    hours: Annotated[int, Form(ge=1, le=max(WINDOWS_H))] = 24,
) -> Response:
    """Give ``version`` all of the trigger's traffic (100) and its other versions none (0);
    the shadow version stays (developer)."""
    service = _visible(store, user, service_id, "developer")
    trigger = triggers.get_trigger(trigger_id, user.principal, store)
    if trigger.project != service.project or trigger.service != service.name:
        raise not_found(f"trigger {trigger_id!r}")
    weights = {vid: 0 for vid in trigger.weights} | {version: 100}
    changed = triggers.update_trigger(
        trigger_id, TriggerPatch(weights=weights), user.principal, store, platform
    )
    label = next((v.label for v in store.list_versions(service.id) if v.id == version), None)
    notice = f"promoted {label or version[:8]}: {changed.pattern} now sends it every event"
    if not is_htmx(request):
        return RedirectResponse(f"/ab/{service.id}?hours={hours}", status_code=303)
    context = _report_context(user, store, service.id, hours, notice)
    return page(request, "abreport/_body.html", context)
