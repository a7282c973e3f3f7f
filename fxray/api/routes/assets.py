"""/api/v1 routes: a project's assets (files stored on the platform).

Uploading an asset (developer) stores it and publishes a ``fxray.asset.uploaded`` event, so the
services linked to that type run on it; viewers list and download. Asset paths are relative,
``/``-separated, at most 512 characters, without ``..`` segments or control characters. Assets
are stored as sent (a zip is not unpacked), streamed in chunks, at most ``asset_max_bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from fxray.api.auth import Caller, Principal, Role, require_project
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid, not_found
from fxray.api.pagination import Page, Paging
from fxray.api.schemas.assets import AssetOut, UploadOut
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.uploads import limited_body, settings_of, too_large
from fxray.packages.assets import (
    MAX_PATH_LENGTH,
    AssetInfo,
    AssetNotFound,
    InvalidAssetPath,
    path_problems,
    validate_prefix,
)
from fxray.store import StateStore

router = APIRouter(tags=["assets"])

CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+( *;[ -~]*)?$"
_CONTENT_TYPE_RE = re.compile(CONTENT_TYPE_PATTERN)

ProjectName = Annotated[str, PathParam(pattern=NAME_PATTERN, description="Project name")]
AssetPath = Annotated[str, PathParam(description="The asset's path, e.g. in/orders.csv")]


def _asset_limit(request: Request) -> int:
    """Largest file accepted (``asset_max_bytes``); the request body may be a little larger
    (multipart framing)."""
    return settings_of(request).asset_max_bytes


def _asset_out(info: AssetInfo) -> AssetOut:
    return AssetOut(
        project=info.project,
        path=info.path,
        size=info.size,
        sha256=info.sha256,
        content_type=info.content_type,
        etag=info.etag,
        uploaded_at=info.uploaded_at,
        url=info.url,
    )


# -- access and errors ------------------------------------------------------------------------


def _project(store: StateStore, caller: Principal, project: str, role: Role) -> None:
    """404 unless the key sees the project and it exists; 403 without ``role``."""
    require_project(caller, project, role)
    store.get_project(project)  # NotFound answers 404


def _checked_path(path: str, location: str) -> str:
    problems = path_problems(path)
    if problems:
        listed = [{"location": location, "message": p} for p in problems]
        raise invalid("the asset path is invalid", listed)
    return path


@contextmanager
def _store_errors() -> Iterator[None]:
    """Asset store failures as API errors: 404, 422, or 503 when the store is unreachable."""
    try:
        yield
    except AssetNotFound as exc:
        raise not_found(f"asset {exc.path!r}") from None
    except InvalidAssetPath as exc:
        raise invalid("the asset path is invalid", list(exc.problems)) from None
    except (S3Error, Urllib3Error) as exc:
        raise ApiError(503, f"the asset store is unavailable ({type(exc).__name__})") from None


# -- routes -----------------------------------------------------------------------------------


def upload_asset(
    project: ProjectName,
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    file: Annotated[UploadFile, File(description="The file")],
    path: Annotated[
        str,
        Form(
            min_length=1,
            max_length=MAX_PATH_LENGTH,
            description="Where to store it, e.g. in/orders.csv (relative, no '..')",
        ),
    ],
    content_type: Annotated[
        str | None,
        Form(
            max_length=255,
            pattern=CONTENT_TYPE_PATTERN,
            description="Media type; default the file part's, else guessed from the path",
        ),
    ] = None,
) -> UploadOut:
    """Store a file as an asset (developer) and publish ``fxray.asset.uploaded``.

    An existing asset at that path is replaced. The answer carries the event's id, which the
    runs it causes carry as their event id.
    """
    _project(store, caller, project, "developer")
    _checked_path(path, "body.path")
    kind = content_type
    if kind is None and file.content_type and _CONTENT_TYPE_RE.match(file.content_type):
        kind = file.content_type if file.content_type != "application/octet-stream" else None
    most = platform.settings.asset_max_bytes
    size = file.size  # the bytes the form parser really received
    if size is not None and size > most:
        raise too_large(most, "file")
    with _store_errors():
        info = platform.upload_asset(project, path, file.file, kind)
    return UploadOut(**_asset_out(info).model_dump(), event_id=info.event_id or "")


router.add_api_route(
    "/projects/{project}/assets",
    upload_asset,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    route_class_override=limited_body(_asset_limit, "file"),
    responses={413: {"description": "The file is larger than the limit"}},
)


@router.get("/projects/{project}/assets")
def list_assets(
    project: ProjectName,
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    paging: Paging,
    prefix: Annotated[
        str,
        Query(max_length=MAX_PATH_LENGTH, description="Only paths starting with this"),
    ] = "",
) -> Page[AssetOut]:
    """The project's assets, by path (viewer)."""
    _project(store, caller, project, "viewer")
    with _store_errors():
        validate_prefix(project, prefix)
        assets = platform.assets.list(project, prefix)
    return paging.page([_asset_out(a) for a in assets])


@router.get(
    "/projects/{project}/assets/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
def download_asset(
    project: ProjectName, path: AssetPath, caller: Caller, platform: PlatformDep, store: StoreDep
) -> StreamingResponse:
    """The file (viewer), streamed, as an attachment."""
    _project(store, caller, project, "viewer")
    _checked_path(path, "path.path")
    with _store_errors():
        info, chunks = platform.assets.open(project, path)
    name = path.rsplit("/", 1)[-1]
    headers = {
        "Content-Length": str(info.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "X-Checksum-Sha256": info.sha256,
    }
    if info.etag:
        headers["ETag"] = f'"{info.etag}"'
    return StreamingResponse(chunks, media_type=info.content_type, headers=headers)


@router.delete("/projects/{project}/assets/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
def delete_asset(
    project: ProjectName, path: AssetPath, caller: Caller, platform: PlatformDep, store: StoreDep
) -> None:
    """Remove an asset (developer)."""
    _project(store, caller, project, "developer")
    _checked_path(path, "path.path")
    with _store_errors():
        deleted = platform.assets.delete(project, path)
    if not deleted:
        raise not_found(f"asset {path!r}")
