"""Unit tests of the embedded bus's broker state, :class:`EmbeddedLog` (no Ray)."""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter

import pytest

from fxray.bus import OutgoingRecord, Record, TopicPartition
from fxray.bus.embedded import (
    EmbeddedBroker,
    EmbeddedLog,
    UnknownMemberError,
    range_assign,
    to_out_rows,
    to_records,
)

T = "events"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def elog(clock: FakeClock) -> EmbeddedLog:
    return EmbeddedLog(default_partitions=4, session_timeout_s=10.0, clock=clock)


def recs(n: int, key: bytes | None = None, start: int = 0) -> list[OutgoingRecord]:
    return [OutgoingRecord(value=str(start + i).encode(), key=key) for i in range(n)]


def tps(*parts: int, topic: str = T) -> list[TopicPartition]:
    return [(topic, p) for p in parts]


# ---------------------------------------------------------------------- topics and produce


def test_ensure_topic_is_idempotent_and_never_shrinks(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 3)
    elog.ensure_topic(T, 3)
    assert elog.end_offsets(T) == {0: 0, 1: 0, 2: 0}
    elog.ensure_topic(T, 2)
    assert elog.topics() == {T: 3}
    elog.ensure_topic(T, 5)
    assert elog.topics() == {T: 5}
    with pytest.raises(ValueError):
        elog.ensure_topic("x", 0)


def test_produce_auto_creates_topic_and_assigns_offsets(elog: EmbeddedLog) -> None:
    out = elog.produce(T, recs(8))
    assert elog.topics() == {T: 4}
    # No key: round-robin over partitions, offsets = index in the partition.
    assert out == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1), (3, 1)]
    assert elog.end_offsets(T) == {0: 2, 1: 2, 2: 2, 3: 2}
    # Round-robin continues across batches.
    assert elog.produce(T, recs(1)) == [(0, 2)]
    assert elog.end_offsets("unknown") == {}


def test_keyed_partitioning_is_stable_crc32(elog: EmbeddedLog) -> None:
    keys = [f"k{i}".encode() for i in range(50)]
    first = [elog.produce(T, [OutgoingRecord(b"v", key=k)])[0][0] for k in keys]
    second = [elog.produce(T, [OutgoingRecord(b"v", key=k)])[0][0] for k in keys]
    assert first == second == [zlib.crc32(k) % 4 for k in keys]
    assert len(set(first)) == 4  # keys spread over partitions


def test_records_keep_key_value_headers_timestamp(elog: EmbeddedLog) -> None:
    headers = [("ce_type", b"a.b"), ("ce_id", b"1")]
    elog.produce(T, [OutgoingRecord(b"payload", key=b"k", headers=headers)])
    p = zlib.crc32(b"k") % 4
    [rec] = elog.read(T, p, 0, 10)
    assert isinstance(rec, Record)
    assert (rec.topic, rec.partition, rec.offset) == (T, p, 0)
    assert (rec.key, rec.value, rec.headers) == (b"k", b"payload", headers)
    assert rec.timestamp_ms > 1_600_000_000_000
    assert rec.headers is not headers  # copied, not aliased with the producer's list


def test_read_ranges(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 1)
    elog.produce(T, recs(10))
    assert [r.offset for r in elog.read(T, 0, 3, 4)] == [3, 4, 5, 6]
    assert [r.offset for r in elog.read(T, 0, 8, 100)] == [8, 9]
    assert elog.read(T, 0, 10, 5) == []
    assert elog.read(T, 5, 0, 5) == []
    assert elog.read("nope", 0, 0, 5) == []


# ---------------------------------------------------------------------- assignment


def test_range_assign_function() -> None:
    assert range_assign(["b", "a"], 4, T) == {"a": tps(0, 1), "b": tps(2, 3)}
    assert range_assign(["c", "a", "b"], 4, T) == {"a": tps(0, 1), "b": tps(2), "c": tps(3)}
    assert range_assign(["a", "b", "c"], 2, T) == {"a": tps(0), "b": tps(1), "c": []}
    assert range_assign([], 4, T) == {}


