"""4. Runs: a filtered list (service, version, status, event type, correlation id, time) paged
by keyset, bulk cancel / replay / re-prioritise, and a run's page: steps and timings, live logs
(Server-Sent Events) with a level filter, the event that caused it, the events it emitted, and
replay on any version of its service.

The actions call the API's own route functions, so they check and answer exactly as the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from fxray.api.errors import ApiError, invalid
from fxray.api.routes import runs as api_runs
from fxray.api.routes._common import parse_moment, visible_run
from fxray.api.routes.logs import LogLevel, follow_log
from fxray.api.schemas.common import NAME_PATTERN, NO_NUL
from fxray.api.schemas.runs import PriorityIn, ReplayIn
from fxray.runtime.runs import RunStatus
from fxray.store import queries as q
from fxray.ui import queries as uq
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope, ui_state
from fxray.ui.nav import NavEntry
from fxray.ui.routing import in_thread, ui_router
from fxray.ui.templating import is_htmx, page, query, render_fragment

router = ui_router()
NAV = NavEntry("Runs", "/runs", 40)

PAGE_SIZES = (25, 50, 100, 200)
BULK_MOST = 200
LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "STDOUT", "STDERR")
STATUSES = tuple(s.value for s in RunStatus)
RUN_ID = r"^[A-Za-z0-9._:-]{1,64}$"

RunId = Annotated[str, PathParam(pattern=RUN_ID, description="The run's id")]
Text = Annotated[str | None, Query(max_length=255, pattern=NO_NUL)]


# -- the list ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFilters:
    """The list's filters as the form sends them (kept for links and the next page)."""

    project: str | None = None
    service: str | None = None  # a service id
    version: str | None = None
    status: str | None = None
    event_type: str | None = None
    correlation_id: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 50

    def params(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__slots__}
        values["limit"] = self.limit if self.limit != 50 else None
        return values

    def selection(self, user: UIUser) -> uq.RunSelection:
        filters = q.RunFilter(
            project=scope(user, self.project),
            service=self.service,
            version=self.version,
            since=parse_moment(self.since, "since"),
            until=parse_moment(self.until, "until"),
            correlation_id=self.correlation_id,
        )
        statuses = (self.status,) if self.status else ()
        return uq.RunSelection(filters, statuses=statuses, event_type=self.event_type)


def _filters(
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    service: Text = None,
    version: Text = None,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")?$")] = None,
    event_type: Text = None,
    correlation_id: Text = None,
    since: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    until: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=max(PAGE_SIZES))] = 50,
) -> RunFilters:
    return RunFilters(
        project=project or None,
        service=service or None,
        version=version or None,
        status=status or None,
        event_type=event_type or None,
        correlation_id=correlation_id or None,
        since=since or None,
        until=until or None,
        limit=limit,
    )


def _cursor(before: str | None) -> uq.RunCursor | None:
    if not before:
        return None
    try:
        return uq.RunCursor.parse(before)
    except ValueError:
        raise invalid("the page link is invalid", ["before: not a page cursor"]) from None


def _list_context(
    user: UIUser, store: Any, filters: RunFilters, before: str | None
) -> dict[str, Any]:
    views, cursor = uq.runs_page(
        store, filters.selection(user), before=_cursor(before), limit=filters.limit
    )
    params = filters.params()
    return {
        **page_context(user),
        "runs": views,
        "filters": filters,
        "params": params,
        "next_page": query(params, before=cursor.token()) if cursor else None,
        "first_page": bool(before),
        "self_url": "/runs" + query(params, before=before),
        "statuses": STATUSES,
        "page_sizes": PAGE_SIZES,
        "can_change": user.may_change,
    }


Filters = Annotated[RunFilters, Depends(_filters)]
Before = Annotated[str | None, Query(max_length=120, description="The page cursor")]


@router.get("/runs")
def runs_page(
    request: Request, user: User, store: StoreDep, filters: Filters, before: Before = None
) -> Response:
    """The whole page, or only the table for htmx (filters and paging swap the table)."""
    context = _list_context(user, store, filters, before)
    if request.headers.get("hx-target") == "runs-table":
        return page(request, "runs/_table.html", context)
    services = store.list_services(scope(user, filters.project))
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    return page(request, "runs/list.html", {**context, "services": services, "projects": projects})


