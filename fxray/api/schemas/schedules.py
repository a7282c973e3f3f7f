"""Request and response models of schedules (cron ticks that run a service with parameters)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from fxray.events.schedules import MAX_CRON_LENGTH

CRON_HELP = (
    "A cron expression (UTC): 5 fields (minute hour day-of-month month day-of-week), "
    "6 with seconds last (`* * * * * */10`), or an alias such as `@hourly`"
)
Params = Annotated[
    dict[str, Any],
    Field(description="Run parameters, validated against the service's parameters.json"),
]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=MAX_CRON_LENGTH, description=CRON_HELP)
    params: Params = Field(default_factory=dict)
    active: bool = True


class SchedulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description=CRON_HELP + " (not for a manifest's schedule: change the manifest)",
    )
    params: Params | None = None
    active: bool | None = None


class ScheduleOut(BaseModel):
    id: str
    service: str
    project: str
    cron: str
    params: dict[str, Any]
    origin: str = Field(description="`manifest` (the service's manifest) or `api`")
    active: bool
    next_fire_at: float = Field(description="Unix time of the next tick")
    next_fire_time: str = Field(description="The next tick, ISO 8601 UTC")
    skip_next: bool = Field(description="The next tick will be consumed without a run")
    last_fired_at: float | None
    created_at: float
    updated_at: float


class NextTicksOut(BaseModel):
    schedule_id: str
    active: bool
    times: list[str] = Field(
        description="The next fire times (ISO 8601 UTC) that will run; none while paused"
    )
    skipped: str | None = Field(description="The next tick, if it is to be skipped")


class SkipOut(BaseModel):
    schedule_id: str
    skipped: str = Field(description="The tick that will be skipped (ISO 8601 UTC)")
    skipped_at: float = Field(description="The same, as Unix time")
    next: str = Field(description="The tick that will run after it (ISO 8601 UTC)")
