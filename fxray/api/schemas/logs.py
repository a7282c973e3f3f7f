"""Response models of run logs: a run's log lines and log search hits."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogLineOut(BaseModel):
    index: int = Field(description="The line's position in the run's log")
    time: float
    level: str
    step: str
    message: str


class LogHitOut(LogLineOut):
    run_id: str
    service: str
    version: str = Field(description="The version's id")
    correlation_id: str
