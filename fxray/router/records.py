"""Where a router records its runs: rows in the management database, written by the router's
:class:`~fxray.router.writer.RecordWriter` (:class:`RunRecords`), or, with the ops sink on,
lifecycle records on the ops runs topic that the sink turns into those rows
(:class:`OpsRunRecords`, see :mod:`fxray.ops.sink`).

Either way, :meth:`RunRecords.finished` returns once the runs' final state is durable (a
committed row, or a ``final`` record acknowledged by the bus): only then may the router commit
the offsets of their events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from fxray import ops
from fxray.bus import EventBus, OutgoingRecord
from fxray.router.writer import RecordWriter
from fxray.runtime.runs import RunResult, RunSpec, RunStatus

MAX_OPS_RECORD_BYTES = 512 * 1024
"""A run's ``final`` ops record larger than this leaves its logs and result to the router's
own database write (Kafka refuses records over ``message.max.bytes``, 1 MB by default)."""

Final = tuple[RunSpec, RunResult, list[Any]]
"""A run done for good: its spec, its last result and all its log lines."""


class RunRecords:
    """Run rows written through the router's record writer."""

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer

    def created(self, specs: list[RunSpec]) -> None:
        """New runs (queued). Not waited for: the writer keeps order."""
        self.writer.submit("insert_runs", [pending_row(s) for s in specs])

    def running(self, spec: RunSpec, started: float) -> None:
        change = {
            "id": spec.run_id,
            "status": RunStatus.RUNNING.value,
            "started_at": started,
            "attempt": spec.attempt,
        }
        self.writer.submit("update_runs", [change])

    def retrying(self, spec: RunSpec, error: str | None, logs: list[Any]) -> None:
        """The run is queued again for its next attempt (``spec.attempt``)."""
        change = {
            "id": spec.run_id,
            "status": RunStatus.PENDING.value,
            "error": error,
            "logs": logs,
        }
        self.writer.submit("update_runs", [change])

    async def ended_in_router(self, spec: RunSpec, result: RunResult) -> None:
        """An attempt ended by the router itself (no executor reported it)."""

    async def finished(self, finals: list[Final]) -> None:
        """Record the runs' final state; returns once it is durable."""
        await self.writer.write("update_runs", [final_row(*final) for final in finals])

    async def reprioritised(self, spec: RunSpec) -> None:
        await self.writer.write("update_runs", [{"id": spec.run_id, "priority": spec.priority}])


class OpsRunRecords(RunRecords):
    """Lifecycle records on the ops runs topic; the ops sink writes the rows."""

    def __init__(
        self,
        writer: RecordWriter,
        bus: EventBus,
        config: ops.OpsConfig,
        counters: Counter[str],
        note_error: Callable[[str], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        super().__init__(writer)
        self.bus = bus
        self.topic = config.runs_topic
        self.counters = counters
        self.note_error = note_error
        self.spawn = spawn

    def created(self, specs: list[RunSpec]) -> None:
        if specs:  # the catalog still learns which service each run is, for emitters
            self.writer.submit("runs_seen", [{"id": s.run_id, "service": s.service} for s in specs])
            self.spawn(self._publish([ops.queued(s) for s in specs]))

    def running(self, spec: RunSpec, started: float) -> None:
        """Nothing: the executor's ``started`` record says it."""

    def retrying(self, spec: RunSpec, error: str | None, logs: list[Any]) -> None:
        self.spawn(self._publish([ops.queued(spec, error=error)]))

    async def ended_in_router(self, spec: RunSpec, result: RunResult) -> None:
        await self._publish([ops.finished(spec, result)])

    async def finished(self, finals: list[Final]) -> None:
        """The runs' ``final`` records, acknowledged by the bus. A record too large for the bus
        leaves its logs and result out, and the router writes that run's whole row itself,
        rank-guarded like the sink's writes."""
        records: list[OutgoingRecord] = []
        direct: list[dict[str, Any]] = []
        for spec, result, logs in finals:
            out = ops.encode(ops.final(spec, result, logs=[list(line) for line in logs]))
            if len(out.value) > MAX_OPS_RECORD_BYTES:
                slim = ops.final(spec, result, logs=None, with_result=False)
                out = ops.encode(slim)
                direct.append(
                    {**pending_row(spec), **final_row(spec, result, logs), "rank": slim["rank"]}
                )
            records.append(out)
        if direct:
            self.counters["final_rows_written_directly"] += len(direct)
            await self.writer.write("ranked_runs", direct)
        if records:
            await self.bus.produce_async(self.topic, records)

    async def reprioritised(self, spec: RunSpec) -> None:
        """The ``queued`` record again, with the new priority (same rank: it applies)."""
        await self.bus.produce_async(self.topic, [ops.encode(ops.queued(spec))])

    async def _publish(self, records: list[dict[str, Any]]) -> None:
        """Produce lifecycle records that need not hold anything up (their ids and ranks make
        resends harmless); a failure is counted, never raised."""
        try:
            await self.bus.produce_async(self.topic, [ops.encode(r) for r in records])
        except Exception as exc:
            self.counters["ops_publish_failures"] += 1
            self.note_error(f"ops records: {type(exc).__name__}: {exc}")


def pending_row(spec: RunSpec) -> dict[str, Any]:
    return {
        "id": spec.run_id,
        "service": spec.service,
        "version_id": spec.version_id,
        "trigger_id": spec.trigger_id,
        "event_id": spec.event["id"],
        "event_type": spec.event["type"],
        "correlation_id": spec.correlation_id,
        "status": RunStatus.PENDING.value,
        "priority": spec.priority,
        "attempt": spec.attempt,
        "shadow": spec.shadow,
        "created_at": time.time(),
        "steps": [],
        "logs": [],
    }


def final_row(spec: RunSpec, result: RunResult, logs: list[Any]) -> dict[str, Any]:
    return {
        "id": spec.run_id,
        "status": result.status.value,
        "attempt": spec.attempt,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "steps": [
            {
                "name": s.name,
                "status": s.status.value,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
                "error": s.error,
            }
            for s in result.steps
        ],
        "error": result.error,
        "logs": [list(line) for line in logs],
        "result": result.result,
    }


__all__ = ["MAX_OPS_RECORD_BYTES", "OpsRunRecords", "RunRecords", "final_row", "pending_row"]
