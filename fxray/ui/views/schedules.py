"""9. Schedules: every schedule of the services the user can see, with its next fire times,
and the developer's actions: run now, skip the next tick, pause and resume.

Skip, pause and resume call the API's own route functions; "run now" sends the schedule's
tick event at once (the tick the scheduler would send, under an id of its own)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from fxray.api.errors import ApiError
from fxray.api.routes import schedules as api_schedules
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.schedules import SchedulePatch
from fxray.events.schedules import next_fire_times, tick_event
from fxray.router.routing import SCHEDULE_TRIGGER, run_id_for
from fxray.store import ScheduleRecord
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import page, query

router = ui_router()
NAV = NavEntry("Schedules", "/schedules", 90)

NEXT_TIMES = 5
ScheduleId = Annotated[
    str, PathParam(pattern=api_schedules.ID_PATTERN, description="The schedule's id")
]
DONE = {"run-now": "started", "skip": "skipped", "pause": "paused", "resume": "resumed"}


def _next_times(schedule: ScheduleRecord) -> tuple[list[float], float | None]:
    """The next fire times that will run and the tick that will be skipped (if any), as the
    API's ``GET /schedules/{id}/next`` answers, without reading the store again."""
    if not schedule.active:
        return [], None
    first = api_schedules._pending_tick(schedule)
    if schedule.skip_next:
        return next_fire_times(schedule.cron, first, NEXT_TIMES), first
    return [first, *next_fire_times(schedule.cron, first, NEXT_TIMES - 1)], None


@router.get("/schedules")
def schedules_page(
    request: Request,
    user: User,
    store: StoreDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    did: Annotated[str | None, Query(pattern="^(" + "|".join(DONE) + ")?$")] = None,
    schedule: Annotated[str | None, Query(pattern="^$|" + api_schedules.ID_PATTERN)] = None,
    run: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")] = None,
) -> Response:
    """The schedules, read with a fixed number of statements (no query per row)."""
    services = {s.id: s for s in store.list_services(scope(user, project))}
    rows = []
    for record in store.list_schedules():
        service = services.get(record.service)
        if service is None:
            continue
        times, skipped = _next_times(record)
        rows.append(
            {
                "schedule": record,
                "service": service,
                "times": times,
                "skipped": skipped,
                "can_change": user.can("developer", service.project),
            }
        )
    rows.sort(key=lambda row: (row["service"].id, row["schedule"].created_at))
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    return page(
        request,
        "schedules/list.html",
        {
            **page_context(user),
            "rows": rows,
            "project": project,
            "projects": projects,
            "done": DONE.get(did or ""),
            "done_schedule": schedule or None,
            "started_run": run or None,
        },
    )


def _back(action: str, schedule_id: str, project: str, **extra: str) -> Response:
    target = "/schedules" + query(project=project, did=action, schedule=schedule_id, **extra)
    return RedirectResponse(target, status_code=303)


def _run_now(user: UIUser, store: Any, platform: Any, schedule_id: str) -> str:
    """Send the schedule's tick now (developer); the run's id."""
    schedule, service = api_schedules._schedule(store, user.principal, schedule_id, "developer")
    if not service.active:
        raise ApiError(409, f"service {service.id!r} is not active: it takes no runs")
    tick = tick_event(
        service.id, time.time(), schedule_id=schedule.id, params=dict(schedule.params)
    )
    # its own id: a scheduled tick of the same second keeps its run
    tick["id"] = str(uuid.uuid4())
    platform.publish([tick])
    return run_id_for(tick["id"], SCHEDULE_TRIGGER)


Project = Annotated[str, Form(max_length=64)]


@router.post("/schedules/{schedule_id}/run-now")
def run_now(
    schedule_id: ScheduleId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Project = "",
) -> Response:
    """Run the schedule's service now with its parameters; the next ticks stay as they are."""
    run_id = _run_now(user, store, platform, schedule_id)
    return _back("run-now", schedule_id, project, run=run_id)


@router.post("/schedules/{schedule_id}/skip")
def skip_next(
    schedule_id: ScheduleId, user: User, store: StoreDep, project: Project = ""
) -> Response:
    """Skip the next tick (the API's ``POST /schedules/{id}/skip``)."""
    api_schedules.skip_next_tick(schedule_id=schedule_id, caller=user.principal, store=store)
    return _back("skip", schedule_id, project)


def _set_active(user: UIUser, store: Any, platform: Any, schedule_id: str, active: bool) -> None:
    api_schedules.update_schedule(
        schedule_id=schedule_id,
        body=SchedulePatch(active=active),
        caller=user.principal,
        store=store,
        platform=platform,
    )


@router.post("/schedules/{schedule_id}/pause")
def pause(
    schedule_id: ScheduleId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Project = "",
) -> Response:
    """Pause the schedule: no ticks until it is resumed."""
    _set_active(user, store, platform, schedule_id, False)
    return _back("pause", schedule_id, project)


@router.post("/schedules/{schedule_id}/resume")
def resume(
    schedule_id: ScheduleId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Project = "",
) -> Response:
    """Resume the schedule from its next tick after now."""
    _set_active(user, store, platform, schedule_id, True)
    return _back("resume", schedule_id, project)
