"""RunQueue (grouped priority queue with cancel/re-prioritise) and DelayQueue."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxray.router.queue import DelayQueue, RunQueue


def drain(queue: RunQueue[str], group: str = "") -> list[str]:
    return queue.pop_group(group, 1_000_000)


def filled(*entries: tuple[str, int], group: str = "") -> RunQueue[str]:
    queue: RunQueue[str] = RunQueue()
    for item_id, priority in entries:
        queue.push(item_id, priority, item_id, group)
    return queue


# --------------------------------------------------------------------------- RunQueue


def test_priority_order() -> None:
    queue = filled(("p10", 10), ("p1", 1), ("p5", 5))
    assert drain(queue) == ["p1", "p5", "p10"]
    assert len(queue) == 0


def test_fifo_within_a_priority() -> None:
    queue = filled(("a", 5), ("x", 1), ("b", 5), ("c", 5), ("y", 1))
    assert drain(queue) == ["x", "y", "a", "b", "c"]


def test_pop_group_respects_limit() -> None:
    queue = filled(("a", 3), ("b", 2), ("c", 1))
    assert queue.pop_group("", 2) == ["c", "b"]
    assert len(queue) == 1
    assert queue.pop_group("", 0) == []
    assert queue.pop_group("", 5) == ["a"]
    assert queue.pop_group("", 5) == []


def test_len_contains_priority_of() -> None:
    queue = filled(("a", 3), ("b", 7))
    assert len(queue) == 2
    assert "a" in queue
    assert "zzz" not in queue
    assert queue.priority_of("b") == 7
    assert queue.priority_of("zzz") is None


def test_pop_group_only_takes_that_group() -> None:
    queue: RunQueue[str] = RunQueue()
    queue.push("a1", 5, "a1", "svc@a")
    queue.push("b1", 1, "b1", "svc@b")
    queue.push("a2", 1, "a2", "svc@a")
    assert queue.pop_group("svc@a", 10) == ["a2", "a1"]
    assert queue.pop_group("svc@a", 10) == []
    assert queue.pop_group("unknown", 10) == []
    assert list(queue) == ["b1"]


def test_groups_by_priority_orders_by_best_head() -> None:
    queue: RunQueue[str] = RunQueue()
    queue.push("g1-a", 5, "g1-a", "g1")
    queue.push("g3-a", 5, "g3-a", "g3")  # same priority as g1's head, arrived later
    queue.push("g2-a", 9, "g2-a", "g2")
    queue.push("g2-b", 1, "g2-b", "g2")  # g2's head is the best item of all
    queue.push("g1-b", 7, "g1-b", "g1")
    assert queue.groups_by_priority() == ["g2", "g1", "g3"]
    queue.pop_group("g2", 1)  # g2's head is now priority 9
    assert queue.groups_by_priority() == ["g1", "g3", "g2"]


def test_groups_by_priority_drops_empty_groups() -> None:
    queue: RunQueue[str] = RunQueue()
    queue.push("a", 1, "a", "g1")
    queue.push("b", 2, "b", "g2")
    queue.remove("a")
    assert queue.groups_by_priority() == ["g2"]
    queue.pop_group("g2", 1)
    assert queue.groups_by_priority() == []


def test_remove_cancels() -> None:
    queue = filled(("a", 1), ("b", 2), ("c", 3))
    assert queue.remove("b") == "b"
    assert queue.remove("b") is None
    assert queue.remove("never") is None
    assert "b" not in queue
    assert len(queue) == 2
    assert drain(queue) == ["a", "c"]


def test_remove_head_changes_group_order() -> None:
    queue: RunQueue[str] = RunQueue()
    queue.push("a", 1, "a", "g1")
    queue.push("a2", 9, "a2", "g1")
    queue.push("b", 5, "b", "g2")
    queue.remove("a")
    assert queue.groups_by_priority() == ["g2", "g1"]


def test_reprioritise_moves_an_item() -> None:
    queue = filled(("a", 5), ("b", 5), ("c", 5))
    assert queue.reprioritise("c", 1)
    assert queue.priority_of("c") == 1
    assert drain(queue) == ["c", "a", "b"]


def test_reprioritise_down() -> None:
    queue = filled(("a", 1), ("b", 5), ("c", 5))
    assert queue.reprioritise("a", 10)
    assert drain(queue) == ["b", "c", "a"]


def test_reprioritise_keeps_arrival_order_among_equals() -> None:
    queue = filled(("a", 5), ("b", 1))
    queue.reprioritise("a", 1)
    assert drain(queue) == ["a", "b"]


def test_reprioritise_unknown_or_removed() -> None:
    queue = filled(("a", 5))
    assert not queue.reprioritise("nope", 1)
    queue.remove("a")
    assert not queue.reprioritise("a", 1)
    assert drain(queue) == []


def test_stale_entry_never_returned() -> None:
    queue = filled(("a", 5), ("b", 6))
    queue.reprioritise("a", 1)
    queue.reprioritise("a", 9)
    queue.reprioritise("a", 9)  # same priority again: two live-looking heap entries
    queue.reprioritise("a", 3)
    assert queue.pop_group("", 1) == ["a"]
    assert drain(queue) == ["b"]
    assert len(queue) == 0
    assert queue.groups_by_priority() == []


def test_reprioritise_then_remove() -> None:
    queue = filled(("a", 5), ("b", 6))
    queue.reprioritise("a", 1)
    assert queue.remove("a") == "a"
    assert drain(queue) == ["b"]


def test_same_id_pushed_again_after_removal() -> None:
    queue = filled(("a", 1), ("b", 5))
    queue.remove("a")
    queue.push("a", 9, "a-again")
    assert drain(queue) == ["b", "a-again"]


def test_iter_is_priority_order_snapshot() -> None:
    queue: RunQueue[str] = RunQueue()
    queue.push("a", 5, "a", "g1")
    queue.push("b", 1, "b", "g2")
    queue.push("c", 5, "c", "g2")
    assert list(queue) == ["b", "a", "c"]
    assert len(queue) == 3


def test_items_are_arbitrary_objects() -> None:
    queue: RunQueue[dict[str, Any]] = RunQueue()
    queue.push("a", 5, {"run": "a"})
    queue.push("b", 5, {"run": "b"})
    assert queue.pop_group("", 2) == [{"run": "a"}, {"run": "b"}]


# --------------------------------------------------------------------------- model check


class Model:
    """A sorted-list reference for RunQueue."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[int, int, str]] = {}  # id -> (priority, seq, group)
        self.seq = 0

    def push(self, item_id: str, priority: int, group: str) -> None:
        self.items[item_id] = (priority, self.seq, group)
        self.seq += 1

    def remove(self, item_id: str) -> str | None:
        return item_id if self.items.pop(item_id, None) is not None else None

    def reprioritise(self, item_id: str, priority: int) -> bool:
        if item_id not in self.items:
            return False
        _, seq, group = self.items[item_id]
        self.items[item_id] = (priority, seq, group)
        return True

    def ordered(self, group: str | None = None) -> list[str]:
        keyed = sorted(
            (p, s, i) for i, (p, s, g) in self.items.items() if group is None or g == group
        )
        return [i for _, _, i in keyed]

    def pop_group(self, group: str, limit: int) -> list[str]:
        taken = self.ordered(group)[:limit]
        for item_id in taken:
            del self.items[item_id]
        return taken

    def groups_by_priority(self) -> list[str]:
        heads: dict[str, tuple[int, int]] = {}
        for p, s, g in self.items.values():
            heads[g] = min(heads.get(g, (p, s)), (p, s))
        return sorted(heads, key=lambda g: heads[g])