def test_assignment_with_one_two_three_members(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 4)
    elog.join("g", "m1", [T])
    assert elog.assignment("g", "m1") == tps(0, 1, 2, 3)
    gen1 = elog.generation("g")

    elog.join("g", "m2", [T])
    assert elog.assignment("g", "m1") == tps(0, 1)
    assert elog.assignment("g", "m2") == tps(2, 3)
    assert elog.generation("g") == gen1 + 1

    elog.join("g", "m3", [T])
    assert elog.assignment("g", "m1") == tps(0, 1)
    assert elog.assignment("g", "m2") == tps(2)
    assert elog.assignment("g", "m3") == tps(3)
    assert elog.members("g") == ["m1", "m2", "m3"]

    elog.leave("g", "m1")
    assert elog.assignment("g", "m2") == tps(0, 1)
    assert elog.assignment("g", "m3") == tps(2, 3)
    assert elog.assignment("g", "m1") == []
    assert elog.generation("g") == gen1 + 3
    elog.leave("g", "m1")  # unknown: no-op, no rebalance
    assert elog.generation("g") == gen1 + 3


def test_assignment_sorted_by_member_id_not_join_order(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 4)
    elog.join("g", "zz", [T])
    elog.join("g", "aa", [T])
    assert elog.assignment("g", "aa") == tps(0, 1)
    assert elog.assignment("g", "zz") == tps(2, 3)


def test_assignment_per_topic_and_subscription(elog: EmbeddedLog) -> None:
    elog.ensure_topic("a", 2)
    elog.ensure_topic("b", 3)
    elog.join("g", "m1", ["a", "b"])
    elog.join("g", "m2", ["b"])
    assert elog.assignment("g", "m1") == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert elog.assignment("g", "m2") == [("b", 2)]
    # Groups are independent.
    elog.join("h", "x", ["a"])
    assert elog.assignment("h", "x") == [("a", 0), ("a", 1)]


def test_topic_created_or_grown_after_join_is_assigned(elog: EmbeddedLog) -> None:
    elog.join("g", "m1", [T])
    assert elog.assignment("g", "m1") == []
    elog.produce(T, recs(1))  # auto-creates with 4 partitions
    assert elog.assignment("g", "m1") == tps(0, 1, 2, 3)
    elog.ensure_topic(T, 6)
    assert elog.assignment("g", "m1") == tps(0, 1, 2, 3, 4, 5)


# ---------------------------------------------------------------------- fetch


def test_fetch_returns_in_order_and_advances(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 1)
    elog.produce(T, recs(10))
    elog.join("g", "m", [T])
    got, assignment = elog.fetch("g", "m", 4, set())
    assert assignment == tps(0)
    assert [r.offset for r in got] == [0, 1, 2, 3]
    got, _ = elog.fetch("g", "m", 100, set())
    assert [r.offset for r in got] == list(range(4, 10))
    assert elog.fetch("g", "m", 100, set())[0] == []
    assert elog.positions("g", "m") == {(T, 0): 10}


def test_fetch_is_fair_across_partitions(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 4)
    for p in range(4):
        # Key chosen so it lands on partition p.
        key = next(k for k in (f"k{i}".encode() for i in range(1000)) if zlib.crc32(k) % 4 == p)
        elog.produce(T, recs(100, key=key))
    elog.join("g", "m", [T])
    got, _ = elog.fetch("g", "m", 40, set())
    assert Counter(r.partition for r in got) == {0: 10, 1: 10, 2: 10, 3: 10}
    # Fewer records than partitions: the starting partition rotates between fetches.
    seen = Counter()
    for _ in range(4):
        got, _ = elog.fetch("g", "m", 1, set())
        seen.update(r.partition for r in got)
    assert seen == {0: 1, 1: 1, 2: 1, 3: 1}


def test_fetch_fills_from_other_partitions_when_one_runs_dry(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 2)
    elog.produce(T, [OutgoingRecord(b"x", key=None)])  # partition 0 gets 1 record
    elog.produce(T, [OutgoingRecord(b"y")] * 0)
    k1 = next(k for k in (f"k{i}".encode() for i in range(1000)) if zlib.crc32(k) % 2 == 1)
    elog.produce(T, recs(50, key=k1))
    elog.join("g", "m", [T])
    got, _ = elog.fetch("g", "m", 20, set())
    assert len(got) == 20
    assert Counter(r.partition for r in got) == {0: 1, 1: 19}
    # Per partition, offsets are contiguous and ordered.
    assert [r.offset for r in got if r.partition == 1] == list(range(19))


