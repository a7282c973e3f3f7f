"""/api/v1 routes: services, their versions and docs, and git repositories of services.

A service is uploaded as a zip of its folder (multipart) or comes from a registered git
repository (each top-level folder with a ``manifest.json``); either way each distinct content
is one immutable version, and deploying the same content again changes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi import Path as PathParam

from fxray.api.auth import Caller, Principal, Role, require_project, visible_service
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid, not_found
from fxray.api.pagination import Page, Paging
from fxray.api.routes._common import ServiceProject
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.services import (
    DeployOut,
    DocsOut,
    FolderOut,
    LinkedTrigger,
    RepositoryIn,
    RepositoryOut,
    ServiceOut,
    ServicePatch,
    SyncOut,
    VersionOut,
)
from fxray.api.uploads import limited_body, settings_of, too_large
from fxray.packages import git as gitsync
from fxray.packages.archive import ArchiveLimits
from fxray.services.clashes import ISOLATION_KEY
from fxray.services.package import load_package_bytes
from fxray.store import NotFound, StateStore

if TYPE_CHECKING:
    from fxray.platform import Platform
    from fxray.store import ServiceRecord, TriggerRecord, VersionRecord
    from fxray.store.repositories import RepositoryRecord

router = APIRouter(tags=["services"])

SERVICE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
VERSION_PATTERN = r"^[A-Za-z0-9@._+-]{1,200}$"
REPOSITORY_ID_PATTERN = r"^[0-9a-f]{1,32}$"

ServiceName = Annotated[str, PathParam(pattern=SERVICE_PATTERN, description="Service name")]
VersionRef = Annotated[
    str, PathParam(pattern=VERSION_PATTERN, description="Version id, label or hash prefix")
]
RepositoryId = Annotated[str, PathParam(pattern=REPOSITORY_ID_PATTERN)]


def _service_out(store: StateStore, record: ServiceRecord) -> ServiceOut:
    versions = store.list_versions(record.id)
    return ServiceOut(
        name=record.name,
        project=record.project,
        description=record.description,
        tags=list(record.tags),
        active=record.active,
        allow_manual_triggering=record.allow_manual_triggering,
        priority=record.priority,
        schedule=record.schedule,
        max_concurrency=record.max_concurrency,
        latest_version=versions[-1].id if versions else None,
        version_count=len(versions),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _version_out(record: VersionRecord, service: str) -> VersionOut:
    """``service``: the service's name (``record.service`` is its id)."""
    return VersionOut(
        id=record.id,
        service=service,
        label=record.label,
        content_hash=record.content_hash,
        requirements=list(record.requirements),
        requirements_hash=record.requirements_hash,
        deployed_by=record.deployed_by,
        created_at=record.created_at,
        steps=record.steps,
        manifest={k: v for k, v in record.manifest.items() if k != ISOLATION_KEY},
        isolation=record.manifest.get(ISOLATION_KEY),
    )


def _trigger_out(record: TriggerRecord, service: str) -> LinkedTrigger:
    return LinkedTrigger(
        id=record.id, pattern=record.pattern, service=service, active=record.active
    )


def _repository_out(record: RepositoryRecord) -> RepositoryOut:
    return RepositoryOut(
        id=record.id,
        project=record.project,
        url=gitsync.redact(record.url),
        ref=record.ref,
        last_commit=record.last_commit,
        last_synced_at=record.last_synced_at,
        created_at=record.created_at,
    )


# -- access -----------------------------------------------------------------------------------


def _target_project(store: StateStore, caller: Principal, project: str | None) -> str:
    """The project a write goes to: the one asked for, else the key's own; must exist."""
    target = project or caller.project
    if target is None:
        raise invalid(
            "a platform-wide key must name the project",
            [{"location": "body.project", "message": "Field required"}],
        )
    require_project(caller, target, "developer")
    try:
        store.get_project(target)
    except NotFound:
        raise not_found(f"project {target!r}") from None
    return target


def _upload_limit(request: Request) -> int:
    """Largest zip accepted (``package_max_upload_bytes``); the request body may be a little
    larger (multipart framing)."""
    return settings_of(request).package_max_upload_bytes


# -- services ---------------------------------------------------------------------------------


