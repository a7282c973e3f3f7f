"""/api/v1 routes: the event catalog.

Every event type the routers have seen: how many, first and last seen, which services emit it
and which are linked to it (triggers whose pattern matches it), and a JSON Schema of its
``data`` inferred from samples of the events (fields missing in some events are optional, a
``null`` seen makes a field nullable), with the history of its changes.

A project key sees the event types its project's services emit or are linked to (and only
its own services in those lists); a platform admin sees everything.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Path, Query

from fxray.api.auth import Caller, Principal
from fxray.api.deps import StoreDep
from fxray.api.errors import not_found
from fxray.api.pagination import Page, Paging
from fxray.api.schemas.catalog import EventTypeDetailOut, EventTypeOut, SchemaChangeOut
from fxray.router.triggers import is_glob
from fxray.store import EventTypeRecord, NotFound, StateStore, TriggerRecord

router = APIRouter(tags=["catalog"])

TYPE_PATTERN = r"^[^\x00-\x1f\x7f]{1,255}$"  # no control characters (PostgreSQL refuses NUL)
EventType = Annotated[
    str, Path(pattern=TYPE_PATTERN, description="An event type, e.g. `order.created`")
]


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def _matches(pattern: str, event_type: str) -> bool:
    """A trigger pattern against a type, as the router matches them (exact, or a glob)."""
    if is_glob(pattern):
        return _glob(pattern).match(event_type) is not None
    return pattern == event_type


class _View:
    """What one caller may see of the catalog: the services of its project (all for a
    platform-wide key without ``project``), shown by name."""

    def __init__(self, store: StateStore, caller: Principal, project: str | None) -> None:
        scope = caller.scope(project)
        self.scoped = scope is not None
        # service id -> name (emitters and triggers name services by id)
        self.names = {s.id: s.name for s in store.list_services(project=scope)}
        # the active triggers by exact type, and the globs: a type is looked up, not matched
        # against every trigger (the list page asks for each of up to thousands of types)
        self.exact: dict[str, set[str]] = {}
        self.globs: list[TriggerRecord] = []
        for trigger in store.list_triggers():
            if not trigger.active:
                continue
            if is_glob(trigger.pattern):
                self.globs.append(trigger)
            else:
                self.exact.setdefault(trigger.pattern, set()).add(trigger.service)

    def linked(self, event_type: str) -> list[str]:
        """The services an active trigger links ``event_type`` to (exact, or a glob)."""
        found = set(self.exact.get(event_type, ()))
        found.update(t.service for t in self.globs if _matches(t.pattern, event_type))
        return sorted(found)

    def out(self, record: EventTypeRecord) -> EventTypeOut | None:
        """The record as this caller sees it, or None if it is none of its business."""
        emitters, linked = list(record.emitters), self.linked(record.type)
        if self.scoped:
            emitters = [s for s in emitters if s in self.names]
            linked = [s for s in linked if s in self.names]
            if not emitters and not linked:
                return None
        return EventTypeOut(
            type=record.type,
            count=record.count,
            first_seen=record.first_seen,
            last_seen=record.last_seen,
            emitters=sorted({self.names.get(s, s) for s in emitters}),
            linked_services=sorted({self.names.get(s, s) for s in linked}),
            schema_version=record.schema_version,
        )


def _visible(
    store: StateStore, caller: Principal, event_type: str
) -> tuple[EventTypeRecord, EventTypeOut]:
    try:
        record = store.get_event_type(event_type)
    except NotFound:
        raise not_found(f"event type {event_type!r}") from None
    seen = _View(store, caller, None).out(record)
    if seen is None:
        raise not_found(f"event type {event_type!r}")
    return record, seen


@router.get("/catalog")
def list_event_types(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    prefix: Annotated[
        str | None, Query(pattern=TYPE_PATTERN, description="Only types starting with this")
    ] = None,
    project: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Only this project's (admin)"),
    ] = None,
) -> Page[EventTypeOut]:
    """The event types seen, by name."""
    view = _View(store, caller, project)
    items = [out for r in store.list_event_types(prefix or None) if (out := view.out(r))]
    return paging.page(items)


@router.get("/catalog/{event_type:path}/history")
def schema_history(
    event_type: EventType, caller: Caller, store: StoreDep, paging: Paging
) -> Page[SchemaChangeOut]:
    """The schema versions of an event type, oldest first, each with what changed."""
    _visible(store, caller, event_type)
    changes = [
        SchemaChangeOut(version=c.version, at=c.at, changes=list(c.changes), schema=c.schema)
        for c in store.schema_history(event_type)
    ]
    return paging.page(changes)


@router.get("/catalog/{event_type:path}")
def get_event_type(event_type: EventType, caller: Caller, store: StoreDep) -> EventTypeDetailOut:
    """One event type with its JSON Schema."""
    record, seen = _visible(store, caller, event_type)
    return EventTypeDetailOut(**seen.model_dump(), schema=record.schema)