def test_fetch_unknown_member_raises(elog: EmbeddedLog) -> None:
    with pytest.raises(UnknownMemberError):
        elog.fetch("g", "nobody", 10, set())


def test_pause_and_resume(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 2)
    elog.produce(T, recs(10))  # 5 per partition
    elog.join("g", "m", [T])
    got, assignment = elog.fetch("g", "m", 100, {(T, 0)})
    assert assignment == tps(0, 1)  # paused partitions stay assigned
    assert {r.partition for r in got} == {1}
    assert len(got) == 5
    got, _ = elog.fetch("g", "m", 100, set())
    assert {r.partition for r in got} == {0}
    assert [r.offset for r in got] == [0, 1, 2, 3, 4]  # resumed where it was


# ---------------------------------------------------------------------- commits and rebalances


def test_commit_and_committed_and_lag(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 2)
    elog.produce(T, recs(10))
    elog.join("g", "m", [T])
    assert elog.committed("g", T) == {0: 0, 1: 0}
    assert elog.lag("g", T) == 10
    assert elog.commit("g", "m", {(T, 0): 3, (T, 1): 5}) == set()
    assert elog.committed("g", T) == {0: 3, 1: 5}
    assert elog.lag("g", T) == 2
    assert elog.committed("other", T) == {0: 0, 1: 0}
    assert elog.lag("other", T) == 10
    assert elog.committed("g", "unknown") == {}
    assert elog.lag("g", "unknown") == 0


def test_commit_refused_for_unowned_partitions(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 4)
    elog.produce(T, recs(8))
    elog.join("g", "m1", [T])
    elog.join("g", "m2", [T])  # m1: 0,1  m2: 2,3
    refused = elog.commit("g", "m1", {(T, 0): 1, (T, 2): 2})
    assert refused == {(T, 2)}
    assert elog.committed("g", T) == {0: 1, 1: 0, 2: 0, 3: 0}
    # An unknown (e.g. expired) member gets everything refused.
    assert elog.commit("g", "ghost", {(T, 0): 2}) == {(T, 0)}
    assert elog.commit("nogroup", "m1", {(T, 0): 2}) == {(T, 0)}
    assert elog.committed("g", T)[0] == 1


def test_reassigned_partitions_restart_at_committed_offset(elog: EmbeddedLog) -> None:
    """At-least-once: records fetched but not committed are redelivered to the new owner."""
    elog.ensure_topic(T, 2)
    elog.produce(T, recs(20))  # 10 per partition
    elog.join("g", "m1", [T])
    got, _ = elog.fetch("g", "m1", 100, set())
    assert len(got) == 20
    elog.commit("g", "m1", {(T, 0): 4, (T, 1): 7})
    elog.join("g", "m2", [T])  # m1 keeps partition 0, m2 takes partition 1
    assert elog.assignment("g", "m2") == tps(1)
    # The member keeping a partition keeps its position.
    assert elog.positions("g", "m1") == {(T, 0): 10}
    got, _ = elog.fetch("g", "m2", 100, set())
    assert [(r.partition, r.offset) for r in got] == [(1, o) for o in range(7, 10)]
    # m2 leaves without committing: m1 gets partition 1 back from the committed offset.
    elog.leave("g", "m2")
    assert elog.positions("g", "m1") == {(T, 0): 10, (T, 1): 7}
    got, _ = elog.fetch("g", "m1", 100, set())
    assert [(r.partition, r.offset) for r in got] == [(1, o) for o in range(7, 10)]


def test_new_member_after_all_left_resumes_from_commit(elog: EmbeddedLog) -> None:
    elog.ensure_topic(T, 1)
    elog.produce(T, recs(10))
    elog.join("g", "m1", [T])
    elog.fetch("g", "m1", 6, set())
    elog.commit("g", "m1", {(T, 0): 6})
    elog.leave("g", "m1")
    assert elog.members("g") == []
    assert elog.commit("g", "m1", {(T, 0): 9}) == {(T, 0)}  # left: refused
    elog.join("g", "m2", [T])
    got, _ = elog.fetch("g", "m2", 100, set())
    assert [r.offset for r in got] == [6, 7, 8, 9]


