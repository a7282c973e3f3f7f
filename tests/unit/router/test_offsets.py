"""OffsetTracker: what may be committed when runs finish out of order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fxray.bus import TopicPartition
from fxray.router.offsets import OffsetTracker

TP: TopicPartition = ("fxray.events", 0)
TP1: TopicPartition = ("fxray.events", 1)
OTHER: TopicPartition = ("other", 0)


def commit(tracker: OffsetTracker) -> dict[TopicPartition, int]:
    """What the router would do: take the committable offsets and mark them committed."""
    ready = tracker.committable()
    tracker.mark_committed(ready)
    return ready


def test_nothing_tracked_nothing_committable() -> None:
    tracker = OffsetTracker()
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_out_of_order_completion_commits_up_to_lowest_in_flight() -> None:
    tracker = OffsetTracker()
    for offset in range(3):
        tracker.track(TP, offset, 1)
    assert tracker.in_flight() == 3
    assert tracker.committable() == {TP: 0}
    tracker.done(TP, 2)
    assert tracker.committable() == {TP: 0}
    tracker.done(TP, 1)
    assert tracker.committable() == {TP: 0}
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 3}
    assert tracker.in_flight() == 0


def test_commit_advances_step_by_step() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 14):
        tracker.track(TP, offset, 1)
    tracker.done(TP, 10)
    assert tracker.committable() == {TP: 11}
    tracker.done(TP, 12)
    assert tracker.committable() == {TP: 11}
    tracker.done(TP, 11)
    assert tracker.committable() == {TP: 13}
    tracker.done(TP, 13)
    assert tracker.committable() == {TP: 14}


def test_zero_run_records_are_immediately_committable() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 0)
    tracker.track(TP, 1, 0)
    assert tracker.in_flight() == 0
    assert tracker.committable() == {TP: 2}


def test_zero_run_record_behind_an_open_one_waits() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 1)
    tracker.track(TP, 1, 0)
    tracker.track(TP, 2, 0)
    assert tracker.committable() == {TP: 0}
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 3}


def test_multiple_runs_per_offset() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 5, 3)
    tracker.track(TP, 6, 1)
    tracker.done(TP, 6)
    tracker.done(TP, 5)
    tracker.done(TP, 5)
    assert tracker.committable() == {TP: 5}
    tracker.done(TP, 5)
    assert tracker.committable() == {TP: 7}


def test_done_with_several_runs_at_once() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 4)
    tracker.done(TP, 0, runs=3)
    assert tracker.committable() == {TP: 0}
    tracker.done(TP, 0, runs=1)
    assert tracker.committable() == {TP: 1}


def test_tracking_the_same_offset_twice_adds_runs() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 1)
    tracker.track(TP, 0, 1)
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 0}
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 1}


def test_done_for_unknown_offset_or_partition_is_ignored() -> None:
    tracker = OffsetTracker()
    tracker.done(TP, 0)
    tracker.track(TP, 0, 1)
    tracker.done(TP, 99)
    tracker.done(OTHER, 0)
    assert tracker.committable() == {TP: 0}
    assert tracker.in_flight() == 1


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 1)
    tracker.track(TP1, 0, 1)
    tracker.track(TP1, 1, 1)
    tracker.track(OTHER, 7, 1)
    tracker.done(TP1, 0)
    tracker.done(TP1, 1)
    tracker.done(OTHER, 7)
    assert tracker.committable() == {TP: 0, TP1: 2, OTHER: 8}
    assert tracker.in_flight() == 1


def test_committable_only_returns_advanced_offsets() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 1)
    tracker.track(TP1, 0, 0)
    assert commit(tracker) == {TP: 0, TP1: 1}
    assert tracker.committable() == {}
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 1}
    assert tracker.committable() == {TP: 1}  # still there until marked committed
    assert commit(tracker) == {TP: 1}
    assert tracker.committable() == {}
    tracker.track(TP1, 1, 0)
    assert commit(tracker) == {TP1: 2}
    assert tracker.committable() == {}


def test_mark_committed_for_an_unseen_partition() -> None:
    tracker = OffsetTracker()
    tracker.mark_committed({TP: 10})
    tracker.track(TP, 10, 0)
    assert tracker.committable() == {TP: 11}


def test_forget() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0, 1)
    tracker.track(TP1, 0, 1)
    commit(tracker)
    tracker.forget([TP, ("never", 3)])
    assert tracker.in_flight() == 1
    tracker.done(TP, 0)  # a late completion of a forgotten partition is harmless
    assert tracker.committable() == {}
    tracker.track(TP, 50, 0)  # owned again later: starts from scratch
    assert tracker.committable() == {TP: 51}


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Run counts per offset, and an interleaving of 'track next offset' / 'finish a run'."""
    runs = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=25))
    # -1 tracks the next offset; any other value picks one of the open runs to finish
    finishes = draw(
        st.lists(st.integers(min_value=0, max_value=1000), min_size=sum(runs), max_size=sum(runs))
    )
    steps = draw(st.permutations([-1] * len(runs) + finishes))
    return runs, steps


@settings(max_examples=300, deadline=None, database=None)
@given(schedules())
def test_committed_offset_never_passes_an_unfinished_one(
    schedule: tuple[list[int], list[int]],
) -> None:
    runs, steps = schedule
    tracker = OffsetTracker()
    open_runs: list[int] = []  # one entry per unfinished run: its offset
    next_offset = 0
    committed = -1

    def track_next() -> None:
        nonlocal next_offset
        tracker.track(TP, next_offset, runs[next_offset])
        open_runs.extend([next_offset] * runs[next_offset])
        next_offset += 1

    def check() -> None:
        nonlocal committed
        ready = commit(tracker)
        if TP in ready:
            assert ready[TP] > committed  # only advanced offsets are handed out
            committed = ready[TP]
        # never past an unfinished offset, nor past what has been consumed
        assert committed <= min(open_runs, default=next_offset)

    leftover: list[int] = []
    for step in steps:
        if step == -1:
            track_next()
        elif open_runs:
            tracker.done(TP, open_runs.pop(step % len(open_runs)))
        else:
            leftover.append(step)  # its run's offset is not tracked yet
        check()
    for step in leftover:
        tracker.done(TP, open_runs.pop(step % len(open_runs)))
        check()
    assert not open_runs
    assert tracker.in_flight() == 0
    assert committed == len(runs)  # finally one past the last offset
    assert tracker.committable() == {}


def test_recommit_offers_unchanged_offsets_again() -> None:
    tracker = OffsetTracker()
    tracker.track(("t", 0), 4, 0)
    assert tracker.committable() == {("t", 0): 5}
    tracker.mark_committed({("t", 0): 5})
    assert tracker.committable() == {}
    tracker.recommit()
    assert tracker.committable() == {("t", 0): 5}