@router.get("/services")
def list_services(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    project: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, description="Only this project's (platform-wide key)"),
    ] = None,
    active: Annotated[bool | None, Query(description="Only active or inactive ones")] = None,
    tag: Annotated[str | None, Query(max_length=128, description="Only with this tag")] = None,
    q: Annotated[str | None, Query(max_length=64, description="Name contains this")] = None,
) -> Page[ServiceOut]:
    """The services this key can see, by name."""
    services = [
        s
        for s in store.list_services(caller.scope(project))
        if (active is None or s.active == active)
        and (tag is None or tag in s.tags)
        and (q is None or q.lower() in s.name)
    ]
    window = services[paging.offset : paging.offset + paging.limit]
    return paging.page([_service_out(store, s) for s in window], total=len(services))


def upload_service(
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    response: Response,
    file: Annotated[
        UploadFile,
        File(description="A zip of the service folder (at the root or in one top folder)"),
    ],
    label: Annotated[
        str | None, Form(pattern=LABEL_PATTERN, description="A name for the new version")
    ] = None,
    project: Annotated[
        str | None,
        Form(
            pattern=NAME_PATTERN,
            description="Default: the key's project (required for a platform-wide key)",
        ),
    ] = None,
) -> DeployOut:
    """Deploy a service from a zip (developer in the project).

    Answers 201 with the new version, or 200 (``created: false``) when the same content was
    deployed before. An invalid or unsafe package (paths escaping the folder, symlinks, too
    many entries or files, more real bytes or a higher compression ratio than the limits, an
    invalid manifest) answers 422 listing every problem; a body over the size limit 413. The
    manifest's name is the service's name in the project: another project may have a service
    of the same name. The zip is decompressed in bounded chunks.
    """
    target = _target_project(store, caller, project)
    most = platform.settings.package_max_upload_bytes
    data = file.file.read(most + 1)
    if len(data) > most:
        raise too_large(most, "upload")
    deployment = platform.deploy(data, label=label, deployed_by=caller.key_id, project=target)
    if not deployment.created:
        response.status_code = status.HTTP_200_OK
    name = deployment.service.name
    return DeployOut(
        service=_service_out(store, store.get_service(deployment.service.id)),
        version=_version_out(deployment.version, name),
        created=deployment.created,
        triggers=[_trigger_out(t, name) for t in deployment.triggers],
    )


router.add_api_route(
    "/services",
    upload_service,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    route_class_override=limited_body(_upload_limit, "upload"),
    responses={
        200: {"model": DeployOut, "description": "The same content was deployed before"},
        413: {"description": "The upload is larger than the limit"},
    },
)


@router.get("/services/{name}")
def get_service(
    name: ServiceName, caller: Caller, store: StoreDep, project: ServiceProject = None
) -> ServiceOut:
    """A service of the key's project (or of ``project``), by name."""
    return _service_out(store, visible_service(store, caller, name, "viewer", project))


@router.patch("/services/{name}")
def update_service(
    name: ServiceName,
    body: ServicePatch,
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    project: ServiceProject = None,
) -> ServiceOut:
    """Activate or deactivate a service (developer); running routers see it within a second."""
    record = visible_service(store, caller, name, "developer", project)
    if body.active is not None and body.active != record.active:
        record = platform.activate(record.id, body.active)
    return _service_out(store, record)


@router.get("/services/{name}/versions")
def list_versions(
    name: ServiceName,
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    project: ServiceProject = None,
) -> Page[VersionOut]:
    """The service's versions, oldest first."""
    service = visible_service(store, caller, name, "viewer", project)
    return paging.page([_version_out(v, name) for v in store.list_versions(service.id)])


@router.get("/services/{name}/versions/{version}")
def get_version(
    name: ServiceName,
    version: VersionRef,
    caller: Caller,
    store: StoreDep,
    project: ServiceProject = None,
) -> VersionOut:
    """One version, by id, label or content-hash prefix."""
    service = visible_service(store, caller, name, "viewer", project)
    return _version_out(store.resolve_version(service.id, version), name)


@router.get("/services/{name}/docs")
def get_docs(
    name: ServiceName,
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    version: Annotated[
        str | None,
        Query(pattern=VERSION_PATTERN, description="Version id, label or hash; default latest"),
    ] = None,
    project: ServiceProject = None,
) -> DocsOut:
    """A version's ``README.md`` and ``parameters.json`` (null where the package has none)."""
    service = visible_service(store, caller, name, "viewer", project)
    if version is not None:
        record = store.resolve_version(service.id, version)
    else:
        versions = store.list_versions(service.id)
        if not versions:
            raise not_found(f"a version of service {name!r}")
        record = versions[-1]
    package = _package(platform, record)
    parameters = None
    if "parameters.json" in package.files:
        raw = json.loads(package.files["parameters.json"].decode("utf-8-sig"))
        parameters = raw["fields"] if isinstance(raw, dict) else raw  # {"fields": [...]} form
    return DocsOut(service=name, version=record.id, readme=package.readme, parameters=parameters)