def test_session_expiry_rebalances_to_live_members(elog: EmbeddedLog, clock: FakeClock) -> None:
    elog.ensure_topic(T, 4)
    elog.produce(T, recs(8))
    elog.join("g", "m1", [T])
    elog.join("g", "m2", [T])
    elog.fetch("g", "m2", 100, set())
    elog.commit("g", "m2", {(T, 2): 1})
    clock.now += 6
    elog.fetch("g", "m1", 100, set())  # m1 stays alive
    clock.now += 6  # m2 silent for 12 s > 10 s
    got, assignment = elog.fetch("g", "m1", 100, set())
    assert assignment == tps(0, 1, 2, 3)
    assert elog.members("g") == ["m1"]
    # m2's partitions come from the committed offsets.
    assert sorted((r.partition, r.offset) for r in got) == [(2, 1), (3, 0), (3, 1)]
    with pytest.raises(UnknownMemberError):
        elog.fetch("g", "m2", 100, set())
    assert elog.commit("g", "m2", {(T, 3): 2}) == {(T, 3)}


def test_heartbeat_keeps_member_alive(elog: EmbeddedLog, clock: FakeClock) -> None:
    elog.join("g", "m1", [T])
    for _ in range(5):
        clock.now += 8
        assert elog.heartbeat("g", "m1")
    assert elog.expire_members() == []
    clock.now += 11
    assert elog.expire_members() == [("g", "m1")]
    assert not elog.heartbeat("g", "m1")


def test_rejoin_changes_subscription(elog: EmbeddedLog) -> None:
    elog.ensure_topic("a", 1)
    elog.ensure_topic("b", 1)
    elog.join("g", "m", ["a"])
    assert elog.assignment("g", "m") == [("a", 0)]
    elog.join("g", "m", ["b", "b"])
    assert elog.assignment("g", "m") == [("b", 0)]
    assert elog.members("g") == ["m"]


# ---------------------------------------------------------------------- wire rows


def test_rows_round_trip(elog: EmbeddedLog) -> None:
    out = [OutgoingRecord(b"a", key=b"k", headers=[("h", b"1")]), OutgoingRecord(b"b")]
    elog.ensure_topic(T, 1)
    assert elog.produce_rows(T, to_out_rows(out)) == [(0, 0), (0, 1)]
    rows = elog.read_rows(T, 0, 0, 10)
    assert rows[0][:6] == (T, 0, 0, b"k", b"a", [("h", b"1")])
    assert to_records(rows) == elog.read(T, 0, 0, 10)
    elog.join("g", "m", [T])
    fetched, _ = elog.fetch_rows("g", "m", 10, set())
    assert fetched == rows


# ---------------------------------------------------------------------- the actor class, no Ray


def test_broker_long_poll_wakes_on_produce() -> None:
    async def scenario() -> None:
        broker = EmbeddedBroker(default_partitions=2, session_timeout_s=10.0)
        await broker.join("g", "m", [T])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await broker.fetch("g", "m", 10, 0.2) == ([], [])  # topic not created yet
        assert loop.time() - t0 >= 0.19
        waiter = asyncio.create_task(broker.fetch("g", "m", 10, 5.0))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        t0 = loop.time()
        await broker.produce(T, [OutgoingRecord(b"x")])  # creates the topic: m is assigned it
        rows, assignment = await asyncio.wait_for(waiter, 1.0)
        assert loop.time() - t0 < 0.5
        assert [r[4] for r in rows] == [b"x"]
        assert assignment == tps(0, 1)

    asyncio.run(scenario())


def test_broker_long_poll_keeps_session_alive_and_rejoins() -> None:
    async def scenario() -> None:
        broker = EmbeddedBroker(default_partitions=2, session_timeout_s=0.3)
        await broker.ensure_topic(T, 2)
        await broker.join("g", "a", [T])
        await broker.join("g", "b", [T])
        # a long-polls for longer than the session timeout; b stays silent and expires.
        rows, assignment = await broker.fetch("g", "a", 10, 0.8)
        assert rows == []
        assert assignment == tps(0, 1)
        assert await broker.members("g") == ["a"]
        # Unknown member: an error without topics, a rejoin with them.
        with pytest.raises(UnknownMemberError):
            await broker.fetch("g", "b", 10, 0)
        _, assignment = await broker.fetch("g", "b", 10, 0, topics=[T])
        assert assignment == tps(1)

    asyncio.run(scenario())
