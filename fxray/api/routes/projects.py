"""/api/v1 routes: projects and their API keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from fxray.api.auth import Caller, require_platform_admin, require_project
from fxray.api.deps import StoreDep
from fxray.api.errors import ApiError, not_found
from fxray.api.pagination import Page, Paging
from fxray.api.schemas.projects import KeyIn, KeyOut, NewKeyOut, ProjectIn, ProjectOut

router = APIRouter(tags=["projects"])


def _project(record: Any) -> ProjectOut:
    return ProjectOut(
        name=record.name, description=record.description, created_at=record.created_at
    )


def _key(record: Any) -> KeyOut:
    return KeyOut(
        id=record.id,
        name=record.name,
        project=record.project,
        role=record.role,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        revoked=record.revoked,
    )


def _platform_keys(store: Any) -> list[Any]:
    return [k for k in store.list_api_keys() if k.project is None]


@router.get("/projects")
def list_projects(caller: Caller, store: StoreDep, paging: Paging) -> Page[ProjectOut]:
    """The projects this key can see (all of them for a platform-wide admin)."""
    projects = [p for p in store.list_projects() if caller.can_see(p.name)]
    return paging.page([_project(p) for p in projects])


@router.post("/projects", status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectIn, caller: Caller, store: StoreDep) -> ProjectOut:
    """Create a project (platform-wide admin)."""
    require_platform_admin(caller)
    return _project(store.create_project(body.name, body.description))


@router.get("/projects/{project}")
def get_project(project: str, caller: Caller, store: StoreDep) -> ProjectOut:
    require_project(caller, project, "viewer")
    return _project(store.get_project(project))


@router.delete("/projects/{project}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project: str, caller: Caller, store: StoreDep) -> None:
    """Delete an empty project (409 while it has services); its keys are revoked."""
    require_platform_admin(caller)
    store.get_project(project)
    store.delete_project(project)


@router.get("/projects/{project}/keys")
def list_keys(
    project: str,
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    revoked: Annotated[bool | None, Query(description="Filter by revoked")] = None,
) -> Page[KeyOut]:
    """The project's API keys (project admin); secrets are never shown again."""
    require_project(caller, project, "admin")
    store.get_project(project)
    keys = [k for k in store.list_api_keys(project) if revoked is None or k.revoked == revoked]
    return paging.page([_key(k) for k in keys])


@router.post("/projects/{project}/keys", status_code=status.HTTP_201_CREATED)
def create_key(project: str, body: KeyIn, caller: Caller, store: StoreDep) -> NewKeyOut:
    """Create a key with a role in the project (project admin); the token is shown once."""
    require_project(caller, project, "admin")
    store.get_project(project)
    record, token = store.create_api_key(body.name, body.role, project)
    return NewKeyOut(key=_key(record), token=token)


@router.delete("/projects/{project}/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(project: str, key_id: str, caller: Caller, store: StoreDep) -> None:
    require_project(caller, project, "admin")
    if not any(k.id == key_id for k in store.list_api_keys(project)):
        raise not_found(f"key {key_id!r}")
    store.revoke_api_key(key_id)


@router.get("/keys")
def list_platform_keys(caller: Caller, store: StoreDep, paging: Paging) -> Page[KeyOut]:
    """Platform-wide keys (platform-wide admin)."""
    require_platform_admin(caller)
    return paging.page([_key(k) for k in _platform_keys(store)])


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def create_platform_key(body: KeyIn, caller: Caller, store: StoreDep) -> NewKeyOut:
    """A platform-wide key; only the admin role makes sense without a project."""
    require_platform_admin(caller)
    if body.role != "admin":
        raise ApiError(422, "a key without a project must have the admin role")
    record, token = store.create_api_key(body.name, body.role, None)
    return NewKeyOut(key=_key(record), token=token)


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_platform_key(key_id: str, caller: Caller, store: StoreDep) -> None:
    require_platform_admin(caller)
    if key_id == caller.key_id:
        raise ApiError(409, "a key cannot revoke itself")
    if not any(k.id == key_id for k in _platform_keys(store)):
        raise not_found(f"key {key_id!r}")
    store.revoke_api_key(key_id)
