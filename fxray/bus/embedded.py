"""The embedded event bus: a Kafka-like broker held by one Ray actor, so fxray needs no broker.

Three layers:

* :class:`EmbeddedLog` -- the broker's state in plain Python (no Ray): topics of partitions,
  each an append-only list of records; consumer groups with Kafka's range assignor, per-member
  fetch positions, committed offsets, session expiry.
* :class:`EmbeddedBroker` -- the async Ray actor that owns one ``EmbeddedLog`` and adds
  long-polling fetches.
* :class:`EmbeddedBus` / :class:`EmbeddedConsumer` -- picklable client handles implementing the
  :class:`~fxray.bus.EventBus` and :class:`~fxray.bus.Consumer` protocols.

Semantics follow Kafka (and the confluent-kafka bus that shares the protocol):

* A key is placed on partition ``zlib.crc32(key) % partitions`` (librdkafka's
  ``consistent_random`` partitioner is CRC32 too); records without a key go round-robin.
* A committed offset is the offset of the *next* record to read.
* A partition (re)assigned to a member is read from the group's committed offset (0 if none),
  so records fetched but not committed by the previous owner are delivered again: at-least-once.
  A member that keeps a partition across a rebalance keeps its position.
* Commits for partitions the member does not own (any more) are refused.
* Members that have not fetched for ``session_timeout_s`` are expired and their partitions move.
* Nothing is persisted: the log lives as long as the actor.

Between clients and the actor, records travel as plain tuples (:data:`Row`, :data:`OutRow`):
pickling a list of tuples is about ten times cheaper than a list of dataclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import starmap
from typing import Any, TypeAlias

import ray

from fxray.bus import OutgoingRecord, Record, TopicPartition

__all__ = [
    "DEFAULT_BUS_NAME",
    "EmbeddedBroker",
    "EmbeddedBus",
    "EmbeddedConsumer",
    "EmbeddedLog",
    "OutRow",
    "Row",
    "UnknownMemberError",
    "range_assign",
    "to_out_rows",
    "to_records",
]

log = logging.getLogger(__name__)

DEFAULT_BUS_NAME = "fxray-bus"

Row: TypeAlias = tuple[str, int, int, bytes | None, bytes, list[tuple[str, bytes]], int]
"""A stored record as a tuple in :class:`~fxray.bus.Record` field order:
``(topic, partition, offset, key, value, headers, timestamp_ms)``."""

OutRow: TypeAlias = tuple[bytes, bytes | None, list[tuple[str, bytes]]]
"""A record to produce as a tuple: ``(value, key, headers)``."""


def to_out_rows(records: list[OutgoingRecord]) -> list[OutRow]:
    """OutgoingRecords as wire tuples."""
    return [(r.value, r.key, r.headers) for r in records]


def to_records(rows: Iterable[Row]) -> list[Record]:
    """Wire tuples as Records."""
    return list(starmap(Record, rows))


class UnknownMemberError(KeyError):
    """The member is not (or no longer) in the group, e.g. its session expired."""


def range_assign(
    members: Iterable[str], partitions: int, topic: str
) -> dict[str, list[TopicPartition]]:
    """Kafka's range assignor for one topic: sorted members get contiguous partition ranges.

    With ``n`` partitions and ``k`` members each member gets ``n // k`` partitions and the first
    ``n % k`` members (in sorted order) one more.
    """
    ordered = sorted(members)
    result: dict[str, list[TopicPartition]] = {m: [] for m in ordered}
    if not ordered:
        return result
    per, extra = divmod(partitions, len(ordered))
    start = 0
    for i, member in enumerate(ordered):
        count = per + (1 if i < extra else 0)
        result[member] = [(topic, p) for p in range(start, start + count)]
        start += count
    return result


@dataclass(slots=True)
class _Member:
    topics: list[str]
    last_seen: float
    assignment: list[TopicPartition] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    cursor: int = 0  # round-robin start among partitions, advanced on every fetch


@dataclass(slots=True)
class _Group:
    members: dict[str, _Member] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    generation: int = 0


class EmbeddedLog:
    """The embedded broker's state: partitioned append-only logs and consumer groups.

    Pure Python and single-threaded; :class:`EmbeddedBroker` serialises access to it.
    ``clock`` (monotonic seconds) is injectable for tests of session expiry.
    """

    def __init__(
        self,
        default_partitions: int = 4,
        session_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if default_partitions < 1:
            raise ValueError("default_partitions must be >= 1")
        self.default_partitions = default_partitions
        self.session_timeout_s = session_timeout_s
        self._clock = clock
        self._topics: dict[str, list[list[Row]]] = {}
        self._round_robin: dict[str, int] = {}
        self._groups: dict[str, _Group] = {}

    # ----------------------------------------------------------------- topics and records

    def topics(self) -> dict[str, int]:
        """Topic names and their partition counts."""
        return {name: len(parts) for name, parts in self._topics.items()}

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions, or grow it; never shrinks."""
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        parts = self._topics.get(topic)
        if parts is None:
            self._topics[topic] = [[] for _ in range(partitions)]
            self._round_robin[topic] = 0
        elif partitions > len(parts):
            parts.extend([] for _ in range(partitions - len(parts)))
        else:
            return
        for group in self._groups.values():
            if any(topic in m.topics for m in group.members.values()):
                self._rebalance(group)

    def produce(self, topic: str, records: list[OutgoingRecord]) -> list[tuple[int, int]]:
        """Append records; returns ``(partition, offset)`` per record, in order.

        A missing topic is created with the default partition count.
        """
        return self.produce_rows(topic, [(r.value, r.key, list(r.headers)) for r in records])

    def produce_rows(self, topic: str, rows: Iterable[OutRow]) -> list[tuple[int, int]]:
        """Like :meth:`produce`, with ``(value, key, headers)`` tuples."""
        if topic not in self._topics:
            self.ensure_topic(topic, self.default_partitions)
        parts = self._topics[topic]
        n = len(parts)
        rr = self._round_robin[topic]
        now_ms = int(time.time() * 1000)
        out: list[tuple[int, int]] = []
        for value, key, headers in rows:
            if key is None:
                p = rr % n
                rr += 1
            else:
                p = zlib.crc32(key) % n
            part = parts[p]
            offset = len(part)
            part.append((topic, p, offset, key, value, headers, now_ms))
            out.append((p, offset))
        self._round_robin[topic] = rr % n
        return out

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written, per partition (empty for an unknown topic)."""
        return {p: len(part) for p, part in enumerate(self._topics.get(topic, []))}

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Read without a consumer group (tools and tests)."""
        return to_records(self.read_rows(topic, partition, offset, max_records))

    def read_rows(self, topic: str, partition: int, offset: int, max_records: int) -> list[Row]:
        """Like :meth:`read`, returning :data:`Row` tuples."""
        parts = self._topics.get(topic)
        if parts is None or not 0 <= partition < len(parts):
            return []
        return parts[partition][max(offset, 0) : max(offset, 0) + max(max_records, 0)]

    # ----------------------------------------------------------------- consumer groups

    def join(self, group: str, member_id: str, topics: list[str]) -> None:
        """Add (or re-subscribe) a member and rebalance the group."""
        self.expire_members()
        g = self._groups.setdefault(group, _Group())
        member = g.members.get(member_id)
        if member is None:
            g.members[member_id] = _Member(
                topics=list(dict.fromkeys(topics)), last_seen=self._clock()
            )
        else:  # a new instance under a known (static) id: it reads on from the commits
            member.topics = list(dict.fromkeys(topics))
            member.last_seen = self._clock()
            member.positions = {}
        self._rebalance(g)

    def leave(self, group: str, member_id: str) -> None:
        """Remove a member (no-op if unknown) and rebalance the group."""
        g = self._groups.get(group)
        if g is None or g.members.pop(member_id, None) is None:
            return
        self._rebalance(g)

    def is_member(self, group: str, member_id: str) -> bool:
        """Whether ``member_id`` is currently in ``group``."""
        g = self._groups.get(group)
        return g is not None and member_id in g.members

    def members(self, group: str) -> list[str]:
        """The group's member ids, sorted."""
        g = self._groups.get(group)
        return sorted(g.members) if g else []

    def generation(self, group: str) -> int:
        """The group's generation; bumps on every rebalance."""
        g = self._groups.get(group)
        return g.generation if g else 0

    def assignment(self, group: str, member_id: str) -> list[TopicPartition]:
        """The partitions currently assigned to a member (empty if unknown)."""
        g = self._groups.get(group)
        member = g.members.get(member_id) if g else None
        return list(member.assignment) if member else []

    def positions(self, group: str, member_id: str) -> dict[TopicPartition, int]:
        """A member's fetch positions (next offset it will be given), per assigned partition."""
        member = self._member(group, member_id)
        return dict(member.positions)

    def heartbeat(self, group: str, member_id: str) -> bool:
        """Refresh a member's liveness; returns whether it is (still) a member."""
        g = self._groups.get(group)
        member = g.members.get(member_id) if g else None
        if member is None:
            return False
        member.last_seen = self._clock()
        return True

    def expire_members(self) -> list[tuple[str, str]]:
        """Remove members silent for longer than the session timeout; returns who was removed."""
        deadline = self._clock() - self.session_timeout_s
        expired: list[tuple[str, str]] = []
        for name, g in self._groups.items():
            gone = [mid for mid, m in g.members.items() if m.last_seen < deadline]
            if not gone:
                continue
            for mid in gone:
                del g.members[mid]
                expired.append((name, mid))
            self._rebalance(g)
        for name, mid in expired:
            log.info("embedded bus: member %s of group %s expired", mid, name)
        return expired

    def fetch(
        self,
        group: str,
        member_id: str,
        max_records: int,
        paused: set[TopicPartition] | frozenset[TopicPartition] = frozenset(),
    ) -> tuple[list[Record], list[TopicPartition]]:
        """Return up to ``max_records`` records from the member's assigned, unpaused partitions.

        See :meth:`fetch_rows`.
        """
        rows, assignment = self.fetch_rows(group, member_id, max_records, paused)
        return to_records(rows), assignment

    def fetch_rows(
        self,
        group: str,
        member_id: str,
        max_records: int,
        paused: set[TopicPartition] | frozenset[TopicPartition] = frozenset(),
    ) -> tuple[list[Row], list[TopicPartition]]:
        """Return up to ``max_records`` records from the member's assigned, unpaused partitions.

        Partitions are served round-robin (the starting partition rotates between calls) so no
        partition starves; records of one partition come in offset order. Advances the member's
        positions and refreshes its session. Raises :class:`UnknownMemberError` if the member
        is not in the group (never joined, left, or expired).
        """
        self.expire_members()
        member = self._member(group, member_id)
        member.last_seen = self._clock()
        active: list[tuple[TopicPartition, list[Row], int]] = []
        n_assigned = len(member.assignment)
        for i in range(n_assigned):
            tp = member.assignment[(member.cursor + i) % n_assigned]
            if tp in paused:
                continue
            part = self._topics[tp[0]][tp[1]]
            pos = member.positions[tp]
            if pos < len(part):
                active.append((tp, part, pos))
        if n_assigned:
            member.cursor = (member.cursor + 1) % n_assigned
        out: list[Row] = []
        remaining = max(max_records, 0)
        while remaining > 0 and active:
            # Give every partition with data an equal share, round-robin; partitions with less
            # than their share free the rest for the next round.
            share = max(1, remaining // len(active))
            still: list[tuple[TopicPartition, list[Row], int]] = []
            for tp, part, pos in active:
                take = min(share, remaining, len(part) - pos)
                if take <= 0:
                    still.append((tp, part, pos))
                    continue
                out.extend(part[pos : pos + take])
                pos += take
                remaining -= take
                member.positions[tp] = pos
                if pos < len(part):
                    still.append((tp, part, pos))
            active = still
        return out, list(member.assignment)

    def commit(
        self, group: str, member_id: str, offsets: dict[TopicPartition, int]
    ) -> set[TopicPartition]:
        """Commit next-offsets-to-read for partitions the member owns.

        Offsets for partitions the member does not own (or from an unknown member) are ignored;
        returns the set of refused partitions (empty when everything was committed).
        """
        g = self._groups.get(group)
        member = g.members.get(member_id) if g else None
        if g is None or member is None:
            return set(offsets)
        owned = set(member.assignment)
        refused: set[TopicPartition] = set()
        for tp, offset in offsets.items():
            tp = (tp[0], tp[1])
            if tp in owned and offset >= 0:
                g.committed[tp] = int(offset)
            else:
                refused.add(tp)
        return refused

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets per partition of ``topic`` (0 where none)."""
        g = self._groups.get(group)
        committed = g.committed if g else {}
        return {p: committed.get((topic, p), 0) for p in range(len(self._topics.get(topic, [])))}

    def lag(self, group: str, topic: str) -> int:
        """Records not yet committed by ``group`` on ``topic``: sum of (end - committed)."""
        ends = self.end_offsets(topic)
        committed = self.committed(group, topic)
        return sum(max(0, end - committed[p]) for p, end in ends.items())

    # ----------------------------------------------------------------- internals

    def _member(self, group: str, member_id: str) -> _Member:
        g = self._groups.get(group)
        member = g.members.get(member_id) if g else None
        if member is None:
            raise UnknownMemberError(f"{member_id!r} is not a member of group {group!r}")
        return member

    def _rebalance(self, g: _Group) -> None:
        """Recompute the group's assignment (range assignor per topic); bump the generation."""
        g.generation += 1
        new: dict[str, list[TopicPartition]] = {mid: [] for mid in g.members}
        topics = sorted({t for m in g.members.values() for t in m.topics})
        for topic in topics:
            parts = self._topics.get(topic)
            if parts is None:
                continue  # assigned once the topic exists
            subscribers = [mid for mid, m in g.members.items() if topic in m.topics]
            for mid, tps in range_assign(subscribers, len(parts), topic).items():
                new[mid].extend(tps)
        for mid, member in g.members.items():
            old_positions = member.positions
            member.assignment = new[mid]
            member.positions = {
                tp: old_positions[tp] if tp in old_positions else g.committed.get(tp, 0)
                for tp in member.assignment
            }
            member.cursor = 0


# --------------------------------------------------------------------- the Ray actor


class EmbeddedBroker:
    """The Ray actor holding an :class:`EmbeddedLog`; fetches are long polls.

    An async actor: every method runs on the actor's event loop, so the log needs no locks.
    Use :meth:`EmbeddedBus.start` rather than creating it directly.
    """

    def __init__(self, default_partitions: int = 4, session_timeout_s: float = 10.0) -> None:
        self._log = EmbeddedLog(default_partitions, session_timeout_s)
        # Set (and replaced) on every change that may make a waiting fetch succeed.
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def ping(self) -> bool:
        return True

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        self._log.ensure_topic(topic, partitions)
        self._notify()

    async def produce(self, topic: str, records: list[OutgoingRecord]) -> list[tuple[int, int]]:
        """Append records; returns ``(partition, offset)`` per record."""
        out = self._log.produce(topic, records)
        if out:
            self._notify()
        return out

    async def produce_rows(self, topic: str, rows: list[OutRow]) -> list[tuple[int, int]]:
        """Like :meth:`produce`, with :data:`OutRow` tuples (cheaper to ship)."""
        out = self._log.produce_rows(topic, rows)
        if out:
            self._notify()
        return out

    async def join(self, group: str, member_id: str, topics: list[str]) -> list[TopicPartition]:
        self._log.join(group, member_id, topics)
        self._notify()
        return self._log.assignment(group, member_id)

    async def leave(self, group: str, member_id: str) -> None:
        self._log.leave(group, member_id)
        self._notify()

    async def fetch(
        self,
        group: str,
        member_id: str,
        max_records: int,
        timeout_s: float,
        paused: Iterable[TopicPartition] = (),
        topics: list[str] | None = None,
    ) -> tuple[list[Row], list[TopicPartition]]:
        """Long-poll fetch: wait up to ``timeout_s`` for records if none are ready.

        Returns :data:`Row` tuples (cheaper to ship than Records) and the member's assignment.

        With ``topics`` given, a member that is unknown (e.g. expired) joins again first, like a
        Kafka consumer rejoining after a session timeout; otherwise that raises
        :class:`UnknownMemberError`.
        """
        paused_set = frozenset((t, p) for t, p in paused)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        # Wake at least this often to refresh the session and notice expiries of others.
        slice_s = max(0.05, self._log.session_timeout_s / 3)
        while True:
            if self._log.expire_members():
                self._notify()  # survivors waiting in a fetch pick up the freed partitions
            changed = self._changed
            if topics is not None and not self._log.is_member(group, member_id):
                self._log.join(group, member_id, topics)
                self._notify()
                changed = self._changed
            records, assignment = self._log.fetch_rows(group, member_id, max_records, paused_set)
            remaining = deadline - loop.time()
            if records or remaining <= 0 or max_records <= 0:
                return records, assignment
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, slice_s))

    async def commit(
        self, group: str, member_id: str, offsets: dict[TopicPartition, int]
    ) -> set[TopicPartition]:
        return self._log.commit(group, member_id, offsets)

    async def assignment(self, group: str, member_id: str) -> list[TopicPartition]:
        return self._log.assignment(group, member_id)

    async def members(self, group: str) -> list[str]:
        return self._log.members(group)

    async def generation(self, group: str) -> int:
        return self._log.generation(group)

    async def topics(self) -> dict[str, int]:
        return self._log.topics()

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return self._log.end_offsets(topic)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return self._log.committed(group, topic)

    async def lag(self, group: str, topic: str) -> int:
        return self._log.lag(group, topic)

    async def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Row]:
        return self._log.read_rows(topic, partition, offset, max_records)


