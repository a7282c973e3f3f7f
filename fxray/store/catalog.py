"""The event catalog's storage: the event types seen, their counts, emitters and schemas.

Schemas are inferred, merged and diffed by :mod:`fxray.events.catalog`; this module stores
what it is given and numbers the schema versions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from fxray.events import catalog
from fxray.store.common import NotFound, StoreMixin, record
from fxray.store.models import EventTypeRow, SchemaChangeRow


@dataclass(frozen=True, slots=True)
class EventTypeObservation:
    """What was seen of one event type since the last report."""

    type: str
    count: int
    first_seen: float
    last_seen: float
    schema: dict[str, Any] | None = None  # the merged schema, when it is to be stored
    emitter: str | None = None  # the service that emitted it, if any
    changes: list[str] = field(default_factory=list)  # how ``schema`` differs from the last


@dataclass(frozen=True, slots=True)
class EventTypeRecord:
    type: str
    count: int
    first_seen: float
    last_seen: float
    schema: dict[str, Any] | None
    schema_version: int  # 0 until a schema is stored
    emitters: list[str]


@dataclass(frozen=True, slots=True)
class SchemaChangeRecord:
    id: int
    type: str
    version: int
    schema: dict[str, Any]
    changes: list[str]
    at: float


class CatalogStore(StoreMixin):
    """Event types and their schema history."""

    def record_event_types(self, observations: list[EventTypeObservation]) -> None:
        """Add observations: counts add up, first/last seen widen, emitters join; a schema is
        merged into the stored one, and a merge that changes it is the next version, with a
        history row."""
        if not observations:
            return
        types = sorted({o.type for o in observations})
        with self.session() as s:
            # Write first (SQLite takes its write lock at once), then lock the rows (PostgreSQL).
            s.execute(
                self._insert_ignore(EventTypeRow),
                [
                    {
                        "type": name,
                        "count": 0,
                        "first_seen": min(o.first_seen for o in observations if o.type == name),
                        "last_seen": max(o.last_seen for o in observations if o.type == name),
                        "schema_version": 0,
                        "emitters": [],
                    }
                    for name in types
                ],
            )
            query = (
                select(EventTypeRow)
                .where(EventTypeRow.type.in_(types))
                .order_by(EventTypeRow.type)
                .with_for_update()
            )
            rows = {row.type: row for row in s.scalars(query)}
            now = time.time()
            for seen in observations:
                row = rows[seen.type]
                row.count += seen.count
                row.first_seen = min(row.first_seen, seen.first_seen)
                row.last_seen = max(row.last_seen, seen.last_seen)
                if seen.emitter and seen.emitter not in row.emitters:
                    row.emitters = [*row.emitters, seen.emitter]
                if seen.schema is None:
                    continue
                # merged under the row lock, so a widening another router stored meanwhile is
                # kept, and the changes are those against what is really stored
                stored = row.schema or {}
                merged = catalog.merge(stored, seen.schema)
                if merged != stored:
                    row.schema = merged
                    row.schema_version += 1
                    # the caller's changes hold unless another writer got in between
                    if merged == seen.schema:
                        changes = list(seen.changes)
                    else:
                        changes = catalog.diff(stored, merged)
                    s.add(
                        SchemaChangeRow(
                            type=seen.type,
                            version=row.schema_version,
                            schema=merged,
                            changes=changes,
                            at=now,
                        )
                    )

    def list_event_types(self, prefix: str | None = None) -> list[EventTypeRecord]:
        query = select(EventTypeRow).order_by(EventTypeRow.type)
        if prefix:
            query = query.where(EventTypeRow.type.startswith(prefix, autoescape=True))
        with self.session() as s:
            return [record(EventTypeRecord, r) for r in s.scalars(query)]

    def get_event_type(self, type: str) -> EventTypeRecord:
        with self.session() as s:
            row = s.get(EventTypeRow, type)
            if row is None:
                raise NotFound(f"no event type {type!r}")
            return record(EventTypeRecord, row)

    def schema_history(self, type: str) -> list[SchemaChangeRecord]:
        """The stored schemas of an event type, oldest first."""
        with self.session() as s:
            if s.get(EventTypeRow, type) is None:
                raise NotFound(f"no event type {type!r}")
            query = (
                select(SchemaChangeRow)
                .where(SchemaChangeRow.type == type)
                .order_by(SchemaChangeRow.version, SchemaChangeRow.id)
            )
            return [record(SchemaChangeRecord, r) for r in s.scalars(query)]
