"""Request and response models of services, their versions and docs, and git repositories of
services."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fxray.api.schemas.common import NAME_PATTERN
from fxray.packages import git as gitsync


class ServiceOut(BaseModel):
    name: str
    project: str
    description: str
    tags: list[str]
    active: bool
    allow_manual_triggering: bool
    priority: int
    schedule: str | None
    max_concurrency: int | None
    latest_version: str | None = Field(description="Id of the newest version")
    version_count: int
    created_at: float
    updated_at: float


class ClashOut(BaseModel):
    """A package the version would install at a version the platform does not run."""

    requirement: str = Field(description="The requirement line that brings it in")
    package: str
    version: str = Field(description="The version it installs ('' when not resolved)")
    platform_version: str


class IsolationOut(BaseModel):
    """Where the version's scripts run, and why (decided at deploy)."""

    mode: str = Field(description="'in-process' or 'process' (an isolated worker process)")
    requested: str = Field(description="The manifest's isolation: auto, process or in-process")
    clashes: list[ClashOut]
    resolved: bool = Field(
        description="Every package the requirements install was checked (else only their lines)"
    )
    note: str | None = Field(default=None, description="Why they could not be resolved")
    summary: str


class VersionOut(BaseModel):
    id: str
    service: str
    label: str | None
    content_hash: str
    requirements: list[str]
    requirements_hash: str
    deployed_by: str | None = Field(description="Id of the API key that deployed it")
    created_at: float
    steps: list[str]
    manifest: dict[str, Any]
    isolation: IsolationOut | None = Field(
        default=None, description="None for versions deployed before isolation was decided"
    )


class LinkedTrigger(BaseModel):
    """A trigger a first deploy made from the manifest's ``trigger_events``."""

    id: str
    pattern: str
    service: str
    active: bool


class DeployOut(BaseModel):
    service: ServiceOut
    version: VersionOut
    created: bool = Field(description="False when the same content was deployed before")
    triggers: list[LinkedTrigger]


class ServicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool | None = Field(default=None, description="Switch the service on or off")


class DocsOut(BaseModel):
    service: str
    version: str
    readme: str | None = Field(description="The package's README.md (markdown)")
    parameters: list[Any] | None = Field(description="The package's parameters.json")


class RepositoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=gitsync.MAX_URL_LENGTH,
        description="https://..., ssh://... or git@host:path (file:// and local paths only "
        "where the server allows them)",
    )
    ref: str = Field(
        default="main",
        min_length=1,
        max_length=gitsync.MAX_REF_LENGTH,
        description="Branch, tag, or full commit id",
    )
    project: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Project of its services; default the key's own (required for a "
        "platform-wide key)",
    )


class RepositoryOut(BaseModel):
    id: str
    project: str
    url: str = Field(description="The URL, with any password replaced by ***")
    ref: str
    last_commit: str | None
    last_synced_at: float | None
    created_at: float


class FolderOut(BaseModel):
    """One top-level folder of a sync: deployed, or the problems that stopped it."""

    folder: str
    service: str | None = None
    version: str | None = None
    created: bool = False
    problems: list[str] = Field(default_factory=list)


class SyncOut(BaseModel):
    repository: RepositoryOut
    commit: str
    results: list[FolderOut]
