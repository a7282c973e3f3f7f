"""/api/v1 routes: schedules (cron ticks that run a service with parameters).

A service's manifest ``schedule`` is kept as its ``origin="manifest"`` schedule (change it by
deploying a new manifest; it can be paused, given parameters or skipped here); the API adds
more schedules per service. Each tick fires exactly once however many platform processes
share the database, and runs the service like a manual run with the schedule's ``params``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from fxray.api.auth import Caller, Principal, Role, require_project, visible_service
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid, not_found
from fxray.api.pagination import Page, Paging
from fxray.api.routes._common import ServiceProject
from fxray.api.schemas.schedules import (
    NextTicksOut,
    ScheduleIn,
    ScheduleOut,
    SchedulePatch,
    SkipOut,
)
from fxray.events.schedules import iso_utc, next_fire_times, validate_cron
from fxray.services import ParameterError, validate_params
from fxray.services.manifest import NAME_PATTERN
from fxray.store import NotFound, ScheduleRecord, ServiceRecord, StateStore
from fxray.store.schedules import latest_tick

router = APIRouter(tags=["schedules"])

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
PROJECT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
ServiceName = Annotated[str, Path(pattern=NAME_PATTERN, description="A service name")]
ScheduleId = Annotated[str, Path(pattern=ID_PATTERN, description="A schedule id")]


def _out(record: ScheduleRecord, service: ServiceRecord) -> ScheduleOut:
    return ScheduleOut(
        id=record.id,
        service=service.name,
        project=service.project,
        cron=record.cron,
        params=dict(record.params),
        origin=record.origin,
        active=record.active,
        next_fire_at=record.next_fire_at,
        next_fire_time=iso_utc(record.next_fire_at),
        skip_next=record.skip_next,
        last_fired_at=record.last_fired_at,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _schedule(
    store: StateStore, caller: Principal, schedule_id: str, role: Role
) -> tuple[ScheduleRecord, ServiceRecord]:
    try:
        schedule = store.get_schedule(schedule_id)
        service = store.get_service(schedule.service)
    except NotFound:
        raise not_found(f"schedule {schedule_id!r}") from None
    require_project(caller, service.project, role, f"schedule {schedule_id!r}")
    return schedule, service


def _cron(expression: str) -> str:
    try:
        return validate_cron(expression)
    except ValueError as exc:
        raise invalid(str(exc), [{"location": "body.cron", "message": str(exc)}]) from None


def _params(
    platform: Any, store: StateStore, service: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The params validated against the latest version's parameters.json (if it has one)."""
    versions = store.list_versions(service)
    if not versions:
        return dict(params)
    declared = platform.parameters(versions[-1])
    if declared is None:  # a service without parameters.json takes any parameters
        return dict(params)
    try:
        return validate_params(declared, dict(params))
    except ParameterError as exc:
        raise invalid("the schedule's parameters are invalid", list(exc.problems)) from None


@router.get("/schedules")
def list_schedules(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    service: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Only this service (by name)")
    ] = None,
    project: Annotated[
        str | None, Query(pattern=PROJECT_PATTERN, description="Only this project (platform admin)")
    ] = None,
    active: Annotated[bool | None, Query(description="Only (in)active schedules")] = None,
    origin: Annotated[str | None, Query(pattern="^(manifest|api)$")] = None,
) -> Page[ScheduleOut]:
    """Schedules of the services this key can see, by service and creation time."""
    scope = caller.scope(project)
    services = {s.id: s for s in store.list_services(project=scope)}
    items = [
        _out(s, services[s.service])
        for s in store.list_schedules()
        if s.service in services
        and (service is None or services[s.service].name == service)
        and (active is None or s.active == active)
        and (origin is None or s.origin == origin)
    ]
    return paging.page(items)


@router.post("/services/{name}/schedules", status_code=status.HTTP_201_CREATED)
def create_schedule(
    name: ServiceName,
    body: ScheduleIn,
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
    project: ServiceProject = None,
) -> ScheduleOut:
    """Add a schedule to a service (developer): its ticks run the service with ``params``."""
    service = visible_service(store, caller, name, "developer", project)
    cron = _cron(body.cron)
    params = _params(platform, store, service.id, body.params)
    record = store.upsert_schedule(service.id, cron, params=params, origin="api")
    if not body.active:
        record = store.update_schedule(record.id, active=False)
    return _out(record, service)


