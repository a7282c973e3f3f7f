"""11. Assets: a project's stored files (filter by path prefix), upload (developer; it publishes
``fxray.asset.uploaded`` as the API's upload does), download and delete.

Upload, download and delete call the API's own route functions, so they check and answer as
the API does (paths, sizes, roles, another project's asset 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from fxray.api.errors import invalid
from fxray.api.routes import assets as api_assets
from fxray.api.schemas.common import NAME_PATTERN
from fxray.packages.assets import MAX_PATH_LENGTH, validate_prefix
from fxray.ui.deps import PlatformDep, StoreDep, User, page_context, scope
from fxray.ui.nav import NavEntry
from fxray.ui.routing import body_limit, ui_router
from fxray.ui.templating import page, query

router = ui_router()
NAV = NavEntry("Assets", "/assets", 110)

ProjectName = Annotated[str, PathParam(pattern=NAME_PATTERN, description="The project")]
ProjectForm = Annotated[str, Form(min_length=1, max_length=64, pattern=NAME_PATTERN)]


def _upload_limit(request: Request) -> int:
    return request.app.state.platform.settings.asset_max_bytes


@router.get("/assets")
def assets_page(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Annotated[str | None, Query(pattern=f"^$|{NAME_PATTERN}")] = None,
    prefix: Annotated[str, Query(max_length=MAX_PATH_LENGTH)] = "",
    uploaded: Annotated[str | None, Query(max_length=MAX_PATH_LENGTH)] = None,
    deleted: Annotated[str | None, Query(max_length=MAX_PATH_LENGTH)] = None,
) -> Response:
    """The chosen project's assets (a platform-wide admin picks the project)."""
    shown = scope(user, project)
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    assets = []
    if shown is not None:
        api_assets._project(store, user.principal, shown, "viewer")
        with api_assets._store_errors():
            validate_prefix(shown, prefix)
            assets = platform.assets.list(shown, prefix)
    return page(
        request,
        "assets/list.html",
        {
            **page_context(user),
            "project": shown,
            "projects": projects,
            "prefix": prefix,
            "assets": assets,
            "can_change": shown is not None and user.can("developer", shown),
            "uploaded": uploaded or None,
            "deleted": deleted or None,
            "most_bytes": platform.settings.asset_max_bytes,
        },
    )


@router.post("/assets/upload")
@body_limit(_upload_limit)
def upload(
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: ProjectForm,
    file: Annotated[UploadFile, File()],
    path: Annotated[str, Form(max_length=MAX_PATH_LENGTH)] = "",
) -> Response:
    """Store the file at ``path`` (default: the file's name) and publish its event."""
    target = path.strip() or (file.filename or "").rsplit("/", 1)[-1]
    if not target:
        raise invalid("the asset needs a path", ["path: give one, or upload a named file"])
    api_assets.upload_asset(
        project=project,
        caller=user.principal,
        platform=platform,
        store=store,
        file=file,
        path=target,
        content_type=None,
    )
    return RedirectResponse("/assets" + query(project=project, uploaded=target), status_code=303)


@router.get("/assets/file/{project}/{path:path}")
def download(
    project: ProjectName, path: str, user: User, store: StoreDep, platform: PlatformDep
) -> Response:
    """The file as an attachment (the API's download: streamed, never shown inline)."""
    return api_assets.download_asset(
        project=project, path=path, caller=user.principal, platform=platform, store=store
    )


@router.post("/assets/delete")
def delete(
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: ProjectForm,
    path: Annotated[str, Form(min_length=1, max_length=MAX_PATH_LENGTH)],
) -> Response:
    """Remove an asset (developer)."""
    api_assets.delete_asset(
        project=project, path=path, caller=user.principal, platform=platform, store=store
    )
    return RedirectResponse("/assets" + query(project=project, deleted=path), status_code=303)