# -- bulk actions -----------------------------------------------------------------------------


def _act(action: str, run_id: str, user: UIUser, store: Any, platform: Any, **extra: Any) -> str:
    """One run's action through the API's route function; what came of it."""
    caller = user.principal
    if action == "cancel":
        answer = api_runs.cancel_run(run_id=run_id, caller=caller, store=store, platform=platform)
        return {"cancelled": "cancelled", "cancelling": "cancelling"}.get(
            answer.status, "not active any more"
        )
    if action == "replay":
        try:
            body = ReplayIn(version=extra.get("version") or None)
        except ValidationError:
            raise invalid("the version is not a version id or label") from None
        started = api_runs.replay_run(
            run_id=run_id, caller=caller, store=store, platform=platform, body=body
        )
        return f"replayed as run {started.run_id}"
    body = PriorityIn(priority=extra["priority"])
    api_runs.set_priority(run_id=run_id, body=body, caller=caller, store=store, platform=platform)
    return f"priority set to {extra['priority']}"


@router.post("/runs/bulk")
def bulk(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    action: Annotated[str, Form(pattern="^(cancel|replay|priority)$")],
    run_id: Annotated[list[str], Form(max_length=BULK_MOST)] = [],  # noqa: B006
    priority: Annotated[int | None, Form(ge=1, le=10)] = None,
) -> Response:
    """Cancel, replay or re-prioritise the chosen runs (developer in their projects). Each
    run answers on its own: one refused (404 another project's, 403 a viewer, 409 no longer
    queued) does not stop the others."""
    if not run_id:
        raise invalid("choose at least one run")
    if action == "priority" and priority is None:
        raise invalid("choose the new priority (1 highest .. 10 lowest)")
    outcomes = []
    for one in dict.fromkeys(run_id):
        try:
            text = _act(action, one, user, store, platform, priority=priority)
            outcomes.append({"run_id": one, "ok": True, "text": text})
        except ApiError as exc:
            outcomes.append({"run_id": one, "ok": False, "text": exc.message})
    if not is_htmx(request):
        return RedirectResponse("/runs", status_code=303)
    response = page(
        request,
        "runs/_bulk_result.html",
        {**page_context(user), "outcomes": outcomes, "action": action},
    )
    response.headers["HX-Trigger"] = "runs-changed"
    return response


# -- one run ----------------------------------------------------------------------------------


def _steps(run: Any) -> list[dict[str, Any]]:
    """The run's steps (as the API gives them) with where each sits in the run's time, in
    percent, for the timeline."""
    steps = [step.model_dump() for step in api_runs._steps(run.steps)]
    begin, end = run.started_at, run.finished_at
    span = (end - begin) if begin is not None and end is not None and end > begin else None
    for step in steps:
        step["offset_pct"] = step["width_pct"] = None
        if span and step["started_at"] is not None and step["finished_at"] is not None:
            step["offset_pct"] = round(100 * (step["started_at"] - begin) / span, 2)
            step["width_pct"] = max(
                0.5, round(100 * (step["finished_at"] - step["started_at"]) / span, 2)
            )
    return steps


@router.get("/runs/{run_id}")
def run_page(
    request: Request,
    run_id: RunId,
    user: User,
    store: StoreDep,
    level: Annotated[list[str] | None, Query()] = None,
) -> Response:
    view = visible_run(store, user.principal, run_id, "viewer")
    run = view.run
    chosen = _levels(level)
    return page(
        request,
        "runs/detail.html",
        {
            **page_context(user),
            **_run_context(store, user, view),
            "levels": LEVELS,
            "chosen_levels": chosen,
            "stream_url": _stream_url(run.id, chosen),
        },
    )


