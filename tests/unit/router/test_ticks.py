"""The scheduler loop against schedules it cannot fire: an unreadable cron, params that are
not an object or make a tick over the event limits, a bus that refuses for a while. Each is
that schedule's trouble alone, reported once; every other schedule goes on ticking.

The loop runs on a SQLite state store and a fake bus; schedules are made due by moving their
``next_fire_at`` into the past, and odd values are written past the store's checks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update

from fxray.bus import OutgoingRecord
from fxray.router import ticks
from fxray.settings import Settings
from fxray.store import StateStore
from fxray.store.models import ScheduleRow

MAX_EVENT_BYTES = 4096


class FakeBus:
    def __init__(self) -> None:
        self.ticks: list[dict[str, Any]] = []
        self.refuse = 0  # the next this many produce calls fail

    async def produce_async(self, topic: str, records: list[OutgoingRecord]) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            raise ConnectionError("the bus is away")
        self.ticks.extend(json.loads(r.value) for r in records)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    state.upsert_service("svc")
    yield state
    state.close()


def _due(store: StateStore, schedule_id: str, **values: Any) -> None:
    """Make a schedule due now, and write ``values`` as they are."""
    with store.session() as s:
        s.execute(
            update(ScheduleRow)
            .where(ScheduleRow.id == schedule_id)
            .values(next_fire_at=time.time() - 1, **values)
        )


def _schedule(store: StateStore, schedule_id: str, **values: Any) -> str:
    store.upsert_schedule("svc", "* * * * * *", schedule_id=schedule_id)  # every second
    _due(store, schedule_id, **values)
    return schedule_id


def _run(
    store: StateStore, bus: FakeBus, tmp_path: Path, until: Any
) -> tuple[Counter[str], list[str]]:
    counters: Counter[str] = Counter()
    errors: list[str] = []
    settings = Settings(home=tmp_path, max_event_bytes=MAX_EVENT_BYTES)
    snapshot = SimpleNamespace(services={})
    deadline = time.monotonic() + 15

    def running() -> bool:
        return time.monotonic() < deadline and not until(counters, bus)

    asyncio.run(
        ticks.publish_ticks(
            settings,
            bus,
            store,
            lambda: snapshot,
            counters,
            errors.append,
            running,  # type: ignore[arg-type]
        )
    )
    return counters, errors


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ticks, "CHECK_EVERY_S", 0.02)


def _fired(bus: FakeBus, schedule_id: str) -> int:
    return sum(t["data"]["schedule_id"] == schedule_id for t in bus.ticks)


@pytest.mark.parametrize(
    ("trouble", "values"),
    [
        ("cron", {"cron": "61 * * * *"}),
        ("cron", {"cron": ""}),
        ("params", {"params": [1, 2, 3]}),
        ("params", {"params": {"blob": "x" * MAX_EVENT_BYTES}}),  # a tick over the size limit
        ("params", {"params": {"deep": json.loads("[" * 80 + "]" * 80)}}),  # too deep
    ],
)
def test_one_broken_schedule_stops_no_other(
    store: StateStore, tmp_path: Path, trouble: str, values: dict[str, Any]
) -> None:
    bad = _schedule(store, "a-bad", **values)  # claimed first: ids in order
    good = _schedule(store, "b-good")
    bus = FakeBus()
    counters, errors = _run(store, bus, tmp_path, lambda c, b: _fired(b, good) >= 2)
    assert _fired(bus, good) >= 2  # ticked on, once a second
    assert _fired(bus, bad) == 0
    if trouble == "cron":  # read again on every turn (~100 here), counted once
        assert counters["schedule_errors"] == 1
    else:  # each tick that could not be sent
        assert counters["schedule_errors"] >= 1
    reports = [e for e in errors if bad in e]
    assert len(reports) == 1  # once, not every half second
    assert ("cannot be read" if trouble == "cron" else "not a valid event") in reports[0]


def test_ticks_the_bus_refused_are_sent_later_the_newest_per_schedule(
    store: StateStore, tmp_path: Path
) -> None:
    first, second = _schedule(store, "a"), _schedule(store, "b")
    bus = FakeBus()
    bus.refuse = 125  # 2.5 s of turns: each schedule claims two ticks or more meanwhile
    counters, errors = _run(
        store, bus, tmp_path, lambda c, b: b.refuse == 0 and _fired(b, first) and _fired(b, second)
    )
    assert _fired(bus, first) >= 1 and _fired(bus, second) >= 1
    ids = [t["id"] for t in bus.ticks]
    assert len(ids) == len(set(ids))  # no tick twice
    assert counters["schedule_ticks"] == len(bus.ticks)
    # only the newest tick per schedule waits: the older ones were not back-filled
    assert counters["schedule_ticks_superseded"] >= 2
    assert any("the bus is away" in e for e in errors)
    assert counters["schedule_errors"] == 0
