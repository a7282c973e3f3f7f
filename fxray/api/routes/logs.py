"""/api/v1 routes: a run's log (as a page, or followed as Server-Sent Events) and log search.

Logs come from the ops store (Elasticsearch) when the ops sink is on, else from the run rows.
A run's log belongs to its service's project: viewers read it; a run of another project
answers 404.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from fxray.api.auth import Caller
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid
from fxray.api.pagination import Page, PageParams, Paging
from fxray.api.routes._common import (
    FINAL,
    Moment,
    RunId,
    log_lines,
    parse_moment,
    service_names,
    visible_run,
)
from fxray.api.schemas.common import NO_NUL
from fxray.api.schemas.logs import LogHitOut, LogLineOut
from fxray.ops import queries as oq
from fxray.store import NotFound, StateStore
from fxray.store import queries as q

if TYPE_CHECKING:
    from fxray.settings import Settings

router = APIRouter(tags=["runs"])

STREAM_POLL_S = 0.25
STREAM_KEEPALIVE_S = 15.0
STREAM_FINAL_GRACE_S = 10.0  # after a run is final, wait this long at most for its last lines

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "STDOUT", "STDERR"]


# -- helpers ----------------------------------------------------------------------------------


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


# -- a run's log ------------------------------------------------------------------------------


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
    view = visible_run(store, caller, run_id, "viewer")
    ops = oq.ops_queries(platform.settings)
    if ops is not None:
        return _ops_run_logs(ops, run_id, paging, level, step, after)
    start = after + 1 if after is not None else 0
    return paging.page(log_lines(view.run.logs, level, step, start=start))


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
    await asyncio.to_thread(visible_run, store, caller, run_id, "viewer")
    start = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(
        follow_log(store, platform.settings, run_id, start, level, step),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def follow_log(
    store: StateStore,
    settings: Settings,
    run_id: str,
    start: int,
    levels: list[str] | None,
    step: str | None,
) -> AsyncIterator[str]:
    """What ``/runs/{id}/logs/stream`` sends (also the web UI's source): Server-Sent Events
    text of a run's lines from index ``start``, from the ops store when the ops sink is on,
    else from the run row; then an ``end`` event. The run's access check is the caller's."""
    ops = oq.ops_queries(settings)
    if ops is None:
        return _follow(store, run_id, start, levels, step)
    return _follow_ops(store, ops, run_id, start - 1, levels, step)


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
        for line in log_lines(logs, levels, step, start=sent):
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
    service: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="A service's name")
    ] = None,
    version: Annotated[
        str | None, Query(max_length=160, pattern=NO_NUL, description="A version id or label")
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
    if service is not None:  # a name: the service of that name in each project in scope
        services = [
            s.id for s in store.services_named(service) if scope is None or s.project == scope
        ]
    versions = oq.version_ids(store, version, services) if version is not None else None
    search = oq.LogSearch(
        text=text,
        levels=level,
        services=services,
        versions=versions,
        since=parse_moment(since, "since"),
        until=parse_moment(until, "until"),
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
    names = service_names(store, {h.service for h in hits})
    items = [
        LogHitOut(
            index=h.index,
            time=h.time,
            level=h.level,
            step=h.step,
            message=h.message,
            run_id=h.run_id,
            service=names.get(h.service, h.service),
            version=h.version,
            correlation_id=h.correlation_id,
        )
        for h in hits
    ]
    return paging.page(items, total=total)