_BrokerActor = ray.remote(EmbeddedBroker)


# --------------------------------------------------------------------- client handles


class EmbeddedConsumer:
    """A consumer-group member of the embedded bus (implements :class:`fxray.bus.Consumer`).

    Lives in the caller's process; not thread-safe. The join request is sent on construction;
    its answer is awaited by the first call that needs it. Use :meth:`poll`/:meth:`commit` from
    sync code (including sync Ray actor methods) and :meth:`poll_async`/:meth:`commit_async`
    from async code (e.g. an async Ray actor) to keep the event loop free.
    """

    def __init__(
        self, broker: Any, group: str, topics: list[str], member_id: str | None = None
    ) -> None:
        self._broker = broker
        self.group = group
        self.topics = list(topics)
        self.member_id = member_id or f"{group}-{uuid.uuid4().hex}"
        self._paused: set[TopicPartition] = set()
        self._assignment: list[TopicPartition] = []
        self._closed = False
        self._join_ref: Any = broker.join.remote(group, self.member_id, self.topics)

    def __repr__(self) -> str:
        return f"EmbeddedConsumer(group={self.group!r}, member_id={self.member_id!r})"

    # sync API -----------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting up to ``timeout_s`` if none are ready."""
        self._check_open()
        if self._join_ref is not None:
            self._assignment = ray.get(self._join_ref)
            self._join_ref = None
        rows, assignment = ray.get(self._fetch_ref(max_records, timeout_s))
        self._set_assignment(assignment)
        return to_records(rows)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-offsets-to-read; offsets for partitions no longer owned are dropped."""
        self._check_open()
        if offsets:
            self._refused(ray.get(self._broker.commit.remote(self.group, self.member_id, offsets)))

    def assignment(self) -> list[TopicPartition]:
        """The partitions assigned at the last join or poll."""
        if self._join_ref is not None:
            self._assignment = ray.get(self._join_ref)
            self._join_ref = None
        return list(self._assignment)

    def pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching from these partitions until resumed (client-side)."""
        self._paused.update((t, p) for t, p in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        """Fetch from these partitions again."""
        self._paused.difference_update((t, p) for t, p in partitions)

    def paused(self) -> list[TopicPartition]:
        """The currently paused partitions."""
        return sorted(self._paused)

    def close(self) -> None:
        """Leave the group (idempotent); its partitions go to the other members."""
        if self._closed:
            return
        self._closed = True
        ray.get(self._broker.leave.remote(self.group, self.member_id))

    # async API ----------------------------------------------------------------------------

    async def poll_async(self, max_records: int, timeout_s: float) -> list[Record]:
        """Like :meth:`poll`, awaiting the actor call instead of blocking."""
        self._check_open()
        if self._join_ref is not None:
            self._assignment = await self._join_ref
            self._join_ref = None
        rows, assignment = await self._fetch_ref(max_records, timeout_s)
        self._set_assignment(assignment)
        return to_records(rows)

    async def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Like :meth:`commit`, awaiting the actor call."""
        self._check_open()
        if offsets:
            self._refused(await self._broker.commit.remote(self.group, self.member_id, offsets))

    async def close_async(self) -> None:
        """Like :meth:`close`, awaiting the actor call."""
        if self._closed:
            return
        self._closed = True
        await self._broker.leave.remote(self.group, self.member_id)

    # context manager ----------------------------------------------------------------------

    def __enter__(self) -> EmbeddedConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ----------------------------------------------------------------------------

    def _fetch_ref(self, max_records: int, timeout_s: float) -> Any:
        return self._broker.fetch.remote(
            self.group,
            self.member_id,
            max_records,
            timeout_s,
            list(self._paused),
            self.topics,
        )

    def _set_assignment(self, assignment: list[TopicPartition]) -> None:
        self._assignment = assignment
        # Like Kafka, pausing applies to assigned partitions; revoked ones drop their pause.
        self._paused.intersection_update(assignment)

    def _refused(self, refused: set[TopicPartition]) -> None:
        if refused:
            log.warning(
                "embedded bus: %s: commit refused for partitions not owned: %s",
                self.member_id,
                sorted(refused),
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")


class EmbeddedBus:
    """A picklable handle on the embedded broker actor (implements :class:`fxray.bus.EventBus`).

    Create with :meth:`start` (get-or-create the named actor) or :meth:`connect`; pass the handle
    to other tasks and actors freely.
    """

    def __init__(self, actor: Any, name: str | None = None) -> None:
        self.actor = actor
        self.name = name

    def __repr__(self) -> str:
        return f"EmbeddedBus(name={self.name!r})"

    @classmethod
    def start(
        cls,
        name: str = DEFAULT_BUS_NAME,
        namespace: str | None = None,
        default_partitions: int = 4,
        session_timeout_s: float = 10.0,
    ) -> EmbeddedBus:
        """Get the named broker actor, creating it if it does not exist.

        ``default_partitions`` and ``session_timeout_s`` only apply when it is created. The actor
        has the default lifetime: it lives as long as the job (driver) that created it.
        """
        actor = _BrokerActor.options(
            name=name,
            namespace=namespace,
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=1000,
        ).remote(default_partitions, session_timeout_s)
        ray.get(actor.ping.remote())
        return cls(actor, name)

    @classmethod
    def connect(cls, name: str = DEFAULT_BUS_NAME, namespace: str | None = None) -> EmbeddedBus:
        """Get an existing broker actor; raises ``ValueError`` if there is none."""
        return cls(ray.get_actor(name, namespace=namespace), name)

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create the topic, or grow it to ``partitions``; never shrinks."""
        ray.get(self.actor.ensure_topic.remote(topic, partitions))

    def produce(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Append a batch with one actor call; returns once appended.

        Batches from one caller land in call order because each call waits for the previous.
        """
        if records:
            ray.get(self.actor.produce_rows.remote(topic, to_out_rows(records)))

    async def produce_async(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Like :meth:`produce`, awaiting the actor call. Await one before the next to keep
        order: concurrent calls may be appended in any order."""
        if records:
            await self.actor.produce_rows.remote(topic, to_out_rows(records))

    def produce_offsets(self, topic: str, records: list[OutgoingRecord]) -> list[tuple[int, int]]:
        """Like :meth:`produce`, returning ``(partition, offset)`` per record."""
        if not records:
            return []
        return ray.get(self.actor.produce_rows.remote(topic, to_out_rows(records)))

    def consumer(
        self, group: str, topics: list[str], member_id: str | None = None
    ) -> EmbeddedConsumer:
        """A new member of ``group`` subscribed to ``topics`` (``member_id``: a stable name)."""
        return EmbeddedConsumer(self.actor, group, topics, member_id)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written, per partition."""
        return ray.get(self.actor.end_offsets.remote(topic))

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets, per partition (0 where nothing is committed)."""
        return ray.get(self.actor.committed.remote(group, topic))

    def lag(self, group: str, topic: str) -> int:
        """Records of ``topic`` not yet committed by ``group``."""
        return ray.get(self.actor.lag.remote(group, topic))

    def topics(self) -> dict[str, int]:
        """Topic names and partition counts."""
        return ray.get(self.actor.topics.remote())

    def members(self, group: str) -> list[str]:
        """The group's current member ids."""
        return ray.get(self.actor.members.remote(group))

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Read records without a consumer group (tools and tests)."""
        return to_records(ray.get(self.actor.read.remote(topic, partition, offset, max_records)))

    def shutdown(self) -> None:
        """Kill the broker actor; everything on the bus is lost."""
        ray.kill(self.actor, no_restart=True)
