"""Ops records without servers: the runner's hooks see scrubbed lines, the publisher batches
and resends, and the bulk body indexes logs by id and run summaries by versioned run id."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from fxray import ops
from fxray.bus import OutgoingRecord
from fxray.kv import ServiceState
from fxray.kv.local import InMemoryKV
from fxray.ops.elastic import EsConfig, bulk_operations, plain_media_type
from fxray.ops.publisher import OpsPublisher
from fxray.runtime import runner
from fxray.runtime.runs import LogLine, RunResult, RunStatus, StepResult
from tests.unit.runtime.test_runner import capturing_streams, make_package, make_spec

SECRET = "hunter2-secret"


class Hooks:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.steps: list[tuple[int, str, StepResult | None]] = []

    def log(self, line: LogLine) -> None:
        self.lines.append(line)

    def step(self, index: int, name: str, result: StepResult | None) -> None:
        self.steps.append((index, name, result))


def test_runner_hooks_get_scrubbed_lines_and_steps_as_they_happen(tmp_path: Path) -> None:
    pkg = make_package(
        tmp_path,
        {
            "a.py": "from fxray import context\nprint('key', context.secrets['k'])\n",
            "b.py": "from fxray import context\nraise ValueError(context.secrets['k'])\n",
        },
    )
    hooks = Hooks()
    spec = make_spec(["a.py", "b.py"])
    with capturing_streams():
        result = runner.execute(
            spec,
            pkg,
            config={},
            secrets={"k": SECRET},
            state=ServiceState(InMemoryKV(), "svc"),
            hooks=hooks,
        )
    assert result.status is RunStatus.FAILED
    assert hooks.lines[0][1:] == ("STDOUT", "a.py", "key ***")
    assert hooks.lines == result.logs
    assert SECRET not in json.dumps(hooks.lines)
    assert [(i, n, r is None) for i, n, r in hooks.steps] == [
        (0, "a.py", True),
        (0, "a.py", False),
        (1, "b.py", True),
        (1, "b.py", False),
    ]
    failed = hooks.steps[-1][2]
    assert failed is not None and failed.error == "ValueError: ***"
    # records built from what the hooks and the result carry hold no secret either
    records = [ops.log_record(spec, i, line) for i, line in enumerate(hooks.lines)]
    records.append(ops.finished(spec, result, log_lines=len(hooks.lines)))
    assert SECRET not in json.dumps(records)
    assert records[0]["doc_id"] == f"{spec.run_id}:log:0"
    assert records[-1]["doc_id"] == f"{spec.run_id}:finished:1"


def test_lifecycle_ranks_grow_with_state_and_attempt() -> None:
    order = [
        ops.lifecycle_rank(ops.QUEUED, 1),
        ops.lifecycle_rank(ops.STARTED, 1),
        ops.lifecycle_rank(ops.STEP_STARTED, 1, 0),
        ops.lifecycle_rank(ops.STEP_FINISHED, 1, 0),
        ops.lifecycle_rank(ops.STEP_STARTED, 1, 1),
        ops.lifecycle_rank(ops.STEP_FINISHED, 1, 1),
        ops.lifecycle_rank(ops.FINISHED, 1),
        ops.lifecycle_rank(ops.FINAL, 1),
        ops.lifecycle_rank(ops.QUEUED, 2),
        ops.lifecycle_rank(ops.FINISHED, 2),
        ops.lifecycle_rank(ops.FINAL, 2),
    ]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert ops.log_seq(2, 5) > ops.log_seq(1, 9999)


def test_bulk_body_indexes_logs_by_id_and_runs_by_versioned_run_id() -> None:
    spec = make_spec(["a.py"])
    spec.created_at = 1_767_225_599.5  # 2025-12-31T23:59:59.5Z
    line = (1_767_225_600.25, "INFO", "a.py", "hi")  # the next day
    result = RunResult(spec.run_id, RunStatus.SUCCEEDED, 1_767_225_600.0, 1_767_225_600.5)
    records = [ops.queued(spec), ops.log_record(spec, 0, line), ops.finished(spec, result)]
    body = bulk_operations(EsConfig(prefix="fx"), records)
    queued_action, queued_doc, log_action, log_doc, done_action, done_doc = body
    assert queued_action["index"]["_index"] == "fx-runs-2025.12.31"
    assert queued_action["index"]["_id"] == spec.run_id
    assert queued_action["index"]["version_type"] == "external_gte"
    assert done_action["index"]["_index"] == "fx-runs-2025.12.31"  # the run's day, not now
    assert done_action["index"]["version"] > queued_action["index"]["version"]
    assert log_action == {"index": {"_index": "fx-logs-2026.01.01", "_id": f"{spec.run_id}:log:0"}}
    assert log_doc["timestamp"] == "2026-01-01T00:00:00.250Z" and "kind" not in log_doc
    assert queued_doc["status"] == "pending" and done_doc["status"] == "succeeded"
    assert "rank" not in done_doc and done_doc["queue_ms"] == 500.0


def test_summary_rows_follow_queued_started_and_final_records() -> None:
    spec = make_spec(["a.py", "b.py"])
    spec.created_at = 100.0
    steps = [
        StepResult("a.py", RunStatus.SUCCEEDED, 101.0, 101.25),
        StepResult("b.py", RunStatus.FAILED, 101.25, 101.5, error="boom"),
    ]
    result = RunResult(
        spec.run_id, RunStatus.FAILED, 101.0, 101.5, steps=steps, error="boom", result={"n": 1}
    )
    queued = ops.summary_row(ops.queued(spec))
    assert queued is not None
    assert queued["id"] == spec.run_id and queued["status"] == "pending"
    assert queued["created_at"] == 100.0 and queued["version_id"] == spec.version_id
    assert queued["event_id"] == spec.event["id"] and queued["attempt"] == 1
    assert "steps" not in queued and "logs" not in queued  # defaults on insert, kept on retry

    publisher_started = ops.lifecycle(spec, ops.STARTED, status="running", started_at=ops.iso(101))
    started = ops.summary_row(publisher_started)
    assert started is not None and started["status"] == "running"
    assert started["started_at"] == 101.0 and started["rank"] > queued["rank"]

    # an attempt's "finished" may still be retried: it never makes the row look final
    assert ops.summary_row(ops.finished(spec, result)) is None
    assert ops.summary_row(ops.lifecycle(spec, ops.STEP_STARTED, step_index=0)) is None

    logs = [[101.1, "INFO", "a.py", "hi"]]
    final = ops.summary_row(ops.final(spec, result, logs=logs))
    assert final is not None and final["rank"] > ops.finished(spec, result)["rank"]
    assert (final["status"], final["error"], final["result"]) == ("failed", "boom", {"n": 1})
    assert (final["started_at"], final["finished_at"], final["logs"]) == (101.0, 101.5, logs)
    assert final["steps"] == [
        {"name": "a.py", "status": "succeeded", "started_at": 101.0, "finished_at": 101.25,
         "error": None},
        {"name": "b.py", "status": "failed", "started_at": 101.25, "finished_at": 101.5,
         "error": "boom"},
    ]  # fmt: skip
    slim = ops.summary_row(ops.final(spec, result, logs=None, with_result=False))
    assert slim is not None and "logs" not in slim and "result" not in slim

    spec.attempt = 2
    retried = ops.summary_row(ops.queued(spec, error="boom"))
    assert retried is not None and retried["error"] == "boom" and retried["rank"] > final["rank"]


def test_bulk_body_leaves_final_records_and_free_form_fields_to_the_database() -> None:
    spec = make_spec(["a.py"])
    result = RunResult(spec.run_id, RunStatus.SUCCEEDED, 1.0, 2.0, result={"any": ["shape"]})
    config = EsConfig(prefix="fx")
    assert bulk_operations(config, [ops.final(spec, result, logs=[[1.5, "INFO", "", "x"]])]) == []
    finished = ops.finished(spec, result)
    _, doc = bulk_operations(config, [{**finished, "result": {"any": 1}, "logs": []}])
    assert "result" not in doc and "logs" not in doc and doc["state"] == "finished"


def test_plain_media_types_for_opensearch() -> None:
    compat = "application/vnd.elasticsearch+json; compatible-with=9"
    assert plain_media_type(compat) == "application/json"
    assert plain_media_type("application/vnd.elasticsearch+x-ndjson;compatible-with=8") == (
        "application/x-ndjson"
    )
    assert plain_media_type("application/json") == "application/json"


class FlakyBus:
    def __init__(self) -> None:
        self.produced: list[tuple[str, list[OutgoingRecord]]] = []
        self.fail = threading.Event()

    def produce(self, topic: str, records: list[OutgoingRecord]) -> None:
        if self.fail.is_set():
            raise RuntimeError("bus away")
        self.produced.append((topic, list(records)))


def test_publisher_sends_logs_before_runs_and_keeps_records_while_the_bus_is_away() -> None:
    bus = FlakyBus()
    publisher = OpsPublisher(ops.OpsConfig(bus, "runs", "logs", flush_s=0.05))  # type: ignore[arg-type]
    spec = make_spec(["a.py"])
    hooks = publisher.run_hooks(spec)
    bus.fail.set()
    hooks.started(1.0)
    hooks.log((1.0, "INFO", "a.py", "one"))
    assert not publisher.flush(0.3)  # the bus is away: kept
    bus.fail.clear()
    hooks.log((1.1, "INFO", "a.py", "two"))
    hooks.finished(RunResult(spec.run_id, RunStatus.SUCCEEDED, 1.0, 1.2))
    assert publisher.flush(5.0)
    topics = [topic for topic, _ in bus.produced]
    assert topics == ["logs", "runs"]
    decoded: dict[str, list[dict[str, Any]]] = {
        topic: [json.loads(r.value) for r in records] for topic, records in bus.produced
    }
    assert [r["message"] for r in decoded["logs"]] == ["one", "two"]
    assert [r["state"] for r in decoded["runs"]] == ["started", "finished"]
    assert decoded["runs"][-1]["log_lines"] == 2 and decoded["runs"][-1]["last_seq"] == 1
    assert all(r.key == spec.run_id.encode() for _, rs in bus.produced for r in rs)
