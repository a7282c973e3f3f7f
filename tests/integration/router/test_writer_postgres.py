"""The router's record writer on a real PostgreSQL (a private server, stopped and started by the
test): rows queued while the server is down are written once it is back, however long that
takes, and a row the server refuses is found, written without its content or reported, while
the rest of its batch is written."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from fxray.router.writer import RecordWriter
from fxray.store import StateStore
from tests.pg_server import PrivatePostgres
from tests.run_records import finished_run, pending_run

OUTAGE_S = 8.0  # longer than the 5 tries over ~6 s after which the writer used to drop rows


def _event(n: int) -> dict[str, Any]:
    return {"id": f"e{n}", "type": "t", "source": "s", "specversion": "1.0", "data": {"n": n}}


def test_rows_queued_during_an_outage_are_all_written_after_it(
    private_postgres: PrivatePostgres,
) -> None:
    store = StateStore(private_postgres.create_database("writer"))
    store.engine  # noqa: B018 - migrated while the server is up
    counters: Counter[str] = Counter()
    reports: list[str] = []
    writer = RecordWriter(store, counters=counters, report=reports.append, retry_max_s=1.0)
    ids = [f"r{i}" for i in range(50)]
    writer.submit("insert_runs", [pending_run(i) for i in ids[:10]])  # written before
    deadline = time.monotonic() + 10
    while store.count_runs() < 10:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    private_postgres.stop()
    stopped = time.monotonic()
    try:
        writer.submit("insert_runs", [pending_run(i) for i in ids[10:]])  # queued, not awaited
        writer.submit("events", [_event(n) for n in range(20)])
        time.sleep(OUTAGE_S)
    finally:
        private_postgres.start()

    async def finish() -> None:
        await writer.write("update_runs", [finished_run(i) for i in ids])

    asyncio.run(asyncio.wait_for(finish(), 60))
    back = time.monotonic() - stopped
    writer.close()
    runs = store.list_runs(limit=None)
    assert sorted(r.id for r in runs) == sorted(ids)  # none dropped, none twice
    assert {r.status for r in runs} == {"succeeded"}
    assert all(r.result == {"run": r.id} for r in runs)
    assert [store.get_event(f"e{n}")["data"] for n in range(20)] == [{"n": n} for n in range(20)]
    assert counters["record_write_outages"] == 1 and counters["record_write_retries"] >= 3
    assert counters["records_rejected"] == 0
    assert "database unavailable" in reports[0] and back >= OUTAGE_S
    store.close()


def test_a_row_the_server_refuses_is_isolated_and_reported(
    private_postgres: PrivatePostgres,
) -> None:
    url = private_postgres.create_database("poison")
    store = StateStore(url)
    store.engine  # noqa: B018 - the tables first
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # a server-side rule that refuses two rows
        connection.execute(
            sa.text(
                """
                CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
                BEGIN
                    IF NEW.id = 'r-content' AND NEW.logs::text <> '[]' THEN
                        RAISE EXCEPTION 'refused: the logs of %', NEW.id;
                    END IF;
                    IF NEW.id = 'r-always' THEN
                        RAISE EXCEPTION 'refused: %', NEW.id;
                    END IF;
                    RETURN NEW;
                END $$ LANGUAGE plpgsql
                """
            )
        )
        connection.execute(
            sa.text(
                "CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON runs "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        )
    engine.dispose()
    counters: Counter[str] = Counter()
    reports: list[str] = []
    writer = RecordWriter(store, counters=counters, report=reports.append, retry_initial_s=0.01)
    ids = [f"r{i:02}" for i in range(30)] + ["r-content", "r-always"]

    async def write_all() -> None:
        await writer.write("insert_runs", [pending_run(i) for i in ids])
        await writer.write("update_runs", [finished_run(i) for i in ids])

    asyncio.run(asyncio.wait_for(write_all(), 60))  # returns: nothing is retried forever
    writer.close()
    runs = {r.id: r for r in store.list_runs(limit=None)}
    assert sorted(runs) == sorted(i for i in ids if i != "r-always")
    assert all(runs[i].status == "succeeded" and runs[i].result == {"run": i} for i in ids[:30])
    degraded = runs["r-content"]
    assert degraded.status == "succeeded" and degraded.logs == [] and degraded.result is None
    assert "refused: the logs of r-content" in (degraded.error or "")
    assert counters["records_degraded"] == 1 and counters["records_rejected"] == 1
    assert [r["id"] for r in writer.rejected] == ["r-always"]
    assert "refused: r-always" in writer.rejected[0]["error"]
    assert any("'r-always'" in r and "for good" in r for r in reports)
    store.close()