ids = st.sampled_from([f"r{i}" for i in range(8)])
groups = st.sampled_from(["", "g1", "g2"])
priorities = st.integers(min_value=1, max_value=10)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), ids, priorities, groups),
        st.tuples(st.just("remove"), ids),
        st.tuples(st.just("reprioritise"), ids, priorities),
        st.tuples(st.just("pop"), groups, st.integers(min_value=0, max_value=4)),
        st.tuples(st.just("groups")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, database=None)
@given(ops=operations)
def test_run_queue_matches_model(ops: list[tuple[Any, ...]]) -> None:
    queue: RunQueue[str] = RunQueue()
    model = Model()
    for op, *args in ops:
        if op == "push":
            item_id, priority, group = args
            queue.push(item_id, priority, item_id, group)
            model.push(item_id, priority, group)
        elif op == "remove":
            assert queue.remove(args[0]) == model.remove(args[0])
        elif op == "reprioritise":
            assert queue.reprioritise(args[0], args[1]) == model.reprioritise(args[0], args[1])
        elif op == "pop":
            assert queue.pop_group(args[0], args[1]) == model.pop_group(args[0], args[1])
        else:
            assert queue.groups_by_priority() == model.groups_by_priority()
        assert len(queue) == len(model.items)
        assert list(queue) == model.ordered()
    for group in model.groups_by_priority():
        assert drain(queue, group) == model.pop_group(group, 1_000_000)
    assert len(queue) == 0
    assert queue.groups_by_priority() == []


