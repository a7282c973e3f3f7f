"""Intake: the router's consumer, its backpressure, and its offsets.

The consume loop polls the events topic in batches and hands each batch to the router. When
``router_max_in_flight`` runs are open it waits for room; if none comes within
``router_pause_after_s`` it pauses its partitions (and keeps polling, so it stays in its
consumer group) until the backlog drains. The commit loop commits, per partition, up to the
lowest offset whose runs are not all finished and recorded (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fxray.bus import EventBus, Record, TopicPartition
from fxray.router.offsets import OffsetTracker
from fxray.settings import Settings

COMMIT_EVERY_S = 0.2
RECOMMIT_EVERY_TICKS = 25  # every 5 s, commit again what may have been dropped
POLL_WAIT_S = 0.1


class Intake:
    """Reads records for the router, holds back when it is full, commits what is done."""

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        router_id: str,
        in_flight: Callable[[], int],
        route: Callable[[list[Record]], Awaitable[None]],
        counters: Counter[str],
        note_error: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.router_id = router_id
        self.in_flight = in_flight
        self.route = route
        self.counters = counters
        self.note_error = note_error
        self.tracker = OffsetTracker()
        self.consumer: Any = None
        self.assigned: set[TopicPartition] = set()
        self.paused = False
        self.room_freed = asyncio.Event()  # set when runs end, for a router waiting for room
        self._next_poll: asyncio.Future[list[Record]] | None = None
        # Loops end when this turns False, not only when cancelled: on Python 3.11,
        # asyncio.wait_for can swallow a cancellation that comes as its wait ends.
        self.running = True

    def open(self) -> None:
        """Create the topics if missing and join the routers' consumer group (blocking)."""
        self.bus.ensure_topic(self.settings.events_topic, self.settings.bus_partitions)
        self.bus.ensure_topic(self.settings.deadletter_topic, 1)
        member = (
            f"{self.settings.instance}.{self.router_id}"
            if self.settings.router_static_membership
            else None
        )
        self.consumer = self.bus.consumer(
            self.settings.router_group, [self.settings.events_topic], member_id=member
        )

    async def close(self) -> None:
        """Commit what is done and leave the group."""
        await self.commit()
        if self.consumer is not None:
            await self.consumer.close_async()

    def track(self, record: Record, runs: int) -> None:
        """``record`` caused ``runs`` runs: its offset is done once they all are."""
        self.tracker.track((record.topic, record.partition), record.offset, runs)

    def runs_ended(self, positions: Iterable[tuple[TopicPartition, int]]) -> None:
        """Runs ended for good, one per (partition, offset) of the record that caused it."""
        for tp, offset in positions:
            self.tracker.done(tp, offset)
        self.room_freed.set()

    # -- consume --------------------------------------------------------------------------------

    async def consume_loop(self) -> None:
        while self.running:
            if self._next_poll is None:
                if self._room() <= 0 and not self.paused:
                    await self._wait_for_room(self.settings.router_pause_after_s)
                self._apply_backpressure()
                self._next_poll = self._poll(max(1, self._room()))
            records = await self._next_poll
            self._next_poll = None
            await self._note_assignment()
            if not records:
                continue
            # Fetch the next batch while this one is routed (the poll waits in librdkafka, off
            # the GIL): a record that arrives meanwhile is not held up by the routing. A fetch
            # outlives a restart of this loop, so no polled record is dropped; at stop() its
            # records are left untracked, so uncommitted, and come again to the next owner.
            room = self._room() - len(records)
            if room > 0:
                self._next_poll = self._poll(room)
            await self.route(records)

    def _room(self) -> int:
        return self.settings.router_max_in_flight - self.in_flight()

    async def _wait_for_room(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for runs to end, without polling.

        A full router that runs short runs has room again within milliseconds. Pausing for that
        would cost more than it saves: a pause drops what the consumer has prefetched, and after
        a resume librdkafka's fetcher wakes up to ~1 s later (its idle wait, which no setting
        shortens). So only a router that stays full this long pauses its partitions; not polling
        meanwhile is safe, as it is far below ``max.poll.interval.ms``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.running and self._room() <= 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.room_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room_freed.wait(), remaining)

    def _poll(self, room: int) -> asyncio.Future[list[Record]]:
        limit = min(self.settings.router_poll_max, room)
        return asyncio.ensure_future(self.consumer.poll_async(limit, POLL_WAIT_S))

    async def _note_assignment(self) -> None:
        """Track rebalances: forget revoked partitions (their runs still finish), and keep
        newly assigned ones paused while the router is full."""
        assigned = set(self.consumer.assignment())
        revoked = self.assigned - assigned
        if revoked:
            self.tracker.forget(sorted(revoked))
            self.counters["partitions_revoked"] += len(revoked)
        added = assigned - self.assigned
        if added and self.paused:
            self.consumer.pause(sorted(added))
        self.assigned = assigned

    def _apply_backpressure(self) -> None:
        full = self._room() <= 0
        if full and not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
            self.counters["backpressure_pauses"] += 1
        elif not full and self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    # -- commit ---------------------------------------------------------------------------------

    async def commit_loop(self) -> None:
        ticks = 0
        while self.running:
            await asyncio.sleep(COMMIT_EVERY_S)
            ticks += 1
            if ticks % RECOMMIT_EVERY_TICKS == 0:
                self.tracker.recommit()
            await self.commit()

    async def commit(self) -> None:
        """Commit what is done; a failed commit is retried on the next tick (the offsets only
        advance), and if it never lands the events are redelivered and recognised as done."""
        offsets = self.tracker.committable()
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit_async(offsets)
        except Exception as exc:
            self.counters["commit_failures"] += 1
            self.note_error(f"commit: {exc}")
            return
        self.tracker.mark_committed(offsets)
