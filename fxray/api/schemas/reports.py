"""Response models of the A/B report: run counts, error rate and durations per version."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fxray.api.schemas.common import VersionRef


class VersionReport(BaseModel):
    version: VersionRef
    runs: int
    succeeded: int
    failed: int = Field(description="Failed or timed out")
    timed_out: int
    cancelled: int
    active: int = Field(description="Pending or running")
    shadow_runs: int
    error_rate: float | None = Field(description="failed / (succeeded + failed)")
    duration_p50_ms: float | None
    duration_p95_ms: float | None


class ReportOut(BaseModel):
    service: str
    since: float
    until: float
    versions: list[VersionReport]
