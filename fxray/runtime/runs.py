"""Run records: what a run is asked to do, and what came of it.

These are plain dataclasses so they cross Ray process boundaries cheaply.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

LogLine = tuple[float, str, str, str]  # (unix time, level, step, message)


def storable_text(text: str | None) -> str | None:
    """``text`` without NUL characters, which PostgreSQL text columns cannot hold."""
    if text and "\x00" in text:
        return text.replace("\x00", "\ufffd")
    return text


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}
)


@dataclass(slots=True)
class RunSpec:
    """One run as the router hands it to an executor."""

    run_id: str
    service: str
    version_id: str
    package_hash: str
    steps: list[str]
    event: dict[str, Any]  # the triggering CloudEvent as a JSON-able dict (structured form)
    correlation_id: str
    trigger_id: str | None = None
    priority: int = 5
    timeout_s: float = 300.0
    attempt: int = 1
    shadow: bool = False
    created_at: float = 0.0  # when the router created the run (0: unknown)
    service_name: str = ""  # the name in its project (``service`` is the platform-wide id)


@dataclass(slots=True)
class StepResult:
    name: str
    status: RunStatus
    started_at: float
    finished_at: float
    error: str | None = None

    @property
    def duration_ms(self) -> float:
        return (self.finished_at - self.started_at) * 1000.0


@dataclass(slots=True)
class RunResult:
    """What an executor reports for one run attempt."""

    run_id: str
    status: RunStatus
    started_at: float
    finished_at: float
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None
    logs: list[LogLine] = field(default_factory=list)
    result: Any = None
    emitted: list[dict[str, Any]] = field(default_factory=list)  # CloudEvents, structured dicts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mark_timed_out(self, timeout_s: float) -> RunResult:
        """This result as that of a run its timeout stopped (and its last step, if the stop
        ended it as cancelled)."""
        self.status = RunStatus.TIMED_OUT
        self.error = f"timed out after {timeout_s:g}s"
        if self.steps and self.steps[-1].status is RunStatus.CANCELLED:
            self.steps[-1].status = RunStatus.TIMED_OUT
            self.steps[-1].error = self.error
        return self
