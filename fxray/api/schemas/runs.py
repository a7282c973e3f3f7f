"""Request and response models of runs: manual runs, listing and detail, cancel, priority and
replay."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fxray.api.schemas.common import NO_NUL, VersionRef
from fxray.api.schemas.logs import LogLineOut
from fxray.runtime.runs import RunStatus

VersionRefIn = Annotated[
    str, Field(min_length=1, max_length=160, pattern=NO_NUL, description="A version id or label")
]


class ManualRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters, checked against the version's parameters.json",
    )
    version: VersionRefIn | None = Field(default=None, description="Default: the latest version")
    priority: int | None = Field(
        default=None, ge=1, le=10, description="1 highest .. 10 lowest; default: the service's"
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionRefIn | None = Field(default=None, description="Default: the run's version")


class PriorityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=1, le=10, description="1 highest .. 10 lowest")


class RunStarted(BaseModel):
    event_id: str = Field(description="The event published to start the run")
    run_id: str = Field(description="The run's id (it appears once the router has the event)")


class CancelOut(BaseModel):
    status: Literal["cancelled", "cancelling", "not_active"] = Field(
        description="cancelled (it was queued), cancelling (it is running: stopped shortly), "
        "not_active (it already finished, or no router has it)"
    )


class StepOut(BaseModel):
    name: str
    status: str
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None
    error: str | None


class RunOut(BaseModel):
    id: str
    service: str = Field(description="The service's name in its project")
    project: str | None
    version: VersionRef
    trigger_id: str | None = Field(description="A trigger's id, or manual / schedule / replay")
    event_id: str
    event_type: str
    correlation_id: str
    status: RunStatus
    priority: int
    attempt: int
    shadow: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None
    error: str | None


class RunDetail(RunOut):
    trigger_event: dict[str, Any] | None = Field(description="The CloudEvent that started it")
    steps: list[StepOut]
    result: Any = None
    logs: list[LogLineOut]