# --------------------------------------------------------------------------- DelayQueue


def test_delay_queue_due_order() -> None:
    delayed: DelayQueue[str] = DelayQueue()
    delayed.push(30.0, "c")
    delayed.push(10.0, "a")
    delayed.push(20.0, "b")
    assert len(delayed) == 3
    assert delayed.next_due() == 10.0
    assert delayed.pop_due(5.0) == []
    assert delayed.pop_due(20.0) == ["a", "b"]  # due time is inclusive
    assert delayed.next_due() == 30.0
    assert delayed.pop_due(100.0) == ["c"]
    assert delayed.next_due() is None
    assert len(delayed) == 0


def test_delay_queue_equal_due_is_fifo_and_never_compares_items() -> None:
    delayed: DelayQueue[dict[str, int]] = DelayQueue()
    for i in range(5):
        delayed.push(1.0, {"n": i})
    assert delayed.pop_due(1.0) == [{"n": i} for i in range(5)]


def test_delay_queue_remove() -> None:
    delayed: DelayQueue[str] = DelayQueue()
    for due, item in [(5.0, "keep-1"), (1.0, "drop-1"), (3.0, "keep-2"), (2.0, "drop-2")]:
        delayed.push(due, item)
    removed = delayed.remove(lambda item: item.startswith("drop"))
    assert sorted(removed) == ["drop-1", "drop-2"]
    assert len(delayed) == 2
    assert delayed.next_due() == 3.0
    assert delayed.remove(lambda item: False) == []
    assert delayed.pop_due(10.0) == ["keep-2", "keep-1"]


def test_delay_queue_empty() -> None:
    delayed: DelayQueue[str] = DelayQueue()
    assert delayed.pop_due(1e12) == []
    assert delayed.next_due() is None
    assert delayed.remove(lambda item: True) == []


@settings(database=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=40))
def test_delay_queue_pops_in_due_order(dues: list[float]) -> None:
    delayed: DelayQueue[int] = DelayQueue()
    for index, due in enumerate(dues):
        delayed.push(due, index)
    got: list[int] = []
    for now in (25.0, 50.0, 75.0, 100.0):
        batch = delayed.pop_due(now)
        assert all(dues[index] <= now for index in batch)
        assert all(dues[index] > now for index in range(len(dues)) if index not in got + batch)
        got.extend(batch)
    assert got == sorted(range(len(dues)), key=lambda index: (dues[index], index))


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pop_group_limit_never_exceeded(limit: int) -> None:
    queue = filled(*((f"r{i}", i % 3 + 1) for i in range(7)))
    taken = queue.pop_group("", limit)
    assert len(taken) == limit
