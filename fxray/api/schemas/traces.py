"""Response models of traces: the causal graph of a flow's events and runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fxray.api.schemas.common import VersionRef
from fxray.runtime.runs import RunStatus


class TraceEvent(BaseModel):
    id: str
    type: str
    source: str
    time: str | None
    received_at: float
    parent_id: str | None = Field(description="The event that triggered the emitting run")
    run_id: str | None = Field(description="The run that emitted it")
    replay_of: str | None = Field(description="The run it replays")
    data: Any = None
    attributes: dict[str, Any] = Field(description="Every attribute but data")


class TraceRun(BaseModel):
    id: str
    service: str = Field(description="The service's name in its project")
    project: str | None = Field(default=None, description="The service's project")
    version: VersionRef
    trigger_id: str | None
    event_id: str
    status: RunStatus
    shadow: bool
    attempt: int
    parameters: Any = Field(default=None, description="The triggering event's data")
    result: Any = None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None


class TraceEdge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="An event id (triggered) or a run id")
    to: str
    kind: Literal["triggered", "emitted", "replayed"]


class TraceOut(BaseModel):
    correlation_id: str
    events: list[TraceEvent]
    runs: list[TraceRun]
    edges: list[TraceEdge]
