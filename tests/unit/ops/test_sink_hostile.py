"""The ops sink's loops against whatever is on the ops topics: records that are not JSON, not
ours, of unknown kinds, with wrong types or missing fields, or that the database refuses are
counted and skipped (with a report), and the loop goes on to write and commit the rest.

The sink runs here without Ray, its database lane on a SQLite state store, its consumer a fake
that hands out the test's records once and keeps the committed offsets.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from fxray import ops
from fxray.bus import Record, TopicPartition
from fxray.ops import sink as sink_module
from fxray.ops.elastic import EsConfig, bulk_operations
from fxray.ops.sink import OpsSink
from fxray.runtime.runs import RunResult, RunStatus
from fxray.store import StateStore
from tests.unit.runtime.test_runner import make_spec

TOPIC = "fx.ops.runs"


class FakeConsumer:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.committed: dict[TopicPartition, int] = {}

    async def poll_async(self, max_records: int, timeout: float) -> list[Record]:
        batch, self.records = self.records[:max_records], self.records[max_records:]
        if not batch:
            await asyncio.sleep(timeout)
        return batch

    def assignment(self) -> list[TopicPartition]:
        return [(TOPIC, 0)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        pass

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass

    async def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    async def close_async(self) -> None:
        pass


class FakeBus:
    def __init__(self, records: list[Record]) -> None:
        self.consumer_ = FakeConsumer(records)

    def ensure_topic(self, topic: str, partitions: int) -> None:
        pass

    def consumer(self, group: str, topics: list[str], member_id: str | None = None) -> Any:
        return self.consumer_


def _records(values: list[bytes | None]) -> list[Record]:
    return [Record(TOPIC, 0, offset, None, value) for offset, value in enumerate(values)]  # type: ignore[arg-type]


def _run_records(final_status: RunStatus = RunStatus.SUCCEEDED) -> tuple[str, list[bytes]]:
    spec = make_spec(["a.py"])
    spec.created_at = time.time()
    result = RunResult(spec.run_id, final_status, spec.created_at, spec.created_at + 1, result=1)
    values = [ops.queued(spec), ops.final(spec, result, logs=[[1.0, "INFO", "a.py", "hi"]])]
    return spec.run_id, [ops.encode(v).value for v in values]


def _sink(tmp_path: Path, values: list[bytes | None]) -> tuple[OpsSink, FakeBus, StateStore]:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    bus = FakeBus(_records(values))
    settings = {"home": str(tmp_path), "instance": "t", "ops_runs_topic": TOPIC}
    sink = OpsSink(settings, bus, EsConfig(prefix="t"), store=store, summaries=True)  # type: ignore[arg-type]
    return sink, bus, store


async def _drain(sink: OpsSink, bus: FakeBus, last_offset: int) -> None:
    await sink.start()
    deadline = time.monotonic() + 20
    while bus.consumer_.committed.get((TOPIC, 0), 0) <= last_offset:
        assert time.monotonic() < deadline, f"committed {bus.consumer_.committed}"
        await asyncio.sleep(0.05)
    await sink.stop()


def _hostile_values() -> dict[str, bytes | None]:
    spec = make_spec(["a.py"])
    result = RunResult(spec.run_id, RunStatus.SUCCEEDED, 1.0, 2.0)
    final = ops.final(spec, result, logs=[])

    def variant(**changes: Any) -> bytes:
        return json.dumps({**final, **changes}).encode()

    return {
        "tombstone": None,
        "not JSON": b"\xff\xfe not json",
        "a JSON list": b"[1, 2, 3]",
        "NaN": b'{"kind": "run", "created_ts": NaN}',
        "too deep": b"[" * 5000 + b"]" * 5000,
        "unknown kind": json.dumps({"kind": "metric", "run_id": "r", "value": 1}).encode(),
        "no kind": json.dumps({"run_id": "r", "rank": 1, "created_ts": 1.0}).encode(),
        "rank as text": variant(rank="999"),
        "rank true": variant(rank=True),
        "no run id": variant(run_id=None),
        "run id a dict": variant(run_id={"$gt": ""}),
        "created_ts text": variant(created_ts="yesterday"),
        "created_ts past year 9999": variant(created_ts=1e300),
        "unknown state": variant(state="exploded"),
        "finished_at not a date": variant(finished_at="soon"),
        "steps not a list of steps": variant(steps=[1, 2]),
        "service a list": variant(service=["a", "b"]),  # the database refuses this row
    }


def test_hostile_records_are_counted_and_skipped_and_the_loop_goes_on(tmp_path: Path) -> None:
    first, good = _run_records()
    last, more_good = _run_records(RunStatus.FAILED)
    hostile = list(_hostile_values().values())
    values = [*good, *hostile, *more_good]
    sink, bus, store = _sink(tmp_path, values)
    asyncio.run(_drain(sink, bus, len(values) - 1))

    assert store.get_run(first).status == "succeeded"
    assert store.get_run(first).logs == [[1.0, "INFO", "a.py", "hi"]]
    assert store.get_run(last).status == "failed"
    counters = sink.counters
    assert counters["records_in"] == len(values)
    assert counters["undecodable"] == 5  # tombstone, not JSON, a list, NaN, too deep
    assert counters["unknown_kind"] == 2
    assert counters["malformed"] == 9
    assert counters["rejected"] == 1  # the row with a list for a service
    skipped = sum(counters[k] for k in ("undecodable", "unknown_kind", "malformed", "rejected"))
    assert skipped == len(hostile)
    # reported, but at most once per reason and SKIP_REPORT_EVERY_S (no log flood)
    reports = " ".join(sink.errors)
    assert "unknown kind 'metric'" in reports and "undecodable" in reports
    assert sum("skipped a record (malformed" in e for e in sink.errors) == 1
    store.close()


def test_a_stream_of_bad_records_is_reported_now_and_then_not_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "SKIP_REPORT_EVERY_S", 3600.0)
    values: list[bytes | None] = [b"nope"] * 3000
    sink, bus, store = _sink(tmp_path, values)
    asyncio.run(_drain(sink, bus, len(values) - 1))
    assert sink.counters["undecodable"] == 3000
    assert len(sink.errors) == 1 and "3000" not in sink.errors[0]
    store.close()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a JSON list", "not a JSON object but list"),
        ("unknown kind", "unknown kind 'metric'"),
        ("rank as text", "rank is '999'"),
        ("rank true", "rank is True"),
        ("run id a dict", "run_id is {'$gt': ''}"),
        ("created_ts past year 9999", "created_ts is 1e+300"),
        ("unknown state", "state is 'exploded'"),
    ],
)
def test_record_problem_names_the_field(name: str, problem: str) -> None:
    raw = _hostile_values()[name]
    assert raw is not None
    found = ops.record_problem(json.loads(raw))
    assert found is not None and found.startswith(problem)


def test_well_formed_records_have_no_problem() -> None:
    spec = make_spec(["a.py"])
    result = RunResult(spec.run_id, RunStatus.SUCCEEDED, 1.0, 2.0)
    records = [
        ops.queued(spec),
        ops.finished(spec, result, log_lines=1),
        ops.final(spec, result, logs=[]),
        ops.log_record(spec, 0, (1.0, "INFO", "a.py", "hi")),
    ]
    assert [ops.record_problem(json.loads(ops.encode(r).value)) for r in records] == [None] * 4


def test_bulk_operations_leave_out_records_they_cannot_place() -> None:
    spec = make_spec(["a.py"])
    line = ops.log_record(spec, 0, (1.0, "INFO", "a.py", "hi"))
    broken = [{**line, "ts": None}, {**line, "ts": 1e300}, {"kind": "run", "run_id": "r"}]
    malformed: list[str] = []
    body = bulk_operations(EsConfig(prefix="fx"), [*broken, line], malformed)
    assert len(body) == 2 and body[0]["index"]["_id"] == line["doc_id"]
    assert len(malformed) == 3 and "TypeError" in malformed[0]