def _run_context(store: Any, user: UIUser, view: q.RunView) -> dict[str, Any]:
    run = view.run
    return {
        "view": view,
        "run": run,
        "steps": _steps(run),
        "cause": q.get_event(store, run.event_id),
        "emitted": uq.emitted_events(store, run),
        "versions": list(reversed(store.list_versions(run.service))),
        "can_change": user.can("developer", view.project),
        "notice": None,
        "final": run.status in q.FINAL_STATUSES,
        "result": json.dumps(run.result, indent=2, sort_keys=True, default=str)
        if run.result is not None
        else None,
    }


def _levels(level: list[str] | None) -> list[str]:
    """The chosen levels, known ones only; none chosen means all."""
    return [one for one in LEVELS if level and one in level]


def _stream_url(run_id: str, levels: list[str]) -> str:
    return f"/runs/{run_id}/logs/stream" + query(level=levels)


@router.get("/runs/{run_id}/logs")
def log_panel(
    request: Request,
    run_id: RunId,
    user: User,
    store: StoreDep,
    level: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The log panel with its level filter (htmx swaps it when the filter changes)."""
    view = visible_run(store, user.principal, run_id, "viewer")
    chosen = _levels(level)
    context = {
        **page_context(user),
        "run": view.run,
        "levels": LEVELS,
        "chosen_levels": chosen,
        "stream_url": _stream_url(view.run.id, chosen),
    }
    return page(request, "runs/_logs.html", context)


@router.get("/runs/{run_id}/logs/stream")
async def log_stream(
    request: Request,
    run_id: RunId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    level: Annotated[list[LogLevel] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> StreamingResponse:
    """The run's log lines as Server-Sent Events of HTML (escaped by the templates): the
    lines so far, new ones as they come, then ``end`` with the final status."""
    await in_thread(visible_run, store, user.principal, run_id, "viewer")
    start = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 0
    source = follow_log(store, platform.settings, run_id, start, list(level or []) or None, None)
    templates = ui_state(request).templates
    return StreamingResponse(
        _as_html(source, templates),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _as_html(source: AsyncIterator[str], templates: Any) -> AsyncIterator[str]:
    """The API's SSE messages (JSON data) as SSE messages of HTML fragments."""
    async for message in source:
        if message.startswith(":"):  # a keep-alive comment
            yield message
            continue
        fields: dict[str, str] = {}
        for line in message.strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        event = fields.get("event", "message")
        data = json.loads(fields.get("data", "null"))
        template = "runs/_log_line.html" if event == "log" else "runs/_log_end.html"
        html = render_fragment(templates, template, {"line": data, "end": data})
        yield _sse(event, html, fields.get("id"))


def _sse(event: str, html: str, event_id: str | None) -> str:
    """One SSE message; each line of ``html`` its own ``data:`` line (the browser joins them
    with newlines again)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = html.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # CR ends SSE lines
    data = "".join(f"data: {line}\n" for line in lines)
    return f"{head}event: {event}\n{data}\n"


# -- one run's actions ------------------------------------------------------------------------


def _after_action(request: Request, user: UIUser, store: Any, run_id: str, notice: str) -> Response:
    if not is_htmx(request):
        return RedirectResponse(f"/runs/{run_id}", status_code=303)
    view = visible_run(store, user.principal, run_id, "viewer")
    context = {**page_context(user), **_run_context(store, user, view), "notice": notice}
    return page(request, "runs/_actions.html", context)


@router.post("/runs/{run_id}/cancel")
def cancel(
    request: Request, run_id: RunId, user: User, store: StoreDep, platform: PlatformDep
) -> Response:
    text = _act("cancel", run_id, user, store, platform)
    return _after_action(request, user, store, run_id, f"run {text}")


@router.post("/runs/{run_id}/replay")
def replay(
    request: Request,
    run_id: RunId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    version: Annotated[str, Form(max_length=160, pattern=NO_NUL)] = "",
) -> Response:
    text = _act("replay", run_id, user, store, platform, version=version)
    return _after_action(request, user, store, run_id, text)


@router.post("/runs/{run_id}/priority")
def reprioritise(
    request: Request,
    run_id: RunId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    priority: Annotated[int, Form(ge=1, le=10)],
) -> Response:
    text = _act("priority", run_id, user, store, platform, priority=priority)
    return _after_action(request, user, store, run_id, text)