def _package(platform: Platform, version: VersionRecord) -> Any:
    if platform.packages is None:
        raise ApiError(503, "the platform is not started")
    limits = ArchiveLimits.from_settings(platform.settings)
    data = platform.packages.get(version.content_hash)
    return load_package_bytes(data, version.id, limits=limits)


# -- git repositories -------------------------------------------------------------------------


def _visible_repository(
    store: StateStore, caller: Principal, repository_id: str, role: Role
) -> RepositoryRecord:
    try:
        record = store.get_repository(repository_id)
    except NotFound:
        raise not_found(f"repository {repository_id!r}") from None
    require_project(caller, record.project, role, f"repository {repository_id!r}")
    return record


def _allow_local(platform: Platform) -> bool:
    return bool(platform.settings.api_allow_local_repos)


@router.get("/repositories")
def list_repositories(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    project: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, description="Only this project's (platform-wide key)"),
    ] = None,
) -> Page[RepositoryOut]:
    """The git repositories registered in the projects this key can see."""
    records = store.list_repositories(caller.scope(project))
    return paging.page([_repository_out(r) for r in records])


@router.post("/repositories", status_code=status.HTTP_201_CREATED)
def register_repository(
    body: RepositoryIn, caller: Caller, platform: PlatformDep, store: StoreDep
) -> RepositoryOut:
    """Register a git repository (developer); ``POST .../sync`` deploys its services."""
    problems = []
    url_problem = gitsync.url_problem(
        body.url, allow_local=_allow_local(platform)
    ) or gitsync.address_problem(body.url, platform.settings.git_allowed_hosts, resolve=None)
    if url_problem:
        problems.append({"location": "body.url", "message": url_problem})
    ref_problem = gitsync.ref_problem(body.ref)
    if ref_problem:
        problems.append({"location": "body.ref", "message": ref_problem})
    if problems:
        raise invalid("the request is invalid", problems)
    project = _target_project(store, caller, body.project)
    return _repository_out(store.add_repository(project, body.url, body.ref))


@router.get("/repositories/{repository_id}")
def get_repository(repository_id: RepositoryId, caller: Caller, store: StoreDep) -> RepositoryOut:
    return _repository_out(_visible_repository(store, caller, repository_id, "viewer"))


@router.delete("/repositories/{repository_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_repository(repository_id: RepositoryId, caller: Caller, store: StoreDep) -> None:
    """Forget a repository (developer); the services it deployed stay."""
    _visible_repository(store, caller, repository_id, "developer")
    store.remove_repository(repository_id)


@router.post("/repositories/{repository_id}/sync")
def sync_repository(
    repository_id: RepositoryId, caller: Caller, platform: PlatformDep, store: StoreDep
) -> SyncOut:
    """Fetch the repository at its ref and deploy each top-level folder with a manifest.json
    (developer). Unchanged services keep their version; a folder that fails is listed with its
    problems and does not stop the others. 422 if the repository cannot be fetched."""
    repository = _visible_repository(store, caller, repository_id, "developer")

    def deploy(folder: Path, commit: str) -> gitsync.Deployed:
        done = platform.deploy(
            folder,
            label=f"git-{commit[:12]}",
            deployed_by=caller.key_id,
            project=repository.project,
        )
        return gitsync.Deployed(done.service.name, done.version.id, done.created)

    try:
        result = gitsync.sync(
            repository.url,
            repository.ref,
            deploy,
            allow_local=_allow_local(platform),
            allowed_hosts=platform.settings.git_allowed_hosts,
        )
    except (gitsync.GitError, ValueError) as exc:
        raise invalid(f"cannot sync repository {repository_id!r}", [str(exc)]) from None
    updated = store.mark_synced(repository_id, result.commit, time.time())
    return SyncOut(
        repository=_repository_out(updated),
        commit=result.commit,
        results=[
            FolderOut(
                folder=r.folder,
                service=r.service,
                version=r.version,
                created=r.created,
                problems=list(r.problems),
            )
            for r in result.folders
        ],
    )
