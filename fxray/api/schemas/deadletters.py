"""Models of the dead-letter routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

POSITION_PATTERN = r"^[0-9]{1,9}:[0-9]{1,19}$"


class MarkOut(BaseModel):
    """How a letter was handled: by whom (an API key id, or ``cli``) and when."""

    action: Literal["requeued", "discarded"]
    by: str | None = None
    at: float | None = None


class DeadLetterOut(BaseModel):
    position: str = Field(description="partition:offset on the dead-letter topic")
    reason: str
    run_id: str | None
    service: str | None = Field(description="The failed run's service id, if any")
    project: str | None = Field(
        description="Its project; None for a record that was never a valid event"
    )
    source: str = Field(description="topic:partition:offset it came from")
    time: float | None
    bytes: int
    mark: MarkOut | None = Field(description="None while the letter is open")


class PositionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positions: list[str] = Field(
        min_length=1,
        max_length=500,
        description="partition:offset of each letter",
        json_schema_extra={"items": {"pattern": POSITION_PATTERN}},
    )


class OutcomeOut(BaseModel):
    position: str
    ok: bool
    text: str = Field(description="What it became, or why it was refused")


class OutcomesOut(BaseModel):
    action: Literal["requeue", "discard"]
    results: list[OutcomeOut]
