"""The priority queue in front of the executors.

Priority 1 is the highest, 10 the lowest; equal priorities keep arrival order. Runs are kept in
one heap per *group* (a service version, whose executors they need), so the dispatcher takes
the best runs of each version that has a free executor without scanning the others' backlog,
and visits versions in the order of their best waiting run. Queued runs can be cancelled or
re-prioritised in O(log n) through lazy deletion of stale heap entries. Runs waiting for a
retry back-off sit in a :class:`DelayQueue` until due.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_Entry = tuple[int, int, str]  # (priority, sequence, item id)


class RunQueue(Generic[T]):
    """Priority queues of items keyed by id, one per group, with cancel and re-prioritise."""

    def __init__(self) -> None:
        self._heaps: dict[str, list[_Entry]] = {}
        self._items: dict[str, tuple[int, int, str, T]] = {}  # id -> (priority, seq, group, item)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def push(self, item_id: str, priority: int, item: T, group: str = "") -> None:
        seq = next(self._seq)
        self._items[item_id] = (priority, seq, group, item)
        heapq.heappush(self._heaps.setdefault(group, []), (priority, seq, item_id))

    def remove(self, item_id: str) -> T | None:
        """Take an item out of the queue (a cancelled run); None if it is not queued."""
        entry = self._items.pop(item_id, None)
        return None if entry is None else entry[3]

    def reprioritise(self, item_id: str, priority: int) -> bool:
        entry = self._items.get(item_id)
        if entry is None:
            return False
        _, seq, group, item = entry
        self._items[item_id] = (priority, seq, group, item)
        heapq.heappush(self._heaps[group], (priority, seq, item_id))
        return True

    def groups_by_priority(self) -> list[str]:
        """Groups with waiting items, the one holding the best item first."""
        heads: list[tuple[int, int, str]] = []
        for group in list(self._heaps):
            head = self._head(group)
            if head is None:
                del self._heaps[group]
            else:
                heads.append((head[0], head[1], group))
        return [group for _, _, group in sorted(heads)]

    def pop_group(self, group: str, limit: int) -> list[T]:
        """Up to ``limit`` items of ``group`` in priority order."""
        taken: list[T] = []
        while len(taken) < limit and self._head(group) is not None:
            _, _, item_id = heapq.heappop(self._heaps[group])
            taken.append(self._items.pop(item_id)[3])
        return taken

    def _head(self, group: str) -> _Entry | None:
        heap = self._heaps.get(group)
        while heap:
            priority, seq, item_id = heap[0]
            entry = self._items.get(item_id)
            if entry is not None and entry[0] == priority and entry[1] == seq:
                return heap[0]
            heapq.heappop(heap)  # stale: removed or re-prioritised
        return None

    def priority_of(self, item_id: str) -> int | None:
        entry = self._items.get(item_id)
        return None if entry is None else entry[0]

    def __iter__(self) -> Iterator[T]:
        """Items in priority order (a snapshot)."""
        for _, _, _, item in sorted(self._items.values(), key=lambda e: (e[0], e[1])):
            yield item


class DelayQueue(Generic[T]):
    """Items that become due at a time (retry back-off)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def pop_due(self, now: float) -> list[T]:
        due: list[T] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def remove(self, predicate: Callable[[T], bool]) -> list[T]:
        removed = [entry[2] for entry in self._heap if predicate(entry[2])]
        if removed:
            self._heap = [entry for entry in self._heap if not predicate(entry[2])]
            heapq.heapify(self._heap)
        return removed

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None
