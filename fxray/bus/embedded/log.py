"""The embedded broker's state in plain Python (no Ray): :class:`EmbeddedLog` (topics of
partitioned logs, consumer groups), Kafka's range assignor, and the tuples records travel as
between clients and the broker actor (:data:`Row`, :data:`OutRow`)."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import starmap
from typing import TypeAlias

from fxray.bus import OutgoingRecord, Record, TopicPartition

log = logging.getLogger("fxray.bus.embedded")


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
