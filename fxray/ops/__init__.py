"""Ops records: run lifecycle and log records that executors and routers publish to the ops
topics, and that the ops sink (:mod:`fxray.ops.sink`) writes to Elasticsearch.

Records are JSON objects keyed by run id (so one run's records stay in order on one partition).
Every record has a stable ``doc_id``: ``<run id>:log:<seq>`` for a log line and
``<run id>:<state>:<attempt>`` for a lifecycle record (``step_started.<i>`` / ``step_finished.<i>``
for the i-th step). A lifecycle record carries every field of the run known when it was made,
so the sink can index the run's summary document whole, versioned by :func:`lifecycle_rank`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fxray.bus import OutgoingRecord

if TYPE_CHECKING:
    from fxray.bus import EventBus
    from fxray.runtime.runs import LogLine, RunResult, RunSpec, StepResult
    from fxray.settings import Settings

LOG = "log"
RUN = "run"
QUEUED, STARTED, STEP_STARTED, STEP_FINISHED, FINISHED, FINAL = (
    "queued",
    "started",
    "step_started",
    "step_finished",
    "finished",
    "final",
)
ATTEMPT_SEQ = 1_000_000  # log seq = (attempt - 1) * ATTEMPT_SEQ + line number in the attempt
_FINISHED_RANK = 999_998
_FINAL_RANK = 999_999


@dataclass(frozen=True, slots=True)
class OpsConfig:
    """Where executors publish ops records (picklable: handed to executor actors)."""

    bus: EventBus
    runs_topic: str
    logs_topic: str
    flush_s: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings, bus: EventBus) -> OpsConfig | None:
        """The config when the ops sink is on, else None (nothing is published)."""
        if settings.ops_sink == "none":
            return None
        return cls(bus, settings.ops_runs_topic, settings.ops_logs_topic)


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds (an Elasticsearch ``date``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def day(ts: float) -> str:
    """The ``YYYY.MM.DD`` suffix of the daily index holding something of time ``ts``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y.%m.%d")


def lifecycle_rank(state: str, attempt: int, step_index: int = 0) -> int:
    """A run summary's external version: later states (and attempts) rank higher, so a record
    that arrives late never overwrites a newer state."""
    base = max(attempt, 1) * 1_000_000
    if state == QUEUED:
        return base
    if state == STARTED:
        return base + 1
    if state == STEP_STARTED:
        return base + 2 + 2 * step_index
    if state == STEP_FINISHED:
        return base + 3 + 2 * step_index
    if state == FINISHED:
        return base + _FINISHED_RANK
    return base + _FINAL_RANK


def run_fields(spec: RunSpec) -> dict[str, Any]:
    """The fields every lifecycle record of ``spec`` carries."""
    created = spec.created_at or time.time()
    return {
        "run_id": spec.run_id,
        "service": spec.service,
        "version": spec.version_id,
        "trigger_id": spec.trigger_id,
        "correlation_id": spec.correlation_id,
        "event_id": spec.event.get("id"),
        "event_type": spec.event.get("type"),
        "attempt": spec.attempt,
        "shadow": spec.shadow,
        "priority": spec.priority,
        "created_at": iso(created),
        "created_ts": created,
    }


def lifecycle(spec: RunSpec, state: str, *, step_index: int = 0, **fields: Any) -> dict[str, Any]:
    """A lifecycle record of ``spec`` in ``state`` with ``fields`` (timings, status, ...)."""
    suffix = f".{step_index}" if state in (STEP_STARTED, STEP_FINISHED) else ""
    now = time.time()
    return {
        "kind": RUN,
        "doc_id": f"{spec.run_id}:{state}{suffix}:{spec.attempt}",
        "state": state,
        "rank": lifecycle_rank(state, spec.attempt, step_index),
        "timestamp": iso(now),
        **run_fields(spec),
        **fields,
    }


def queued(spec: RunSpec, *, error: str | None = None) -> dict[str, Any]:
    """The ``queued`` record of ``spec``'s attempt (``error``: why the last one is retried)."""
    fields = {} if error is None else {"error": error}
    return lifecycle(spec, QUEUED, status="pending", **fields)


def step_dict(step: StepResult) -> dict[str, Any]:
    return {
        "name": step.name,
        "status": step.status.value,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "duration_ms": round(step.duration_ms, 3),
        "error": step.error,
    }


def finished(spec: RunSpec, result: RunResult, *, log_lines: int | None = None) -> dict[str, Any]:
    """The ``finished`` record of one attempt (its status may still be retried by the router)."""
    return lifecycle(spec, FINISHED, **_outcome(spec, result, log_lines))


def final(
    spec: RunSpec, result: RunResult, *, logs: list[Any] | None = None, with_result: bool = True
) -> dict[str, Any]:
    """The router's ``final`` record of a run: its last attempt's outcome, never retried.

    It carries what the run's database row holds besides the summary: the run's ``logs`` (as
    the router collected them) and the script's ``result``, unless left out (``logs=None``,
    ``with_result=False``) because the router writes them to the database itself.
    """
    fields = _outcome(spec, result, None)
    if logs is not None:
        fields["logs"] = logs
    if with_result:
        fields["result"] = result.result
    return lifecycle(spec, FINAL, final=True, **fields)