@router.get("/schedules/{schedule_id}")
def get_schedule(schedule_id: ScheduleId, caller: Caller, store: StoreDep) -> ScheduleOut:
    schedule, service = _schedule(store, caller, schedule_id, "viewer")
    return _out(schedule, service)


@router.patch("/schedules/{schedule_id}")
def update_schedule(
    schedule_id: ScheduleId,
    body: SchedulePatch,
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
) -> ScheduleOut:
    """Change a schedule's cron, params or active flag (developer).

    A manifest's schedule takes params and active here; its cron comes from the manifest (409).
    A new cron, or re-activation, starts from the next tick after now.
    """
    schedule, service = _schedule(store, caller, schedule_id, "developer")
    changes: dict[str, Any] = {}
    if body.cron is not None:
        cron = _cron(body.cron)
        if cron != schedule.cron:
            if schedule.origin == "manifest":
                raise ApiError(
                    409,
                    "this schedule comes from the service's manifest: change the manifest "
                    "(and deploy it) to change its cron",
                )
            changes["cron"] = cron
    if body.params is not None:
        changes["params"] = _params(platform, store, schedule.service, body.params)
    if body.active is not None:
        changes["active"] = body.active
    if not changes:
        return _out(schedule, service)
    return _out(store.update_schedule(schedule_id, **changes), service)


@router.delete("/schedules/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(schedule_id: ScheduleId, caller: Caller, store: StoreDep) -> None:
    """Remove a schedule (developer); a manifest's schedule is removed from the manifest (409),
    or paused with ``PATCH {"active": false}``."""
    schedule, _ = _schedule(store, caller, schedule_id, "developer")
    if schedule.origin == "manifest":
        raise ApiError(
            409,
            "this schedule comes from the service's manifest: remove `schedule` from the "
            'manifest and deploy it, or pause the schedule with PATCH {"active": false}',
        )
    store.remove_schedule(schedule_id)


@router.get("/schedules/{schedule_id}/next")
def next_ticks(
    schedule_id: ScheduleId,
    caller: Caller,
    store: StoreDep,
    count: Annotated[int, Query(ge=1, le=100, description="How many fire times")] = 5,
) -> NextTicksOut:
    """The next fire times that will run (after the next tick, if it is to be skipped)."""
    schedule, _ = _schedule(store, caller, schedule_id, "viewer")
    if not schedule.active:
        return NextTicksOut(schedule_id=schedule.id, active=False, times=[], skipped=None)
    first = _pending_tick(schedule)
    skipped = None
    if schedule.skip_next:
        skipped = iso_utc(first)
        times = next_fire_times(schedule.cron, first, count)
    else:
        times = [first, *next_fire_times(schedule.cron, first, count - 1)]
    return NextTicksOut(
        schedule_id=schedule.id, active=True, times=[iso_utc(t) for t in times], skipped=skipped
    )


@router.post("/schedules/{schedule_id}/skip")
def skip_next_tick(schedule_id: ScheduleId, caller: Caller, store: StoreDep) -> SkipOut:
    """Skip the schedule's next tick (developer): it is consumed without a run. Skipping
    again before it is due changes nothing; answers the tick that will be skipped."""
    schedule, _ = _schedule(store, caller, schedule_id, "developer")
    if not schedule.active:
        raise ApiError(409, "the schedule is paused: there is no next tick to skip")
    schedule = store.skip_next_tick(schedule_id)
    skipped = _pending_tick(schedule)
    (following,) = next_fire_times(schedule.cron, skipped, 1)
    return SkipOut(
        schedule_id=schedule.id,
        skipped=iso_utc(skipped),
        skipped_at=skipped,
        next=iso_utc(following),
    )


def _pending_tick(schedule: ScheduleRecord) -> float:
    """The tick the next claim takes: ``next_fire_at``, or, once that is due (claims run every
    half second; after downtime only the latest due tick fires), the latest due tick."""
    now = time.time()
    if schedule.next_fire_at > now:
        return schedule.next_fire_at
    return latest_tick(schedule.cron, schedule.next_fire_at, now)
