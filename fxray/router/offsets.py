"""Which offsets are safe to commit when runs finish out of order.

An event's offset is *done* once every run it caused is durably recorded in a final state
(or handed to a retry that is itself recorded). Per partition, the committable offset is the
lowest offset still in flight, or one past the highest seen when nothing is in flight.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from fxray.bus import TopicPartition


@dataclass(slots=True)
class _Partition:
    in_flight: dict[int, int] = field(default_factory=dict)  # offset -> open runs
    heap: list[int] = field(default_factory=list)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None


class OffsetTracker:
    """Tracks in-flight offsets per partition and yields what may be committed."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}

    def track(self, tp: TopicPartition, offset: int, open_runs: int) -> None:
        """Record a consumed offset and how many runs must finish before it is done."""
        part = self._parts.setdefault(tp, _Partition())
        if part.next_offset is None or offset + 1 > part.next_offset:
            part.next_offset = offset + 1
        if open_runs > 0:
            part.in_flight[offset] = part.in_flight.get(offset, 0) + open_runs
            heapq.heappush(part.heap, offset)

    def done(self, tp: TopicPartition, offset: int, runs: int = 1) -> None:
        part = self._parts.get(tp)
        if part is None or offset not in part.in_flight:
            return
        left = part.in_flight[offset] - runs
        if left > 0:
            part.in_flight[offset] = left
        else:
            del part.in_flight[offset]

    def in_flight(self) -> int:
        return sum(len(p.in_flight) for p in self._parts.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets that advanced since the last call to :meth:`mark_committed`."""
        ready: dict[TopicPartition, int] = {}
        for tp, part in self._parts.items():
            while part.heap and part.heap[0] not in part.in_flight:
                heapq.heappop(part.heap)
            target = part.heap[0] if part.heap else part.next_offset
            if target is not None and (part.committed is None or target > part.committed):
                ready[tp] = target
        return ready

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.setdefault(tp, _Partition())
            part.committed = offset

    def recommit(self) -> None:
        """Offer every partition's offset again at the next :meth:`committable` (a commit the
        broker dropped during a rebalance would otherwise wait for the next record)."""
        for part in self._parts.values():
            part.committed = None

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop partitions this router no longer owns (after a rebalance)."""
        for tp in partitions:
            self._parts.pop(tp, None)
