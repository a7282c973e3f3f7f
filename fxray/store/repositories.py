"""Git repositories registered through the API: each top-level folder with a ``manifest.json``
is a service of the repository's project, deployed by a sync (:mod:`fxray.packages.git`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Float, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from fxray.store.common import Conflict, NotFound, StoreMixin, record
from fxray.store.models import Base


class RepositoryRow(Base):
    __tablename__ = "repositories"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(Text)
    ref: Mapped[str] = mapped_column(String(255))
    last_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_synced_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True, slots=True)
class RepositoryRecord:
    id: str
    project: str
    url: str
    ref: str
    last_commit: str | None
    last_synced_at: float | None
    created_at: float


class RepositoryStoreMixin(StoreMixin):
    """:class:`~fxray.store.StateStore` methods for registered git repositories."""

    def add_repository(self, project: str, url: str, ref: str = "main") -> RepositoryRecord:
        """Register ``url`` at ``ref`` for ``project``; Conflict if it is registered already."""
        with self.session() as s:
            clash = s.scalar(
                select(RepositoryRow.id).where(
                    RepositoryRow.project == project,
                    RepositoryRow.url == url,
                    RepositoryRow.ref == ref,
                )
            )
            if clash is not None:
                raise Conflict(f"repository {url!r} at {ref!r} is registered already ({clash})")
            row = RepositoryRow(
                id=uuid.uuid4().hex[:16],
                project=project,
                url=url,
                ref=ref,
                last_commit=None,
                last_synced_at=None,
                created_at=time.time(),
            )
            s.add(row)
            s.flush()
            return record(RepositoryRecord, row)

    def get_repository(self, repository_id: str) -> RepositoryRecord:
        with self.session() as s:
            row = s.get(RepositoryRow, repository_id)
            if row is None:
                raise NotFound(f"no repository {repository_id!r}")
            return record(RepositoryRecord, row)

    def list_repositories(self, project: str | None = None) -> list[RepositoryRecord]:
        query = select(RepositoryRow).order_by(RepositoryRow.created_at, RepositoryRow.id)
        if project is not None:
            query = query.where(RepositoryRow.project == project)
        with self.session() as s:
            return [record(RepositoryRecord, r) for r in s.scalars(query)]

    def remove_repository(self, repository_id: str) -> None:
        """Forget a repository (its services and versions stay)."""
        with self.session() as s:
            result = s.execute(delete(RepositoryRow).where(RepositoryRow.id == repository_id))
            if result.rowcount == 0:
                raise NotFound(f"no repository {repository_id!r}")

    def mark_synced(
        self, repository_id: str, commit: str, at: float | None = None
    ) -> RepositoryRecord:
        """Record the commit a sync deployed from."""
        with self.session() as s:
            row = s.get(RepositoryRow, repository_id)
            if row is None:
                raise NotFound(f"no repository {repository_id!r}")
            row.last_commit = commit
            row.last_synced_at = time.time() if at is None else at
            s.flush()
            return record(RepositoryRecord, row)
