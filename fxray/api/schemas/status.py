"""Request and response models of the platform's status and of per-version scaling."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NodeOut(BaseModel):
    node_id: str
    address: str | None
    alive: bool
    resources: str = Field(description="What the node offers (CPU, GPU, memory, custom)")


class RouterOut(BaseModel):
    router: str
    node_id: str | None = Field(description="The Ray node the router runs on")
    restarted: bool = Field(description="Ray restarted it (its node or process had died)")
    active_runs: int
    queued: int


class ExecutorsOut(BaseModel):
    """One version's executors in one router, and the scaling decision behind their number."""

    router: str
    version_id: str
    actors: int
    busy: int
    min: int
    max: int
    desired: int = Field(description="What the policy wants for the backlog now")
    backlog: int = Field(description="Runs of the version queued or running in the router")
    decision: str = Field(description="The last scaling decision, in words")
    started: int
    retired: int
    nodes: dict[str, int] = Field(description="Executors per node (node id prefix)")
    resources: str = Field(description="What each executor asks for")
    isolated: bool | None = None


class StatusOut(BaseModel):
    cluster_mode: bool
    nodes: list[NodeOut]
    routers: list[RouterOut]
    executors: list[ExecutorsOut]


class ScalingIn(BaseModel):
    """An operator's override of a version's scaling; null drops a field's override."""

    model_config = ConfigDict(extra="forbid", strict=True)

    min_executors: int | None = Field(default=None, ge=0)
    max_executors: int | None = Field(default=None, ge=1)
    target_backlog: int | None = Field(default=None, ge=1)


class ScalingOut(BaseModel):
    version: str
    manifest: dict[str, int] = Field(description="The manifest's own scaling fields")
    override: dict[str, int] = Field(description="The operator's override, applied over them")