def _outcome(spec: RunSpec, result: RunResult, log_lines: int | None) -> dict[str, Any]:
    created = spec.created_at or result.started_at
    fields: dict[str, Any] = {
        "status": result.status.value,
        "error": result.error,
        "started_at": iso(result.started_at),
        "finished_at": iso(result.finished_at),
        "duration_ms": round((result.finished_at - result.started_at) * 1000.0, 3),
        "queue_ms": round(max(0.0, result.started_at - created) * 1000.0, 3),
        "steps": [step_dict(s) for s in result.steps],
    }
    if result.steps:
        fields["step"] = result.steps[-1].name
    if log_lines is not None:
        fields["log_lines"] = log_lines
        fields["last_seq"] = log_seq(spec.attempt, log_lines - 1) if log_lines else None
    return fields


def log_seq(attempt: int, number: int) -> int:
    return (max(attempt, 1) - 1) * ATTEMPT_SEQ + number


def log_record(spec: RunSpec, number: int, line: LogLine) -> dict[str, Any]:
    """The ops record of the ``number``-th log line of ``spec``'s attempt (already scrubbed)."""
    stamp, level, step, message = line
    seq = log_seq(spec.attempt, number)
    return {
        "kind": LOG,
        "doc_id": f"{spec.run_id}:{LOG}:{seq}",
        "timestamp": iso(stamp),
        "ts": stamp,
        "level": level,
        "message": message,
        "run_id": spec.run_id,
        "step": step,
        "service": spec.service,
        "version": spec.version_id,
        "correlation_id": spec.correlation_id,
        "attempt": spec.attempt,
        "seq": seq,
    }


_SUMMARY_FIELDS = {
    "service": "service",
    "version": "version_id",
    "trigger_id": "trigger_id",
    "event_id": "event_id",
    "event_type": "event_type",
    "correlation_id": "correlation_id",
    "priority": "priority",
    "attempt": "attempt",
    "shadow": "shadow",
    "status": "status",
    "error": "error",
    "logs": "logs",
    "result": "result",
    "rank": "rank",
}


def summary_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """The management database's run row (the fields it sets) from a lifecycle record; None
    for records that don't change the summary.

    ``queued`` makes or re-queues the run, ``started`` marks it running and ``final`` completes
    it. An attempt's ``finished`` record is left out: the router may still retry it, and a row
    that looked final would make a redelivered event's run count as done.
    """
    state = record.get("state")
    if state not in (QUEUED, STARTED, FINAL):
        return None
    row: dict[str, Any] = {"id": record["run_id"], "created_at": float(record["created_ts"])}
    for name, column in _SUMMARY_FIELDS.items():
        if name in record:
            row[column] = record[name]
    if "started_at" in record:
        row["started_at"] = _epoch(record["started_at"])
    if state == FINAL:
        row["finished_at"] = _epoch(record["finished_at"])
        row["steps"] = [
            {
                "name": s["name"],
                "status": s["status"],
                "started_at": _epoch(s["started_at"]),
                "finished_at": _epoch(s["finished_at"]),
                "error": s.get("error"),
            }
            for s in record.get("steps", [])
        ]
    return row


MAX_TS = 253_402_300_799.0
"""The last second of year 9999: the latest time a daily index (or a datetime) can name."""
_STATES = frozenset({QUEUED, STARTED, STEP_STARTED, STEP_FINISHED, FINISHED, FINAL})


def record_problem(record: Any) -> str | None:
    """Why ``record`` (decoded JSON from an ops topic) is not an ops record the sink can
    write, or None if it is: the fields that place and identify it (kind, ids, time, rank)
    have the types the sink relies on. Anyone who may produce to the topic can send anything;
    what the other fields hold is checked where they are used."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    kind = record.get("kind")
    if kind == LOG:
        texts, stamp = ("doc_id", "run_id"), "ts"
    elif kind == RUN:
        texts, stamp = ("run_id",), "created_ts"
        rank, state = record.get("rank"), record.get("state")
        if type(rank) is not int or rank < 0:
            return f"rank is {_shown(rank)}, not a whole number >= 0"
        if state not in _STATES:
            return f"state is {_shown(state)}, not a lifecycle state"
    else:
        return f"unknown kind {_shown(kind)}"
    for name in texts:
        value = record.get(name)
        if type(value) is not str or not value:
            return f"{name} is {_shown(value)}, not a non-empty string"
    when = record.get(stamp)
    if type(when) not in (int, float) or not 0 <= when <= MAX_TS:  # NaN fails too
        return f"{stamp} is {_shown(when)}, not a time in seconds"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def encode(record: dict[str, Any]) -> OutgoingRecord:
    """An ops record as a bus record keyed by its run id."""
    value = json.dumps(record, separators=(",", ":"), default=str).encode()
    return OutgoingRecord(value, key=str(record["run_id"]).encode())


__all__ = [
    "OpsConfig",
    "day",
    "encode",
    "final",
    "finished",
    "iso",
    "lifecycle",
    "lifecycle_rank",
    "log_record",
    "queued",
    "record_problem",
    "summary_row",
]
