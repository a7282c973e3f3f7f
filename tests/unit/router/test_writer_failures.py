"""The record writer when the database is away, or refuses a row: nothing is dropped in silence,
nothing is retried forever, and order holds.

The store is a real SQLite state store whose ``write_batch`` can be made to fail: with
OperationalError (what a stopped or unreachable server raises) for a while, or with the errors a
database raises for a row it will never take.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from fxray.router.writer import RecordWriter
from fxray.store import StateStore
from tests.run_records import finished_run, pending_run


def _unavailable() -> sa_exc.OperationalError:
    return sa_exc.OperationalError(
        "INSERT ...", {}, Exception('connection to server at "127.0.0.1" failed: refused')
    )


class FlakyStore(StateStore):
    """A SQLite state store whose batch writes fail on demand."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.outage_writes = 0  # the next this many batch writes fail as if the server were away
        self.poison: set[str] = set()  # row ids the database refuses
        self.poison_content = True  # False: the row is refused even without logs and result
        self.attempts = 0

    def write_batch(self, **rows: Any) -> None:
        self.attempts += 1
        if self.outage_writes > 0:
            self.outage_writes -= 1
            raise _unavailable()
        for group in rows.values():
            for row in group:
                if row.get("id") in self.poison and (row.get("logs") or not self.poison_content):
                    raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        super().write_batch(**rows)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlakyStore]:
    flaky = FlakyStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield flaky
    flaky.close()


def _writer(store: StateStore, **options: Any) -> tuple[RecordWriter, Counter[str], list[str]]:
    counters: Counter[str] = Counter()
    reports: list[str] = []
    options = {"linger_s": 0, "retry_initial_s": 0.001, "retry_max_s": 0.01, **options}
    writer = RecordWriter(store, counters=counters, report=reports.append, **options)
    return writer, counters, reports


def test_an_outage_longer_than_any_retry_budget_loses_no_row(store: FlakyStore) -> None:
    writer, counters, reports = _writer(store)
    store.outage_writes = 40  # the old writer gave up (and dropped the rows) after 5 tries
    writer.submit("insert_runs", [pending_run(f"r{i}") for i in range(10)])
    writer.submit("events", [{"id": "e1", "type": "t", "source": "s", "data": {}}])

    async def finish() -> None:
        await writer.write("update_runs", [finished_run(f"r{i}") for i in range(10)])

    asyncio.run(asyncio.wait_for(finish(), 30))
    writer.close()
    runs = store.list_runs(limit=None)
    assert sorted(r.id for r in runs) == [f"r{i}" for i in range(10)]
    assert {r.status for r in runs} == {"succeeded"}  # the inserts came first: order held
    assert store.get_event("e1")["id"] == "e1"
    assert counters["record_write_retries"] == 40
    assert counters["record_write_outages"] == 1
    assert counters["records_rejected"] == 0
    assert len(reports) == 1 and "database unavailable" in reports[0]
    assert "127.0.0.1" in reports[0] and "INSERT" not in reports[0]  # the driver's words only


def test_an_outage_that_lasts_is_reported_again(
    store: FlakyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fxray.router.writer.OUTAGE_REPORT_EVERY_S", 0.05)
    writer, counters, reports = _writer(store, retry_max_s=0.02)
    store.outage_writes = 30
    asyncio.run(asyncio.wait_for(writer.write("insert_runs", [pending_run("r1")]), 30))
    writer.close()
    assert store.get_run("r1").status == "pending"
    assert any("still unavailable" in r for r in reports[1:])
    assert counters["record_write_outages"] == 1  # one outage, however often reported


def test_a_poison_row_is_written_without_its_content_and_the_rest_in_full(
    store: FlakyStore,
) -> None:
    writer, counters, reports = _writer(store)
    ids = [f"r{i}" for i in range(20)]
    store.poison = {"r13"}
    writer.submit("insert_runs", [pending_run(i) for i in ids])

    async def finish() -> None:  # returns: the poison row is not retried forever
        await writer.write("update_runs", [finished_run(i) for i in ids])

    asyncio.run(asyncio.wait_for(finish(), 30))
    writer.close()
    runs = {r.id: r for r in store.list_runs(limit=None)}
    assert sorted(runs) == sorted(ids)
    assert {r.status for r in runs.values()} == {"succeeded"}
    assert runs["r13"].logs == [] and runs["r13"].result is None
    assert "database refused" in (runs["r13"].error or "")
    assert all(runs[i].result == {"run": i} for i in ids if i != "r13")
    assert counters["records_degraded"] == 1 and counters["records_rejected"] == 0
    assert counters["record_batches_split"] >= 1
    assert any("r13" in r and "without its logs" in r for r in reports)


def test_a_row_refused_even_without_content_is_reported_not_dropped_in_silence(
    store: FlakyStore,
) -> None:
    writer, counters, reports = _writer(store)
    store.poison = {"r2"}
    store.poison_content = False
    events = [{"id": f"e{i}", "type": "t", "source": "s", "data": {}} for i in range(4)]
    writer.submit("events", events)
    asyncio.run(
        asyncio.wait_for(writer.write("insert_runs", [pending_run(f"r{i}") for i in range(4)]), 30)
    )
    writer.close()
    assert sorted(r.id for r in store.list_runs(limit=None)) == ["r0", "r1", "r3"]
    assert [store.get_event(f"e{i}")["id"] for i in range(4)] == ["e0", "e1", "e2", "e3"]
    assert counters["records_rejected"] == 1
    assert list(writer.rejected) == [
        {
            "kind": "new run row",
            "id": "r2",
            "error": "ValueError: A string literal cannot contain NUL (0x00) characters.",
        }
    ]
    assert any("'r2'" in r and "for good" in r for r in reports)


def test_an_outage_during_the_search_for_a_poison_row_is_waited_out(store: FlakyStore) -> None:
    class PoisonThenAway(FlakyStore):
        def write_batch(self, **rows: Any) -> None:
            if self.attempts == 3:  # the batch was refused 3 times: the split begins
                self.outage_writes = 5
            super().write_batch(**rows)

    flaky = PoisonThenAway(store.url)
    writer, counters, _ = _writer(flaky)
    flaky.poison = {"r5"}
    asyncio.run(
        asyncio.wait_for(
            writer.write("insert_runs", [pending_run(f"r{i}", logs=[[1]]) for i in range(8)]), 30
        )
    )
    writer.close()
    assert sorted(r.id for r in flaky.list_runs(limit=None)) == [f"r{i}" for i in range(8)]
    assert counters["record_write_retries"] == 5 and counters["records_degraded"] == 1
    flaky.close()
