"""/api/v1 routes: runs (manual runs, listing, detail, logs, cancel, priority, replay), log search,
traces and the A/B report.

Logs come from the ops store (Elasticsearch) when the ops sink is on, else from the run rows.

A run belongs to its service's project: viewers read, developers start, cancel, re-prioritise
and replay. A run, service or flow of another project answers 404.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fxray.api.auth import Caller, Principal, Role, require_project
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid, not_found
from fxray.api.pagination import Page, PageParams, Paging
from fxray.events import cloudevent as ev
from fxray.ops import queries as oq
from fxray.router.router import MANUAL_TRIGGER, run_id_for
from fxray.runtime.runs import RunStatus
from fxray.services import ParameterError
from fxray.store import NotFound, StateStore
from fxray.store import queries as q

router = APIRouter(tags=["runs"])

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters
STREAM_POLL_S = 0.25
STREAM_KEEPALIVE_S = 15.0
REPORT_WINDOW_S = 24 * 3600.0
STREAM_FINAL_GRACE_S = 10.0  # after a run is final, wait this long at most for its last lines
FINAL = frozenset(s.value for s in RunStatus if s.is_final)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "STDOUT", "STDERR"]

ServiceName = Annotated[
    str, Path(min_length=1, max_length=64, pattern=NO_NUL, description="The service's name")
]
RunId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=NO_NUL, description="The run's id")
]
VersionRefIn = Annotated[
    str, Field(min_length=1, max_length=128, pattern=NO_NUL, description="A version id or label")
]
Moment = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=NO_NUL,
        description="Epoch seconds (e.g. 1735689600.5) or ISO 8601 (e.g. 2025-01-01T00:00:00Z;"
        " without a zone: UTC)",
    ),
]


# -- models -----------------------------------------------------------------------------------


class ManualRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters, checked against the version's parameters.json",
    )
    version: VersionRefIn | None = Field(default=None, description="Default: the latest version")
    priority: int | None = Field(
        default=None, ge=1, le=10, description="1 highest .. 10 lowest; default: the service's"
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionRefIn | None = Field(default=None, description="Default: the run's version")


class PriorityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=1, le=10, description="1 highest .. 10 lowest")


class RunStarted(BaseModel):
    event_id: str = Field(description="The event published to start the run")
    run_id: str = Field(description="The run's id (it appears once the router has the event)")


class CancelOut(BaseModel):
    status: Literal["cancelled", "cancelling", "not_active"] = Field(
        description="cancelled (it was queued), cancelling (it is running: stopped shortly), "
        "not_active (it already finished, or no router has it)"
    )


class VersionRef(BaseModel):
    id: str
    label: str | None


class StepOut(BaseModel):
    name: str
    status: str
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None
    error: str | None


class LogLineOut(BaseModel):
    index: int = Field(description="The line's position in the run's log")
    time: float
    level: str
    step: str
    message: str


class LogHitOut(LogLineOut):
    run_id: str
    service: str
    version: str = Field(description="The version's id")
    correlation_id: str


class RunOut(BaseModel):
    id: str
    service: str
    project: str | None
    version: VersionRef
    trigger_id: str | None = Field(description="A trigger's id, or manual / schedule / replay")
    event_id: str
    event_type: str
    correlation_id: str
    status: RunStatus
    priority: int
    attempt: int
    shadow: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None
    error: str | None


class RunDetail(RunOut):
    trigger_event: dict[str, Any] | None = Field(description="The CloudEvent that started it")
    steps: list[StepOut]
    result: Any = None
    logs: list[LogLineOut]


class TraceEvent(BaseModel):
    id: str
    type: str
    source: str
    time: str | None
    received_at: float
    parent_id: str | None = Field(description="The event that triggered the emitting run")
    run_id: str | None = Field(description="The run that emitted it")
    replay_of: str | None = Field(description="The run it replays")
    data: Any = None
    attributes: dict[str, Any] = Field(description="Every attribute but data")


class TraceRun(BaseModel):
    id: str
    service: str
    version: VersionRef
    trigger_id: str | None
    event_id: str
    status: RunStatus
    shadow: bool
    attempt: int
    parameters: Any = Field(default=None, description="The triggering event's data")
    result: Any = None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None


class TraceEdge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="An event id (triggered) or a run id")
    to: str
    kind: Literal["triggered", "emitted", "replayed"]


class TraceOut(BaseModel):
    correlation_id: str
    events: list[TraceEvent]
    runs: list[TraceRun]
    edges: list[TraceEdge]


class VersionReport(BaseModel):
    version: VersionRef
    runs: int
    succeeded: int
    failed: int = Field(description="Failed or timed out")
    timed_out: int
    cancelled: int
    active: int = Field(description="Pending or running")
    shadow_runs: int
    error_rate: float | None = Field(description="failed / (succeeded + failed)")
    duration_p50_ms: float | None
    duration_p95_ms: float | None


class ReportOut(BaseModel):
    service: str
    since: float
    until: float
    versions: list[VersionReport]


# -- helpers ----------------------------------------------------------------------------------


def _service(store: StateStore, caller: Principal, name: str, role: Role) -> str:
    """The project of service ``name`` after the access check."""
    try:
        project = q.service_project(store, name)
    except NotFound:
        raise not_found(f"service {name!r}") from None
    require_project(caller, project, role, f"service {name!r}")
    return project


def _run(store: StateStore, caller: Principal, run_id: str, role: Role) -> q.RunView:
    try:
        view = q.get_run(store, run_id)
    except NotFound:
        raise not_found(f"run {run_id!r}") from None
    require_project(caller, view.project, role, f"run {run_id!r}")
    return view


def _moment(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 as epoch seconds; 422 if neither."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise invalid(
            "the request is invalid",
            [{"location": f"query.{name}", "message": "expected epoch seconds or ISO 8601"}],
        ) from None


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
        service=run.service,
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


def _log_line(index: int, line: Any) -> LogLineOut:
    parts = list(line) if isinstance(line, list | tuple) else [None, "INFO", "", line]
    parts += [None] * (4 - len(parts))
    stamp, level, step, message = parts[:4]
    return LogLineOut(
        index=index,
        time=float(stamp) if isinstance(stamp, int | float) else 0.0,
        level=str(level or ""),
        step=str(step or ""),
        message=str(message if message is not None else ""),
    )


def _log_lines(
    logs: list[Any], levels: list[str] | None, step: str | None, start: int = 0
) -> list[LogLineOut]:
    lines = (_log_line(i, line) for i, line in enumerate(logs) if i >= start)
    return [
        line
        for line in lines
        if (not levels or line.level in levels) and (step is None or line.step == step)
    ]


def _hit_line(hit: oq.LogHit) -> LogLineOut:
    return LogLineOut(
        index=hit.index, time=hit.time, level=hit.level, step=hit.step, message=hit.message
    )


def _ops_unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"the ops store is unavailable: {type(exc).__name__}")


def _ops_run_logs(
    ops: oq.OpsQueries,
    run_id: str,
    paging: PageParams,
    levels: list[str] | None,
    step: str | None,
    after: int | None,
) -> Page[LogLineOut]:
    try:
        hits, total = ops.run_logs(
            run_id,
            after=after,
            offset=paging.offset,
            limit=paging.limit,
            levels=levels,
            step=step,
        )
    except Exception as exc:
        raise _ops_unavailable(exc) from exc
    return paging.page([_hit_line(h) for h in hits], total=total)


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
) -> RunStarted:
    """Start a manual run (developer). The parameters are checked against the version's
    ``parameters.json`` (422 lists every problem); the run appears under ``run_id`` as soon as
    a router picks the event up."""
    _service(store, caller, name, "developer")
    service = store.get_service(name)
    if not service.active:
        raise ApiError(409, f"service {name!r} is not active")
    if not service.allow_manual_triggering:
        raise ApiError(409, f"service {name!r} does not allow manual runs")
    version = None
    if body.version is not None:
        try:
            version = store.resolve_version(name, body.version).id
        except NotFound as exc:
            raise _version_problem(str(exc).strip("'\"")) from None
    try:
        event = platform.run(name, body.params, version=version, priority=body.priority)
    except ParameterError as exc:
        raise invalid("the parameters are invalid", _param_problems(exc)) from None
    return RunStarted(event_id=event["id"], run_id=run_id_for(event["id"], MANUAL_TRIGGER))


# -- runs -------------------------------------------------------------------------------------


@router.get("/runs")
def list_runs(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    service: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    version: Annotated[
        str | None, Query(max_length=128, pattern=NO_NUL, description="A version id or label")
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
        service=service,
        version=version,
        status=status.value if status is not None else None,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
        correlation_id=correlation_id,
        event_id=event_id,
    )
    views, total = q.list_runs(store, filters, limit=paging.limit, offset=paging.offset)
    return paging.page([_run_out(v) for v in views], total=total)


@router.get("/runs/{run_id}")
def get_run(run_id: RunId, caller: Caller, store: StoreDep) -> RunDetail:
    """A run: its trigger event, version, steps with timings, result, error and logs."""
    view = _run(store, caller, run_id, "viewer")
    return _run_out(
        view,
        RunDetail,
        trigger_event=q.get_event(store, view.run.event_id),
        steps=_steps(view.run.steps),
        result=view.run.result,
        logs=_log_lines(view.run.logs, None, None),
    )


@router.get("/runs/{run_id}/logs")
def get_logs(
    run_id: RunId,
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
    paging: Paging,
    level: Annotated[
        list[LogLevel] | None, Query(description="Only these levels (repeat for several)")
    ] = None,
    step: Annotated[str | None, Query(max_length=255, description="Only this step")] = None,
    after: Annotated[
        int | None,
        Query(ge=-1, description="Only lines after this index (a cursor: the last one seen)"),
    ] = None,
) -> Page[LogLineOut]:
    """The run's log lines, oldest first: from the ops store (lines appear while the run goes
    on; ``index`` is the line's sequence number) when the ops sink is on, else from the run."""
    view = _run(store, caller, run_id, "viewer")
    ops = oq.ops_queries(platform.settings)
    if ops is not None:
        return _ops_run_logs(ops, run_id, paging, level, step, after)
    start = after + 1 if after is not None else 0
    return paging.page(_log_lines(view.run.logs, level, step, start=start))


