"""/api/v1 routes: runs (manual runs, listing, detail, cancel, priority, replay).

A run belongs to its service's project: viewers read, developers start, cancel, re-prioritise
and replay. A run or service of another project answers 404.

A run's logs are in :mod:`fxray.api.routes.logs`, the trace of its flow in
:mod:`fxray.api.routes.traces` and the A/B report of its service's versions in
:mod:`fxray.api.routes.reports`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from fxray.api.auth import Caller, visible_service
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid
from fxray.api.pagination import Page, Paging
from fxray.api.routes._common import (
    FINAL,
    Moment,
    RunId,
    ServiceName,
    ServiceProject,
    log_lines,
    parse_moment,
    visible_run,
)
from fxray.api.schemas.common import NO_NUL, VersionRef
from fxray.api.schemas.runs import (
    CancelOut,
    ManualRunIn,
    PriorityIn,
    ReplayIn,
    RunDetail,
    RunOut,
    RunStarted,
    StepOut,
)
from fxray.events import cloudevent as ev
from fxray.router.routing import MANUAL_TRIGGER, run_id_for
from fxray.runtime.runs import RunStatus
from fxray.services import ParameterError
from fxray.store import NotFound
from fxray.store import queries as q

router = APIRouter(tags=["runs"])


# -- helpers ----------------------------------------------------------------------------------


def _version_problem(message: str) -> ApiError:
    return invalid("the request is invalid", [{"location": "body.version", "message": message}])


def _param_problems(exc: ParameterError) -> list[dict[str, str]]:
    problems = []
    for problem in exc.problems:
        name, sep, message = problem.partition(": ")
        if sep and " " not in name:
            problems.append({"location": f"body.params.{name}", "message": message})
        else:
            problems.append({"location": "body.params", "message": problem})
    return problems


def _run_out(view: q.RunView, cls: type[RunOut] = RunOut, **extra: Any) -> Any:
    run = view.run
    return cls(
        id=run.id,
        service=view.service_name or run.service,
        project=view.project,
        version=VersionRef(id=run.version_id, label=view.version_label),
        trigger_id=run.trigger_id,
        event_id=run.event_id,
        event_type=run.event_type,
        correlation_id=run.correlation_id,
        status=run.status,
        priority=run.priority,
        attempt=run.attempt,
        shadow=run.shadow,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_ms=run.duration_ms,
        error=run.error,
        **extra,
    )


def _steps(steps: list[dict[str, Any]]) -> list[StepOut]:
    out = []
    for step in steps or []:
        started, finished = step.get("started_at"), step.get("finished_at")
        out.append(
            StepOut(
                name=str(step.get("name", "")),
                status=str(step.get("status", "")),
                started_at=started,
                finished_at=finished,
                duration_ms=(finished - started) * 1000.0
                if started is not None and finished is not None
                else None,
                error=step.get("error"),
            )
        )
    return out


# -- manual runs ------------------------------------------------------------------------------


@router.post(
    "/services/{name}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"description": "The service is inactive or takes no manual runs"}},
)
def start_run(
    name: ServiceName,
    body: ManualRunIn,
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
    project: ServiceProject = None,
) -> RunStarted:
    """Start a manual run (developer). The parameters are checked against the version's
    ``parameters.json`` (422 lists every problem); the run appears under ``run_id`` as soon as
    a router picks the event up."""
    service = visible_service(store, caller, name, "developer", project)
    if not service.active:
        raise ApiError(409, f"service {name!r} is not active")
    if not service.allow_manual_triggering:
        raise ApiError(409, f"service {name!r} does not allow manual runs")
    version = None
    if body.version is not None:
        try:
            version = store.resolve_version(service.id, body.version).id
        except NotFound as exc:
            raise _version_problem(str(exc).strip("'\"")) from None
    try:
        event = platform.run(service.id, body.params, version=version, priority=body.priority)
    except ParameterError as exc:
        raise invalid("the parameters are invalid", _param_problems(exc)) from None
    return RunStarted(event_id=event["id"], run_id=run_id_for(event["id"], MANUAL_TRIGGER))


# -- runs -------------------------------------------------------------------------------------


@router.get("/runs")
def list_runs(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    service: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="A service's name")
    ] = None,
    version: Annotated[
        str | None, Query(max_length=160, pattern=NO_NUL, description="A version id or label")
    ] = None,
    status: RunStatus | None = None,
    since: Moment = None,
    until: Moment = None,
    correlation_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    event_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    project: Annotated[
        str | None,
        Query(max_length=64, pattern=NO_NUL, description="Platform-wide admin: one project"),
    ] = None,
) -> Page[RunOut]:
    """Runs, newest first, of the key's project (all projects for a platform-wide admin).
    ``since`` is inclusive and ``until`` exclusive, on the run's creation time."""
    filters = q.RunFilter(
        project=caller.scope(project),
        service_name=service,
        version=version,
        status=status.value if status is not None else None,
        since=parse_moment(since, "since"),
        until=parse_moment(until, "until"),
        correlation_id=correlation_id,
        event_id=event_id,
    )
    views, total = q.list_runs(store, filters, limit=paging.limit, offset=paging.offset)
    return paging.page([_run_out(v) for v in views], total=total)


