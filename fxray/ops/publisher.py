"""The executor side of the ops pipeline: buffer ops records, produce them in batches.

:class:`OpsPublisher` keeps records in memory and a daemon thread produces them to the ops
topics every ``flush_s`` (100 ms), so a long run's log lines flow while it runs;
:meth:`OpsPublisher.flush` (at the end of each batch) waits for what is buffered. Log records
go out before lifecycle records, so a run's ``finished`` record follows its lines. If the bus
is away records are kept (up to :data:`MAX_BUFFERED`, then new log lines are dropped and
counted) and sent again; a publishing problem never fails a run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fxray import ops
from fxray.bus import OutgoingRecord
from fxray.runtime.runs import LogLine, RunResult, RunSpec, StepResult

log = logging.getLogger("fxray.ops.publisher")

MAX_BUFFERED = 100_000


class OpsPublisher:
    """Buffers ops records of one process and produces them in batches on a thread."""

    def __init__(self, config: ops.OpsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._runs: list[OutgoingRecord] = []
        self._logs: list[OutgoingRecord] = []
        self._added = 0  # records added so far
        self._sent = 0  # records added before the last successful flush began
        self.dropped = 0
        self.failures = 0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fxray-ops-publisher", daemon=True)
        self._thread.start()

    # records ---------------------------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> None:
        """Buffer one ops record (a log line or a lifecycle record)."""
        out = ops.encode(record)
        with self._lock:
            is_log = record.get("kind") == ops.LOG
            if is_log and len(self._logs) + len(self._runs) >= MAX_BUFFERED:
                self.dropped += 1
                return
            (self._logs if is_log else self._runs).append(out)
            self._added += 1

    def run_hooks(self, spec: RunSpec) -> RunOps:
        """Per-run hooks for :func:`fxray.runtime.runner.execute` (log lines and steps)."""
        return RunOps(self, spec)

    # flushing --------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Produce what is buffered now; False if the bus did not take it within ``timeout_s``
        (the records stay buffered and the thread keeps trying)."""
        with self._lock:
            target = self._added
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._sent >= target, timeout_s)

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            self._wake.wait(max(self.config.flush_s, backoff))
            self._wake.clear()
            backoff = 0.0 if self._send() else min(5.0, max(0.2, backoff * 2))

    def _send(self) -> bool:
        with self._lock:
            logs, self._logs = self._logs, []
            runs, self._runs = self._runs, []
            upto = self._added
        try:
            if logs:
                self.config.bus.produce(self.config.logs_topic, logs)
            if runs:
                self.config.bus.produce(self.config.runs_topic, runs)
        except Exception as exc:  # the bus is away: keep the records (ids make resends safe)
            self.failures += 1
            log.warning("ops records not published yet (%d): %s", len(logs) + len(runs), exc)
            with self._lock:
                self._logs = logs + self._logs
                self._runs = runs + self._runs
            return False
        with self._done:
            self._sent = upto
            self._done.notify_all()
        return True


class RunOps:
    """The ops hooks of one run attempt: numbers its log lines, reports its steps."""

    def __init__(self, publisher: OpsPublisher, spec: RunSpec) -> None:
        self.publisher = publisher
        self.spec = spec
        self.lines = 0
        self.started_at = time.time()

    def started(self, started_at: float) -> None:
        self.started_at = started_at
        created = self.spec.created_at or started_at
        record = ops.lifecycle(
            self.spec,
            ops.STARTED,
            status="running",
            started_at=ops.iso(started_at),
            queue_ms=round(max(0.0, started_at - created) * 1000.0, 3),
        )
        self.publisher.add(record)

    def log(self, line: LogLine) -> None:
        """A captured (already scrubbed) log line."""
        self.publisher.add(ops.log_record(self.spec, self.lines, line))
        self.lines += 1

    def step(self, index: int, name: str, result: StepResult | None) -> None:
        """A step starts (``result`` None) or ends (its scrubbed result)."""
        fields: dict[str, Any] = {
            "status": "running",
            "step": name,
            "started_at": ops.iso(self.started_at),
        }
        if result is None:
            record = ops.lifecycle(self.spec, ops.STEP_STARTED, step_index=index, **fields)
        else:
            fields["step_status"] = result.status.value
            fields["step_error"] = result.error
            fields["step_duration_ms"] = round(result.duration_ms, 3)
            record = ops.lifecycle(self.spec, ops.STEP_FINISHED, step_index=index, **fields)
        self.publisher.add(record)

    def finished(self, result: RunResult) -> None:
        self.publisher.add(ops.finished(self.spec, result, log_lines=self.lines))
