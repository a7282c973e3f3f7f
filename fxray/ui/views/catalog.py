"""7. Event catalog: the event types seen, each with its inferred schema, the history of that
schema as diffs, and the services that produce (emit) and consume (are triggered by) it.

The pages call the API's catalog route functions, so a project key sees exactly what the API
shows it: the types its project's services emit or are linked to, and only its own services.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.responses import Response

from fxray.api.pagination import MAX_LIMIT, PageParams
from fxray.api.routes import catalog as api
from fxray.store import StateStore
from fxray.ui.deps import StoreDep, UIUser, User, page_context, scope, ui_state
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import render

router = ui_router()
NAV = NavEntry("Event catalog", "/catalog", 70)

PROJECT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
PER_PAGE = 200  # event types a page lists (a prefix narrows them; pages go on)
HISTORY = PageParams(limit=MAX_LIMIT, offset=0)


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a schema diff: ``kind`` is ``added``, ``removed``, ``context`` or ``hunk``."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """A schema version as the page shows it: what changed in words and as a diff."""

    version: int
    at: float
    changes: list[str]
    diff: list[DiffLine]


def _schema_text(schema: dict[str, Any] | None) -> list[str]:
    return json.dumps(schema, indent=2, sort_keys=True).splitlines() if schema else []


def schema_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[DiffLine]:
    """The line diff of two schemas as pretty JSON (keys sorted, so only changes show)."""
    lines = []
    for line in difflib.unified_diff(_schema_text(old), _schema_text(new), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "added", "-": "removed", "@": "hunk"}.get(line[:1], "context")
        lines.append(DiffLine(kind, line))
    return lines


def _service_links(store: StateStore, user: UIUser, project: str | None) -> dict[str, str]:
    """``{name: service id}`` for the names that mean one service of what the user sees (a
    name in several projects gets no link: the catalog names services, not ids)."""
    ids: dict[str, list[str]] = {}
    for service in store.list_services(project=scope(user, project)):
        ids.setdefault(service.name, []).append(service.id)
    return {name: found[0] for name, found in ids.items() if len(found) == 1}


@router.get("/catalog")
def catalog_page(
    request: Request,
    user: User,
    store: StoreDep,
    prefix: Annotated[str | None, Query(pattern=api.TYPE_PATTERN)] = None,
    project: Annotated[str | None, Query(pattern=PROJECT_PATTERN)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """The event types seen, by name, with their producers and consumers, a page at a time."""
    project = project or None
    paging = PageParams(limit=PER_PAGE, offset=offset)
    types = api.list_event_types(user.principal, store, paging, prefix or None, project)
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    return render(
        ui_state(request).templates,
        request,
        "catalog/list.html",
        {
            **page_context(user),
            "types": types.items,
            "total": types.total,
            "offset": offset,
            "per_page": PER_PAGE,
            "prefix": prefix or "",
            "project": project,
            "projects": projects,
            "links": _service_links(store, user, project),
        },
    )


@router.get("/catalog/{event_type:path}")
def event_type_page(
    request: Request,
    user: User,
    store: StoreDep,
    event_type: Annotated[str, Path(pattern=api.TYPE_PATTERN)],
) -> Response:
    """One event type: its schema, its producers and consumers, and its schema's history
    (newest first, each version as a diff of the one before)."""
    detail = api.get_event_type(event_type, user.principal, store)
    changes = api.schema_history(event_type, user.principal, store, HISTORY).items
    versions, previous = [], None
    for change in changes:
        versions.append(
            SchemaVersion(
                change.version, change.at, change.changes, schema_diff(previous, change.json_schema)
            )
        )
        previous = change.json_schema
    return render(
        ui_state(request).templates,
        request,
        "catalog/detail.html",
        {
            **page_context(user),
            "detail": detail,
            "schema": json.dumps(detail.json_schema, indent=2, sort_keys=True)
            if detail.json_schema
            else None,
            "versions": versions[::-1],
            "links": _service_links(store, user, None),
        },
    )
