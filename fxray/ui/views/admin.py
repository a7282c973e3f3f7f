"""13. Admin: projects (a platform-wide admin lists and creates them), a project's API keys
(create with a role, the secret shown once; revoke) and what each role may do. Project
admins manage their project's keys; platform-wide admins every project's and the platform-wide
keys. Anyone else is refused (403), on the page and on every POST.

Every action calls the API's own route function, so it checks and answers as the API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from fxray.api.auth import require_project
from fxray.api.errors import invalid
from fxray.api.routes import projects as api_projects
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.projects import KeyIn, ProjectIn
from fxray.store import StateStore
from fxray.ui.deps import StoreDep, UIUser, User, page_context
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import page, query

router = ui_router()
NAV = NavEntry("Admin", "/admin", 130, role="admin")

ROLES = (
    ("viewer", "sees the project's services, runs, logs, events, schedules and assets"),
    (
        "developer",
        "a viewer who also deploys and changes services, starts, cancels and "
        "replays runs, edits schedules and uploads assets",
    ),
    ("admin", "a developer who also manages the project's API keys"),
)
ProjectChoice = Annotated[str, Form(max_length=64, pattern=f"^$|{NAME_PATTERN}")]
KEY_ID = r"^[A-Za-z0-9_-]{1,64}$"


def _target(user: UIUser, project: str | None) -> str | None:
    """The project whose keys are managed (None: the platform-wide keys); 403 without the
    admin role there (404 for another project, as the API)."""
    if user.platform_admin:
        return project or None
    own = user.principal.project
    require_project(user.principal, project or own, "admin")
    return project or own


def _context(user: UIUser, store: StateStore, project: str | None) -> dict[str, Any]:
    caller = user.principal
    if project is None:
        keys = api_projects._platform_keys(store)
    else:
        store.get_project(project)  # NotFound answers 404
        keys = store.list_api_keys(project)
    projects = [p for p in store.list_projects() if caller.can_see(p.name)]
    return {
        **page_context(user),
        "project": project,
        "projects": projects,
        "keys": sorted(keys, key=lambda k: (k.revoked, -k.created_at)),
        "roles": ROLES,
        "role_names": [name for name, _ in ROLES] if project is not None else ["admin"],
        "new_key": None,
        "new_token": None,
    }


@router.get("/admin")
def admin_page(
    request: Request,
    user: User,
    store: StoreDep,
    project: Annotated[str | None, Query(pattern=f"^$|{NAME_PATTERN}")] = None,
    revoked: Annotated[str | None, Query(pattern=KEY_ID)] = None,
) -> Response:
    target = _target(user, project)
    context = _context(user, store, target)
    context["revoked"] = revoked
    return page(request, "admin/index.html", context)


@router.post("/admin/projects")
def create_project(
    user: User,
    store: StoreDep,
    name: Annotated[str, Form(max_length=64)],
    description: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Create a project (platform-wide admin)."""
    try:
        body = ProjectIn(name=name.strip(), description=description)
    except ValidationError:
        raise invalid(
            "the project name is invalid", ["name: lower-case letters, digits, . _ - only"]
        ) from None
    created = api_projects.create_project(body=body, caller=user.principal, store=store)
    return RedirectResponse("/admin" + query(project=created.name), status_code=303)


@router.post("/admin/keys")
def create_key(
    request: Request,
    user: User,
    store: StoreDep,
    name: Annotated[str, Form(min_length=1, max_length=128)],
    role: Annotated[str, Form(pattern="^(viewer|developer|admin)$")],
    project: ProjectChoice = "",
) -> Response:
    """Create a key; the answer is the only page that shows its secret (never stored)."""
    target = _target(user, project)
    body = KeyIn(name=name.strip() or name, role=role)  # type: ignore[arg-type]
    if target is None:
        made = api_projects.create_platform_key(body=body, caller=user.principal, store=store)
    else:
        made = api_projects.create_key(
            project=target, body=body, caller=user.principal, store=store
        )
    context = _context(user, store, target)
    context.update(new_key=made.key, new_token=made.token, revoked=None)
    return page(request, "admin/index.html", context, status=201)


@router.post("/admin/keys/revoke")
def revoke_key(
    user: User,
    store: StoreDep,
    key_id: Annotated[str, Form(pattern=KEY_ID)],
    project: ProjectChoice = "",
) -> Response:
    """Revoke a key: requests with it, and the UI sessions it started, stop at once."""
    target = _target(user, project)
    if target is None:
        api_projects.revoke_platform_key(key_id=key_id, caller=user.principal, store=store)
    else:
        api_projects.revoke_key(project=target, key_id=key_id, caller=user.principal, store=store)
    return RedirectResponse("/admin" + query(project=target, revoked=key_id), status_code=303)
