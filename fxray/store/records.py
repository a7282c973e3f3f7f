"""The records the state store hands out: plain, frozen values, importable by every store
module without the store itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fxray.store.mappings import MappingRecord

DEFAULT_PROJECT = "default"
SERVICE_ID_SEPARATOR = "."
"""Joins a project and a service name into a service id: project names may contain it, service
names may not, so ``<project>.<name>`` is unambiguous and no plain name can take it."""


def qualified_service_id(project: str, name: str) -> str:
    """The id a new service ``name`` of ``project`` takes: the plain name in the default project
    (the ids of every service made before projects had names of their own), else
    ``<project>.<name>``."""
    if project == DEFAULT_PROJECT:
        return name
    return f"{project}{SERVICE_ID_SEPARATOR}{name}"


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A service: ``name`` is unique within its ``project``; ``id`` is unique on the platform
    and is what versions, triggers, schedules, runs, KV keys, executors and ops data are keyed
    by (see :func:`qualified_service_id`)."""

    id: str
    name: str
    description: str
    tags: list[str]
    active: bool
    allow_manual_triggering: bool
    priority: int
    schedule: str | None
    max_concurrency: int | None
    created_at: float
    updated_at: float
    project: str = DEFAULT_PROJECT


@dataclass(frozen=True, slots=True)
class VersionRecord:
    id: str
    service: str
    content_hash: str
    label: str | None
    manifest: dict[str, Any]
    requirements: list[str]
    requirements_hash: str
    deployed_by: str | None
    created_at: float

    @property
    def steps(self) -> list[str]:
        entry = self.manifest.get("entrypoint")
        return [entry] if entry else list(self.manifest.get("execution_order") or [])


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    id: str
    pattern: str
    service: str
    filters: dict[str, str]
    weights: dict[str, int]
    shadow_version: str | None
    ordered: bool
    active: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    service: str
    version_id: str
    trigger_id: str | None
    event_id: str
    event_type: str
    correlation_id: str
    status: str
    priority: int
    attempt: int
    shadow: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    steps: list[dict[str, Any]]
    error: str | None
    logs: list[list[Any]]
    result: Any

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at) * 1000.0


@dataclass(slots=True)
class RoutingSnapshot:
    """What a router needs to route: read in one transaction, tagged with its revision."""

    revision: int
    services: dict[str, ServiceRecord] = field(default_factory=dict)  # by service id
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)
    triggers: list[TriggerRecord] = field(default_factory=list)
    mappings: list[MappingRecord] = field(default_factory=list)  # the active ones
