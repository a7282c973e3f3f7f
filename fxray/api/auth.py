"""API keys and roles.

Every endpoint but ``/api/v1/health`` needs a key, sent as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``. A key belongs to one project with a role, or to no project (a
platform-wide admin key):

* ``viewer`` reads the project's services, triggers, runs, logs, catalog and traces;
* ``developer`` also deploys, links, sends events, runs, cancels and replays in the project;
* ``admin`` also manages the project's keys and webhooks; a platform-wide admin manages
  projects and everything in them.

A key never reaches another project's data: lists are filtered to the key's project, and a
resource of another project answers 404, as if it did not exist. Services are named within
their project (two projects may each have an ``orders``): a project key names its own
project's, a platform-wide key adds ``project`` where the name alone is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from fxray.api.errors import ApiError, invalid, not_found
from fxray.store import NotFound, ServiceRecord, StateStore

Role = Literal["viewer", "developer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "developer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

_bearer = HTTPBearer(auto_error=False, description="An fxray API key")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An fxray API key")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its project (None: platform-wide) and its role."""

    key_id: str
    project: str | None
    role: Role

    @property
    def platform_admin(self) -> bool:
        return self.project is None and self.role == "admin"

    def allows(self, role: Role, project: str | None) -> bool:
        """May this key act with ``role`` on ``project`` (None: platform-level)?"""
        if self.platform_admin:
            return True
        if project is None or project != self.project:
            return False
        return _RANK[self.role] >= _RANK[role]

    def can_see(self, project: str) -> bool:
        return self.platform_admin or self.project == project

    def scope(self, requested: str | None = None) -> str | None:
        """The project a list is filtered to: the key's own, or what a platform admin asks."""
        if self.project is None:
            return requested
        if requested is not None and requested != self.project:
            raise not_found(f"project {requested!r}")
        return self.project


def _token(request: Request, bearer: HTTPAuthorizationCredentials | None, key: str | None) -> str:
    token = key or (bearer.credentials if bearer else None)
    if not token:
        raise ApiError(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)")
    return token


def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key: Annotated[str | None, Depends(_header)],
) -> Principal:
    token = _token(request, bearer, key)
    record = request.app.state.store.authenticate(token)
    if record is None:
        raise ApiError(401, "the API key is not valid (unknown or revoked)")
    return Principal(record.id, record.project, record.role)


Caller = Annotated[Principal, Depends(current_principal)]


def require_project(
    principal: Principal, project: str | None, role: Role, what: str | None = None
) -> None:
    """404 if the key cannot see ``project``; 403 if it sees it but lacks ``role``.

    ``what`` names the resource the 404 is about (e.g. ``"run 'r1'"``), so an answer about a
    resource of another project does not name that project.
    """
    if not principal.platform_admin and (project is None or not principal.can_see(project)):
        raise not_found(what or f"project {project!r}")
    if not principal.allows(role, project):
        raise ApiError(403, f"this needs the {role} role in project {project!r}")


def visible_service(
    store: StateStore,
    principal: Principal,
    name: str,
    role: Role,
    project: str | None = None,
    where: str = "query.project",
) -> ServiceRecord:
    """The service ``name`` of the caller's project (a platform-wide key: of ``project``, or
    the one project that has a service of that name), if this key may act on it with ``role``.

    404 if the key's project (or ``project``) has no such service, or the key cannot see that
    project: another project's service of the same name is never reached nor named. 403 if the
    role is too low; 422 (at ``where``) if a platform-wide key leaves out ``project`` and
    several projects have a service of that name.
    """
    what = f"service {name!r}"
    scope = principal.scope(project)
    try:
        if scope is not None:
            service = store.find_service(scope, name)
        else:
            named = store.services_named(name) if principal.platform_admin else []
            if not named:
                raise NotFound(what)
            if len(named) > 1:
                projects = ", ".join(s.project for s in named)
                raise invalid(
                    f"several projects have a service named {name!r} ({projects}): name one",
                    [{"location": where, "message": "Field required"}],
                )
            (service,) = named
    except NotFound:
        raise not_found(what) from None
    require_project(principal, service.project, role, what)
    return service


def require_platform_admin(principal: Principal) -> None:
    if not principal.platform_admin:
        raise ApiError(403, "this needs a platform-wide admin key")
