"""/api/v1 routes about the installation itself: where things run (``GET /status``) and a
version's scaling override (``PUT /services/{name}/versions/{version}/scaling``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from fxray.actors.scaling import POLICY_FIELDS, SCALING_KEY
from fxray.api.auth import Caller, require_platform_admin, visible_service
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.routes._common import ServiceName, ServiceProject
from fxray.api.schemas.status import ScalingIn, ScalingOut, StatusOut
from fxray.store import VersionRecord

router = APIRouter(tags=["platform"])

VersionRef = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9@._+-]{1,200}$", description="Version id, label or hash")
]


@router.get("/status")
async def platform_status(caller: Caller, platform: PlatformDep) -> StatusOut:
    """What runs where (platform-wide admin): the Ray nodes, the routers and their nodes, and
    per version and router the executors, their nodes, the scaling bounds, the backlog and the
    last scaling decision."""
    require_platform_admin(caller)
    return StatusOut.model_validate(await run_in_threadpool(platform.status))


@router.put("/services/{name}/versions/{version}/scaling")
def set_scaling(
    name: ServiceName,
    version: VersionRef,
    body: ScalingIn,
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    project: ServiceProject = None,
) -> ScalingOut:
    """Override a version's min/max executors and target backlog (developer); the fields sent
    replace the override's, null drops one; the routers apply it within a second."""
    service = visible_service(store, caller, name, "developer", project)
    target = store.resolve_version(service.id, version)
    record = platform.scale(service.id, target.id, **body.model_dump(exclude_unset=True))
    return _scaling_out(record)


def _scaling_out(record: VersionRecord) -> ScalingOut:
    manifest = {k: record.manifest[k] for k in POLICY_FIELDS if record.manifest.get(k) is not None}
    return ScalingOut(
        version=record.id, manifest=manifest, override=record.manifest.get(SCALING_KEY) or {}
    )
