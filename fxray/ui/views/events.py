"""6. Events: a live stream of the events the platform records (Server-Sent Events of HTML
rows, filtered by type prefix) and a form that sends a test event, its data checked first
against the event type's schema from the catalog (problems shown inline, per field path).

A project key sees the events its services' runs were triggered by or emitted; a
platform-wide admin sees every recorded event. Sending needs the developer role, as the API's
``POST /api/v1/events`` does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import jsonschema
from fastapi import Form, Header, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy import or_, select, tuple_

from fxray.api.auth import require_platform_admin, require_project
from fxray.api.errors import ApiError
from fxray.api.routes import catalog as catalog_api
from fxray.events import cloudevent as ev
from fxray.store import StateStore
from fxray.store.models import EventRow, RunRow, ServiceRow
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, ui_state
from fxray.ui.nav import NavEntry
from fxray.ui.routing import in_thread, ui_router
from fxray.ui.templating import is_htmx, render, render_fragment

router = ui_router()
NAV = NavEntry("Events", "/events", 60)

BACKLOG = 20  # newest events a new stream starts with
POLL_S = 0.5
LAG_S = 10.0  # how late a recorded event may land in the table and still be streamed
STREAM_S = 300.0  # a stream ends after this; the browser reconnects with Last-Event-ID
DATA_SHOWN = 2000
TEST_SOURCE = "fxray/ui"
PrefixQuery = Annotated[str | None, Query(max_length=255, pattern=catalog_api.TYPE_PATTERN)]


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """A recorded event as a row of the stream."""

    id: str
    type: str
    source: str
    received_at: float
    correlation_id: str
    run_id: str | None
    data: str
    cursor: str


def _cursor(received_at: float, event_id: str) -> str:
    return f"{received_at!r} {event_id}"


def _parse_cursor(value: str | None) -> tuple[float, str] | None:
    if not value:
        return None
    stamp, _, event_id = value.partition(" ")
    try:
        return float(stamp), event_id
    except ValueError:
        return None


def _shown(data: Any) -> str:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= DATA_SHOWN else text[:DATA_SHOWN] + " ..."


def events_after(
    store: StateStore,
    project: str | None,
    after: tuple[float, str] | None,
    prefix: str | None,
    limit: int = 100,
    until: tuple[float, str] | None = None,
) -> list[StreamedEvent]:
    """Recorded events after ``after`` (``(received_at, id)``; up to ``until`` if given) in
    the order received, or the newest ``limit`` when ``after`` is None; with ``project``, only
    events its services' runs were triggered by or emitted. Two statements (the project's
    services, then the events)."""
    query = select(EventRow)
    if until is not None:
        query = query.where(tuple_(EventRow.received_at, EventRow.id) <= until)
    if prefix:
        query = query.where(EventRow.type.startswith(prefix, autoescape=True))
    with store.session() as s:
        if project is not None:
            # per event, an index lookup of its runs (newest events first, until the limit),
            # not a hash of every run of the project
            services = list(s.scalars(select(ServiceRow.id).where(ServiceRow.project == project)))
            triggered = select(RunRow.id).where(
                RunRow.event_id == EventRow.id, RunRow.service.in_(services)
            )
            emitted = select(RunRow.id).where(
                RunRow.id == EventRow.run_id, RunRow.service.in_(services)
            )
            query = query.where(or_(triggered.exists(), emitted.exists()))
        if after is None:
            order = (EventRow.received_at.desc(), EventRow.id.desc())
            rows = list(s.scalars(query.order_by(*order).limit(limit)))[::-1]
        else:
            query = query.where(tuple_(EventRow.received_at, EventRow.id) > after)
            rows = list(s.scalars(query.order_by(EventRow.received_at, EventRow.id).limit(limit)))
        return [
            StreamedEvent(
                id=row.id,
                type=row.type,
                source=row.source,
                received_at=row.received_at,
                correlation_id=row.correlation_id,
                run_id=row.run_id,
                data=_shown(row.body.get("data")),
                cursor=_cursor(row.received_at, row.id),
            )
            for row in rows
        ]


def _sse(event: str, html: str, event_id: str | None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = html.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"{head}event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _may_send(user: UIUser) -> bool:
    if user.platform_admin:
        return True
    return user.principal.project is not None and user.can("developer", user.principal.project)


@router.get("/events")
def events_page(request: Request, user: User, prefix: PrefixQuery = None) -> Response:
    """The live stream and the test event form."""
    stream_url = "/events/stream" + (f"?prefix={prefix}" if prefix else "")
    return render(
        ui_state(request).templates,
        request,
        "events/index.html",
        {
            **page_context(user),
            "prefix": prefix or "",
            "stream_url": stream_url,
            "may_send": _may_send(user),
            "form": {"type": "", "data": "{}"},
            "problems": [],
            "sent": None,
        },
    )


@router.get("/events/stream")
async def event_stream(
    request: Request,
    user: User,
    store: StoreDep,
    prefix: PrefixQuery = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=300)] = None,
) -> StreamingResponse:
    """Recorded events as Server-Sent Events of HTML rows: the newest few, then new ones."""
    project = user.principal.scope(None)
    prefix = prefix or None
    templates = ui_state(request).templates

    async def messages() -> AsyncIterator[str]:
        cursor = _parse_cursor(last_event_id)
        # routers record events in batches, so a row can land after later ones were streamed:
        # besides what is newer than the cursor, each poll looks LAG_S back for ids not sent
        sent: dict[str, float] = {}
        ends = time.monotonic() + STREAM_S
        yield ": following\n\n"
        while time.monotonic() < ends and not await request.is_disconnected():
            if cursor is None:
                fresh = await in_thread(events_after, store, project, None, prefix, BACKLOG)
            else:
                late = await in_thread(
                    events_after, store, project, (cursor[0] - LAG_S, ""), prefix, 1000, cursor
                )
                new = await in_thread(events_after, store, project, cursor, prefix, 200)
                fresh = [e for e in late if e.id not in sent and sent] + new
            for item in fresh:
                html = render_fragment(templates, "events/_event.html", {"event": item})
                yield _sse("event", html, item.cursor)
                sent[item.id] = item.received_at
                cursor = max(cursor or (0.0, ""), (item.received_at, item.id))
            if cursor is None:
                cursor = (time.time() - LAG_S, "")
            for event_id, stamp in list(sent.items()):
                if stamp < cursor[0] - 2 * LAG_S:
                    del sent[event_id]
            if not fresh:
                yield ": alive\n\n"
                await asyncio.sleep(POLL_S)

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def schema_problems(schema: dict[str, Any] | None, data: Any) -> list[tuple[str, str]]:
    """``(field path, message)`` for each way ``data`` breaks ``schema`` (paths like
    ``data.items[0].sku``); none without a schema."""
    if not schema:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        path = "data"
        for part in error.path:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [p for p in error.validator_value if p not in error.instance]
            problems += [(f"{path}.{name}", "is required") for name in missing]
            continue
        problems.append((path, error.message))
    return problems


@router.post("/events")
def send_test_event(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    type: Annotated[str, Form(min_length=1, max_length=255, pattern=catalog_api.TYPE_PATTERN)],
    data: Annotated[str, Form(max_length=1_000_000)] = "null",
) -> Response:
    """Send a test event (developer): its data must be JSON and fit the type's schema."""
    if user.principal.project is None:
        require_platform_admin(user.principal)
    else:
        require_project(user.principal, user.principal.project, "developer")
    problems: list[tuple[str, str]] = []
    try:
        value = ev.strict_json(data)
    except ValueError as exc:
        problems.append(("data", f"not JSON: {exc}"))
    else:
        try:
            record = catalog_api.get_event_type(type, user.principal, store)
        except ApiError:
            record = None  # a type it cannot see or never seen: nothing to check against
        if record is not None:
            problems = schema_problems(record.json_schema, value)
    sent = None
    if not problems:
        try:
            sent = platform.send(type, value, source=TEST_SOURCE)
        except ev.InvalidEvent as exc:
            problems.append(("event", str(exc)))
    if not is_htmx(request) and sent is not None:
        return RedirectResponse("/events", status_code=303)
    context = {
        **page_context(user),
        "may_send": True,
        "form": {"type": type, "data": data},
        "problems": problems,
        "sent": sent,
    }
    name = "events/_form.html" if is_htmx(request) else "events/index.html"
    if not is_htmx(request):
        context.update(prefix="", stream_url="/events/stream")
    return render(
        ui_state(request).templates,
        request,
        name,
        context,
        status=422 if problems and not is_htmx(request) else 200,
    )