@router.get(
    "/runs/{run_id}/logs/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `log` events (data: a log line as JSON, id: its "
            "index), then one `end` event (data: the run's id and final status)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_logs(
    run_id: RunId,
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
    level: Annotated[
        list[LogLevel] | None, Query(description="Only these levels (repeat for several)")
    ] = None,
    step: Annotated[str | None, Query(max_length=255, description="Only this step")] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=32, description="Resume after this line"),
    ] = None,
) -> StreamingResponse:
    """Follow a run's log: the lines so far, then new ones until the run is final, then an
    ``end`` event."""
    await asyncio.to_thread(_run, store, caller, run_id, "viewer")
    start = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 0
    ops = oq.ops_queries(platform.settings)
    lines = (
        _follow(store, run_id, start, level, step)
        if ops is None
        else _follow_ops(store, ops, run_id, start - 1, level, step)
    )
    return StreamingResponse(
        lines,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _follow(
    store: StateStore, run_id: str, start: int, levels: list[str] | None, step: str | None
) -> AsyncIterator[str]:
    sent = start
    quiet_since = time.monotonic()
    while True:
        try:
            run_status, logs = await asyncio.to_thread(q.run_progress, store, run_id)
        except NotFound:
            yield _sse("end", {"run_id": run_id, "status": None})
            return
        for line in _log_lines(logs, levels, step, start=sent):
            yield _sse("log", line.model_dump(), line.index)
            quiet_since = time.monotonic()
        sent = max(sent, len(logs))
        if run_status in FINAL:
            yield _sse("end", {"run_id": run_id, "status": run_status})
            return
        if time.monotonic() - quiet_since > STREAM_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(STREAM_POLL_S)


async def _follow_ops(
    store: StateStore,
    ops: oq.OpsQueries,
    run_id: str,
    after: int,
    levels: list[str] | None,
    step: str | None,
) -> AsyncIterator[str]:
    """Follow a run's lines in the ops store (``search_after`` on their seq) as they arrive.

    It ends once the run row is final and the run's ``finished`` record and every line it
    counts are searchable (or :data:`STREAM_FINAL_GRACE_S` after the run became final).
    """
    last = after
    quiet_since = time.monotonic()
    final_since: float | None = None
    end_status: str | None = None
    while True:
        try:
            hits, _ = await asyncio.to_thread(
                ops.run_logs, run_id, after=last, limit=500, levels=levels, step=step
            )
        except Exception:  # the ops store is away: keep the stream open, try again
            hits = []
        for hit in hits:
            yield _sse("log", _hit_line(hit).model_dump(), hit.index)
            last = hit.index
            quiet_since = time.monotonic()
        if len(hits) == 500:
            continue
        if end_status is not None:  # that was the last pass
            yield _sse("end", {"run_id": run_id, "status": end_status})
            return
        try:
            view = await asyncio.to_thread(q.get_run, store, run_id)
        except NotFound:
            yield _sse("end", {"run_id": run_id, "status": None})
            return
        if view.run.status in FINAL:
            final_since = final_since or time.monotonic()
            try:
                complete = await asyncio.to_thread(ops.logs_complete, run_id, view.run.attempt)
            except Exception:
                complete = False
            if complete or time.monotonic() - final_since > STREAM_FINAL_GRACE_S:
                end_status = view.run.status  # one more pass for lines indexed meanwhile
                continue
        if time.monotonic() - quiet_since > STREAM_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(STREAM_POLL_S)


# -- log search -------------------------------------------------------------------------------


@router.get("/logs", tags=["logs"])
def search_logs(
    caller: Caller,
    store: StoreDep,
    platform: PlatformDep,
    paging: Paging,
    text: Annotated[
        str | None,
        Query(alias="q", max_length=500, pattern=NO_NUL, description="Words in the message"),
    ] = None,
    level: Annotated[
        list[LogLevel] | None, Query(description="Only these levels (repeat for several)")
    ] = None,
    service: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    version: Annotated[
        str | None, Query(max_length=128, pattern=NO_NUL, description="A version id or label")
    ] = None,
    since: Moment = None,
    until: Moment = None,
    correlation_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    run_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    project: Annotated[
        str | None,
        Query(max_length=64, pattern=NO_NUL, description="Platform-wide admin: one project"),
    ] = None,
) -> Page[LogHitOut]:
    """Log lines of the key's project's services (all for a platform-wide admin), newest
    first. ``q`` matches words of the message; ``since`` is inclusive and ``until`` exclusive
    on the line's time. From the ops store when the ops sink is on (``offset + limit`` up to
    10,000), else from the newest 1,000 matching runs' logs in the database."""
    scope = caller.scope(project)
    services = oq.project_services(store, scope) if scope is not None else None
    if service is not None:
        services = [service] if services is None or service in services else []
    versions = oq.version_ids(store, version, services) if version is not None else None
    search = oq.LogSearch(
        text=text,
        levels=level,
        services=services,
        versions=versions,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
        correlation_id=correlation_id,
        run_id=run_id,
    )
    ops = oq.ops_queries(platform.settings)
    if ops is None:
        hits, total = oq.db_search_logs(store, search, offset=paging.offset, limit=paging.limit)
    else:
        if paging.offset + paging.limit > oq.MAX_WINDOW:
            raise invalid(
                "the request is invalid",
                [{"location": "query.offset", "message": "offset + limit must be <= 10000"}],
            )
        try:
            hits, total = ops.search_logs(search, offset=paging.offset, limit=paging.limit)
        except Exception as exc:
            raise _ops_unavailable(exc) from exc
    items = [
        LogHitOut(
            index=h.index,
            time=h.time,
            level=h.level,
            step=h.step,
            message=h.message,
            run_id=h.run_id,
            service=h.service,
            version=h.version,
            correlation_id=h.correlation_id,
        )
        for h in hits
    ]
    return paging.page(items, total=total)


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: RunId, caller: Caller, store: StoreDep, platform: PlatformDep) -> CancelOut:
    """Cancel a queued or running run (developer)."""
    view = _run(store, caller, run_id, "developer")
    if view.run.status in FINAL:
        return CancelOut(status="not_active")
    return CancelOut(status=platform.cancel(run_id))


