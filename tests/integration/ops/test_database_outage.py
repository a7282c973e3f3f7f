"""PostgreSQL stopped and started again in the middle of a stream of events: every run's row
ends final, once, and every routed event is kept, once.

The platform's management database is a private PostgreSQL server of the test's own (the
``private_postgres`` fixture; the machine's shared server is never stopped). Events keep coming
while the database is away for longer than any single retry budget; two ways of writing the
run rows are covered:

* ``elasticsearch``: the ops pipeline is on; the ops sink's **database lane** writes the run rows
  from the ops runs topic, and the router's record writer writes the events table;
* ``none``: the router's **record writer** writes the run rows and the events table itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
import sqlalchemy as sa

from fxray import Platform
from tests.integration.ops.conftest import BOOTSTRAP, ES_COMPAT, ES_URL, require, wait_for
from tests.pg_server import PrivatePostgres

pytestmark = pytest.mark.slow

ORDERS = """
import pathlib, time
from fxray import context
n = context.params["n"]
if "mark" in context.params:  # tell the test this run has started
    pathlib.Path(context.params["mark"]).touch()
time.sleep(context.params.get("sleep", 0))
context.log.info("order %s", n)
context.result = {"n": n}
"""
SLOW_S = 2.0  # a run that starts before the database stops and ends while it is away

BEFORE_S = 4.0  # events flow this long before the database stops
OUTAGE_S = 10.0  # longer than the record writer's and the sink's first retries together
AFTER_S = 4.0  # and this long after it is back
EVERY_S = 0.04  # one event per 40 ms: ~25 events/s


class Stream:
    """Sends an event every :data:`EVERY_S` from a thread until stopped; keeps their ids."""

    def __init__(self, platform: Platform, event_type: str) -> None:
        self.platform = platform
        self.event_type = event_type
        self.sent: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="event-stream", daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _send(self) -> None:
        n = 0
        while not self._stop.wait(EVERY_S):
            try:
                event = self.platform.send(self.event_type, {"n": n})
            except Exception as exc:  # noted, and the test fails on it
                self.failures.append(exc)
                return
            self.sent.append(event["id"])
            n += 1


def _rows(url: str, event_type: str) -> dict[str, Any]:
    """The run rows of the events of ``event_type`` (the test's own), and those events."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(
                sa.text("SELECT id, event_id, status, result FROM runs WHERE event_type = :type"),
                {"type": event_type},
            ).all()
            events = connection.execute(
                sa.text("SELECT id FROM events WHERE type = :type"), {"type": event_type}
            ).scalars()
            return {"runs": runs, "events": list(events)}
    finally:
        engine.dispose()


def _try_rows(url: str, event_type: str) -> dict[str, Any] | None:
    try:
        return _rows(url, event_type)
    except sa.exc.OperationalError:
        return None


@pytest.mark.parametrize("ops_sink", ["elasticsearch", "none"])
def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(
    ops_sink: str,
    private_postgres: PrivatePostgres,
    make_platform: Callable[..., Platform],
    service_dir: Callable[..., Path],
    tmp_path: Path,
) -> None:
    require(BOOTSTRAP, "FXRAY_KAFKA_BOOTSTRAP")
    tag = uuid.uuid4().hex[:8]
    url = private_postgres.create_database(f"fx{tag}")
    settings: dict[str, Any] = {
        "database_url": url,
        "event_bus": "kafka",
        "kafka_bootstrap": BOOTSTRAP,
        "events_topic": f"fx.it.events.{tag}",
        "deadletter_topic": f"fx.it.dlq.{tag}",
        "ops_sink": ops_sink,
    }
    if ops_sink == "elasticsearch":
        settings |= {
            "ops_runs_topic": f"fx.it.ops.runs.{tag}",
            "ops_logs_topic": f"fx.it.ops.logs.{tag}",
            "es_url": require(ES_URL, "FXRAY_TEST_ES_URL"),
            "es_compat": ES_COMPAT,
            "ops_index_prefix": f"it{tag}",
        }
    platform = make_platform(**settings)
    service = f"orders{tag}"
    event_type = f"order.{tag}"
    platform.deploy(service_dir(service, {"o.py": ORDERS}, trigger_events=[event_type]))

    with Stream(platform, event_type) as stream:
        time.sleep(BEFORE_S)
        wait_for(lambda: _rows(url, event_type)["runs"], 60, "the first run rows")
        # a run in flight across the stop: its end is recorded while the database is away
        mark = tmp_path / "slow-run-started"
        slow = platform.send(event_type, {"n": -1, "sleep": SLOW_S, "mark": str(mark)})["id"]
        wait_for(mark.exists, 60, "the slow run running")
        before = len(stream.sent)
        stopped = time.monotonic()
        private_postgres.stop()  # clients are disconnected, new connections refused
        try:
            time.sleep(OUTAGE_S)
        finally:
            private_postgres.start()
        outage_s = time.monotonic() - stopped
        during = len(stream.sent) - before
        time.sleep(AFTER_S)
    assert not stream.failures, stream.failures
    sent = [*stream.sent, slow]
    assert before > 0 and during > 0 and len(sent) > before + during

    def complete() -> dict[str, Any] | None:
        rows = _try_rows(url, event_type)
        if rows is None or len(rows["runs"]) < len(sent) or len(rows["events"]) < len(sent):
            return None
        return rows if all(r.status == "succeeded" for r in rows["runs"]) else None

    try:
        rows = wait_for(complete, 180, f"{len(sent)} final run rows and events")
    except AssertionError:
        rows = _try_rows(url, event_type) or {"runs": [], "events": []}
        statuses: dict[str, int] = {}
        for run in rows["runs"]:
            statuses[run.status] = statuses.get(run.status, 0) + 1
        pytest.fail(
            f"sent {len(sent)} events ({during} during a {outage_s:.1f}s outage); "
            f"{len(rows['runs'])} run rows {statuses}, {len(rows['events'])} event rows; "
            f"router errors: {platform.stats()['errors'][-5:]}",
            pytrace=False,
        )
    platform.wait_idle(60)
    time.sleep(1.0)  # anything late (a duplicate) would land now
    rows = _rows(url, event_type)
    runs = rows["runs"]
    # exactly one run per event, each final with its result; exactly the events sent, once
    assert len(runs) == len(sent)
    assert sorted(r.event_id for r in runs) == sorted(sent)
    assert {r.status for r in runs} == {"succeeded"}
    assert sorted(r.result["n"] for r in runs) == [-1, *range(len(sent) - 1)]  # each its own
    assert sorted(rows["events"]) == sorted(sent)

    # whoever writes the run rows noticed the outage and waited it out; nothing was refused
    counters = platform.stats()["counters"]
    if ops_sink == "elasticsearch":
        (sink,) = platform.ops_sinks
        lane = ray.get(sink.stats.remote())["lanes"]["database"]
        assert lane["counters"]["write_retries"] >= 1
        assert lane["down_s"] is None and not lane["paused"]
        assert lane["counters"].get("rejected", 0) == 0
    else:
        assert counters["record_write_retries"] >= 1 and counters["record_write_outages"] >= 1
    assert counters.get("records_rejected", 0) == counters.get("records_degraded", 0) == 0
    assert counters["route_retries"] >= 1  # routing waited too (it reads finished runs)
    assert counters.get("loop_restarts", 0) == 0  # and no loop of the router broke
    print(
        f"\n{ops_sink}: {len(sent)} events, {during} sent during a {outage_s:.1f}s outage; "
        f"{len(runs)} run rows, {len(rows['events'])} event rows; counters {counters}"
    )