@router.get("/runs/{run_id}")
def get_run(run_id: RunId, caller: Caller, store: StoreDep) -> RunDetail:
    """A run: its trigger event, version, steps with timings, result, error and logs."""
    view = visible_run(store, caller, run_id, "viewer")
    return _run_out(
        view,
        RunDetail,
        trigger_event=q.get_event(store, view.run.event_id),
        steps=_steps(view.run.steps),
        result=view.run.result,
        logs=log_lines(view.run.logs, None, None),
    )


# -- cancel, priority, replay -----------------------------------------------------------------


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: RunId, caller: Caller, store: StoreDep, platform: PlatformDep) -> CancelOut:
    """Cancel a queued or running run (developer)."""
    view = visible_run(store, caller, run_id, "developer")
    if view.run.status in FINAL:
        return CancelOut(status="not_active")
    return CancelOut(status=platform.cancel(run_id))


@router.patch("/runs/{run_id}", responses={409: {"description": "The run is not queued any more"}})
def set_priority(
    run_id: RunId, body: PriorityIn, caller: Caller, store: StoreDep, platform: PlatformDep
) -> RunOut:
    """Change a queued run's priority (developer); 409 once it started or finished."""
    view = visible_run(store, caller, run_id, "developer")
    if view.run.status != RunStatus.PENDING.value:
        raise ApiError(409, f"run {run_id!r} is {view.run.status}: only queued runs can change")
    if not platform.set_priority(run_id, body.priority):
        raise ApiError(
            409,
            f"run {run_id!r} is not in a router's queue (it is starting, waiting for a retry, or "
            "waiting behind an earlier event of its ordered key)",
        )
    return _run_out(q.get_run(store, run_id))


_NOT_REPLAYED = frozenset(
    {"id", ev.PARENT_ID, ev.RUN_ID, ev.SHADOW, ev.TARGET, ev.VERSION, ev.REPLAY_OF}
)


@router.post(
    "/runs/{run_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"description": "The service is inactive or the event was not kept"}},
)
def replay_run(
    run_id: RunId,
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
    body: ReplayIn | None = None,
) -> RunStarted:
    """Run a past run's trigger event again, on its service only (developer): the same type,
    data and attributes under a new event id, on the run's version or ``version``. The new
    event keeps the flow's correlation id, so the trace shows both runs."""
    view = visible_run(store, caller, run_id, "developer")
    run = view.run
    version_id = run.version_id
    if body is not None and body.version is not None:
        try:
            version_id = store.resolve_version(run.service, body.version).id
        except NotFound as exc:
            raise _version_problem(str(exc).strip("'\"")) from None
    service = store.get_service(run.service)
    if not service.active:
        raise ApiError(409, f"service {service.name!r} is not active")
    original = q.get_event(store, run.event_id)
    if original is None:
        raise ApiError(409, f"the trigger event of run {run_id!r} was not kept: cannot replay")
    event = {k: v for k, v in original.items() if k not in _NOT_REPLAYED}
    event.update(
        {
            "id": str(uuid.uuid4()),
            ev.CORRELATION_ID: ev.correlation_id(original),
            ev.TARGET: run.service,
            ev.VERSION: version_id,
            ev.REPLAY_OF: run.id,
        }
    )
    try:
        ev.from_dict(event)
    except ev.InvalidEvent as exc:
        raise ApiError(409, f"run {run_id!r} cannot be replayed: {exc}") from None
    platform.publish([event])
    return RunStarted(event_id=event["id"], run_id=run_id_for(event["id"], ev.REPLAY_TRIGGER))