@router.patch("/runs/{run_id}", responses={409: {"description": "The run is not queued any more"}})
def set_priority(
    run_id: RunId, body: PriorityIn, caller: Caller, store: StoreDep, platform: PlatformDep
) -> RunOut:
    """Change a queued run's priority (developer); 409 once it started or finished."""
    view = _run(store, caller, run_id, "developer")
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
    view = _run(store, caller, run_id, "developer")
    run = view.run
    version_id = run.version_id
    if body is not None and body.version is not None:
        try:
            version_id = store.resolve_version(run.service, body.version).id
        except NotFound as exc:
            raise _version_problem(str(exc).strip("'\"")) from None
    service = store.get_service(run.service)
    if not service.active:
        raise ApiError(409, f"service {run.service!r} is not active")
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


# -- traces -----------------------------------------------------------------------------------


@router.get("/traces/{key}", tags=["traces"])
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
    runs = [
        r
        for r in trace.runs
        if caller.platform_admin or caller.can_see(trace.projects.get(r.service) or "")
    ]
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
                service=r.service,
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


# -- A/B report -------------------------------------------------------------------------------


@router.get("/services/{name}/report", tags=["services"])
def service_report(
    name: ServiceName,
    caller: Caller,
    store: StoreDep,
    since: Moment = None,
    until: Moment = None,
) -> ReportOut:
    """Per version, the runs created in ``[since, until)`` (default: the last 24 hours): counts,
    error rate and duration percentiles of finished runs, to compare the versions of an A/B
    split on the same events."""
    _service(store, caller, name, "viewer")
    end = _moment(until, "until")
    end = time.time() if end is None else end
    start = _moment(since, "since")
    start = end - REPORT_WINDOW_S if start is None else start
    stats = q.version_report(store, name, start, end)
    labels = q.version_labels(store, [s.version_id for s in stats])
    return ReportOut(
        service=name,
        since=start,
        until=end,
        versions=[
            VersionReport(
                version=VersionRef(id=s.version_id, label=labels.get(s.version_id)),
                runs=s.runs,
                succeeded=s.succeeded,
                failed=s.failed,
                timed_out=s.timed_out,
                cancelled=s.cancelled,
                active=s.active,
                shadow_runs=s.shadow_runs,
                error_rate=s.error_rate,
                duration_p50_ms=s.percentile(50),
                duration_p95_ms=s.percentile(95),
            )
            for s in stats
        ],
    )
