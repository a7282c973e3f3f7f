"""Event mappings: an event of ``source_type`` also becomes one of ``target_type``.

Every write bumps the routing revision so routers reload; validation (cycles, field paths) is
the caller's. A write takes the routing revision's row lock before it reads the active mappings
for its ``check``, so two writers that would close a cycle together are serialised: the second
sees the first's rule and its check refuses it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fxray.store.common import NotFound, StoreMixin, record
from fxray.store.models import MappingRow, ProjectRow

_CHANGEABLE = {"source_type", "target_type", "fields", "map_all", "active"}

MappingCheck = Callable[[list["MappingRecord"]], None]
"""Called with the active mappings, under the write lock, before a write; raises to refuse it."""


@dataclass(frozen=True, slots=True)
class MappingRecord:
    id: str
    project: str
    source_type: str
    target_type: str
    fields: list[dict[str, Any]]  # {"from": "a.b", "to": "c", "op": "rename" | "copy"}
    map_all: bool
    active: bool
    created_at: float
    updated_at: float


class MappingStore(StoreMixin):
    """Mappings between event types."""

    def add_mapping(
        self,
        project: str,
        source_type: str,
        target_type: str,
        fields: list[dict[str, Any]],
        map_all: bool,
        *,
        active: bool = True,
        check: MappingCheck | None = None,
    ) -> MappingRecord:
        now = time.time()
        with self.session() as s:
            if s.get(ProjectRow, project) is None:
                raise NotFound(f"no project named {project!r}")
            self._bump(s)  # first: the lock that serialises routing writes
            if check is not None:
                check(self._active_mappings(s))
            row = MappingRow(
                id=uuid.uuid4().hex[:12],
                project=project,
                source_type=source_type,
                target_type=target_type,
                fields=list(fields),
                map_all=map_all,
                active=active,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            return record(MappingRecord, row)

    def get_mapping(self, mapping_id: str) -> MappingRecord:
        with self.session() as s:
            row = s.get(MappingRow, mapping_id)
            if row is None:
                raise NotFound(f"no mapping {mapping_id!r}")
            return record(MappingRecord, row)

    def list_mappings(
        self, project: str | None = None, source_type: str | None = None
    ) -> list[MappingRecord]:
        query = select(MappingRow).order_by(MappingRow.created_at, MappingRow.id)
        if project is not None:
            query = query.where(MappingRow.project == project)
        if source_type is not None:
            query = query.where(MappingRow.source_type == source_type)
        with self.session() as s:
            return [record(MappingRecord, r) for r in s.scalars(query)]

    def update_mapping(
        self, mapping_id: str, *, check: MappingCheck | None = None, **changes: Any
    ) -> MappingRecord:
        """Change ``source_type``, ``target_type``, ``fields``, ``map_all`` or ``active``."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} of a mapping")
        with self.session() as s:
            self._bump(s)  # first: the lock that serialises routing writes
            row = s.get(MappingRow, mapping_id)
            if row is None:
                raise NotFound(f"no mapping {mapping_id!r}")
            if check is not None:
                check(self._active_mappings(s))
            for key, value in changes.items():
                setattr(row, key, list(value) if key == "fields" else value)
            row.updated_at = time.time()
            s.flush()
            return record(MappingRecord, row)

    def remove_mapping(self, mapping_id: str) -> None:
        with self.session() as s:
            if s.execute(delete(MappingRow).where(MappingRow.id == mapping_id)).rowcount == 0:
                raise NotFound(f"no mapping {mapping_id!r}")
            self._bump(s)

    def _active_mappings(self, s: Session) -> list[MappingRecord]:
        """The active mappings, for the routing snapshot (inside its transaction)."""
        query = (
            select(MappingRow)
            .where(MappingRow.active.is_(True))
            .order_by(MappingRow.created_at, MappingRow.id)
        )
        return [record(MappingRecord, r) for r in s.scalars(query)]
